"""What the training process pays to receive one batch from a DataLoader worker (CPU; no GPU needed).

    python benchmarks/batch_receive.py [--images 600] [--batch 64] [--batches 4]

A worker hands a collated batch to the training process through shared memory; with torch's default
``file_descriptor`` strategy every storage in it travels as its own file descriptor, so the cost grows with the
number of storages, not only with the bytes. The learning-proof batches (``configs/sa2va_learning_proof.py``, batch 64)
hold per-item lists: a segmentation batch has 64 SAM2 images and 64 mask stacks, a caption batch 64 region grids.

Part 1 reads the learning proof's own segmentation and caption batches (its datasets and collate) with one worker,
lets the worker fill its prefetch slots, then times ``next()`` on the ready batches: the time is the transfer alone.
Part 2 times 64 SAM2-sized images + 64 masks as 128 storages against the same tensors in 2 storages
(``sa2va.datasets.collate.in_one_storage``, what the collate does), under both sharing strategies.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "projects"))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))


def receive_ms(dataset, collate, batch: int, batches: int, settle_s: float) -> list[float]:
    """``next()`` times (ms) of ``batches`` batches that one worker has already prepared."""
    loader = DataLoader(dataset, batch_size=batch, num_workers=1, prefetch_factor=batches + 1, collate_fn=collate)
    it = iter(loader)
    next(it)  # the worker is up
    time.sleep(settle_s)  # ... and has filled its prefetch slots
    out = []
    for _ in range(batches):
        start = time.perf_counter()
        next(it)
        out.append((time.perf_counter() - start) * 1000)
    return out


def tensors_of(obj) -> list[torch.Tensor]:
    if torch.is_tensor(obj):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in tensors_of(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in tensors_of(v)]
    return []


class _Indices(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


def _as_list(items):  # a segmentation batch's SAM2 images and masks as per-item tensors
    return dict(g=[torch.zeros(3, 512, 512, dtype=torch.uint8) for _ in items],
                m=[torch.zeros(1, 480, 640, dtype=torch.uint8) for _ in items])


def _one_storage(items):  # the same tensors, each list in one storage (what sa2va_collate_fn does)
    from sa2va.datasets.collate import in_one_storage

    return {k: in_one_storage(v) for k, v in _as_list(items).items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=600, help="synthetic images of the learning-proof assets")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--settle", type=float, default=20.0, help="seconds the worker gets to prepare the batches")
    args = p.parse_args()

    from learning_proof_sweep import variant_config
    from sa2va import BUILDER
    from sa2va.datasets.collate import sa2va_collate_fn

    print(f"{platform.node()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"sharing strategy {torch.multiprocessing.get_sharing_strategy()}")
    cfg = variant_config({"images": str(args.images)})
    BUILDER.build(cfg.prepare)

    def collate(items):
        return sa2va_collate_fn(items, 0)

    for name, dataset_cfg in zip(("segmentation", "caption"), cfg.train_dataloader.dataset.datasets):
        dataset = BUILDER.build(dataset_cfg)
        tensors = tensors_of(collate([dataset[i] for i in range(args.batch)]))
        storages = len({t.untyped_storage().data_ptr() for t in tensors})
        ms = receive_ms(dataset, collate, args.batch, args.batches, args.settle)
        print(f"learning proof, {name} batch of {args.batch}: {len(tensors)} tensors in {storages} storages, "
              f"receive {' / '.join(f'{x:.1f}' for x in ms)} ms")
    for strategy in ("file_descriptor", "file_system"):
        torch.multiprocessing.set_sharing_strategy(strategy)
        for name, collate_fn in (("128 tensors, 128 storages", _as_list), ("128 tensors, 2 storages", _one_storage)):
            ms = receive_ms(_Indices(args.batch * (args.batches + 2)), collate_fn, args.batch, args.batches,
                            args.settle / 2)
            print(f"{strategy}, {name} (same bytes): receive {' / '.join(f'{x:.1f}' for x in ms)} ms")


if __name__ == "__main__":
    main()
