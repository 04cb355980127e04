"""Host cost of one learning-proof training step: dispatched aten ops, host syncs and step time.

    python benchmarks/step_ops.py [--images 600] [--batch 64] [--steps 5] [--device cuda]

The learning proof's small model (``configs/sa2va_learning_proof.py``) trains at batch 64, where the GPU finishes
each kernel before the host has issued the next: the step time is the number of dispatched operations times their
host cost. This script builds the config's model, optimizer wrapper, datasets and collate, takes one segmentation
and one caption batch, and for each runs ``model.train_step`` (forward, backward, clipping, AdamW):
- ``ops``: aten operations dispatched in one step (views included), counted with a ``TorchDispatchMode``;
- ``syncs``: of those, the dispatched ops that read a result's size or value on the host (``nonzero``,
  ``_local_scalar_dense`` = ``.item()`` / ``.tolist()``, ...). On CUDA tensors each is a device sync; on CPU
  tensors (AdamW's step counters) it is only an op. The ``nonzero`` inside boolean indexing is not dispatched
  separately and is not counted;
- ``ms``: wall time per step after ``--warmup`` steps (synchronised on CUDA).
``--compile-layers`` compiles every LLM decoder layer and ViT layer (``InternVLMLLM(compile_layers=True)``, as the
throughput benchmark's ``compiled`` variant): fewer, fused kernels per layer. The warm-up steps then include the
compilation, and the op count is left out (a compiled graph launches its kernels without dispatching aten ops).
``--keep-padding-mask`` hands the LLM the padding mask (``right_padded=False``), as before the fifteenth session.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "projects"))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

# aten ops whose result size or value the host must read
SYNC_OPS = ("nonzero", "_local_scalar_dense", "masked_select", "unique", "repeat_interleave")


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def build(images: int, batch: int, device: str, per_tensor_foreach: bool = False, compile_layers: bool = False,
          keep_padding_mask: bool = False):
    from mmengine.optim import build_optim_wrapper

    from learning_proof_sweep import variant_config
    from sa2va import BUILDER
    from sa2va.datasets.collate import sa2va_collate_fn
    from sa2va.engine.runner import adapt_to_cpu

    cfg = variant_config({"images": str(images)})
    if device == "cpu":
        adapt_to_cpu(cfg)
    if per_tensor_foreach:  # as before the tenth session: mmengine's per-tensor groups, foreach AdamW
        cfg.optim_wrapper.pop("constructor", None)
        cfg.optim_wrapper.optimizer.update(fused=False, foreach=True)
    cfg.model.mllm.compile_layers = compile_layers
    cfg.model.mllm.right_padded = not keep_padding_mask
    BUILDER.build(cfg.prepare)
    model = BUILDER.build(cfg.model).to(device)
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    batches = {}
    for name, dataset_cfg in zip(("segmentation", "caption"), cfg.train_dataloader.dataset.datasets):
        dataset = BUILDER.build(dataset_cfg)
        batches[name] = sa2va_collate_fn([dataset[i] for i in range(batch)], 0)
    return model, optim_wrapper, batches


def step(model, optim_wrapper, batch) -> float:
    losses = model.train_step(batch, optim_wrapper)
    return float(sum(v.detach() for k, v in losses.items() if "loss" in k))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=600, help="synthetic images of the learning-proof assets")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--per-tensor-foreach", action="store_true",
                   help="one parameter group per tensor and foreach AdamW (the config: merged groups, fused AdamW)")
    p.add_argument("--compile-layers", action="store_true", help="torch.compile the LLM and ViT layers")
    p.add_argument("--keep-padding-mask", action="store_true",
                   help="hand the LLM the padding mask (right_padded=False), as before the fifteenth session")
    p.add_argument("--top", type=int, default=12, help="most frequent ops to list")
    args = p.parse_args()

    torch.manual_seed(0)
    model, optim_wrapper, batches = build(args.images, args.batch, args.device, args.per_tensor_foreach,
                                          args.compile_layers, args.keep_padding_mask)
    card = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    print(f"{platform.node()}, {card}, {os.cpu_count()} cores, torch {torch.__version__}, batch {args.batch}, "
          f"optimizer: {'per-tensor groups, foreach AdamW' if args.per_tensor_foreach else 'as configured'}, "
          f"LLM/ViT layers: {'compiled' if args.compile_layers else 'eager'}, "
          f"padding mask: {'kept' if args.keep_padding_mask else 'dropped (right_padded)'}")
    for name, batch in batches.items():
        for _ in range(args.warmup):
            step(model, optim_wrapper, batch)
        counter = OpCounter()
        if not args.compile_layers:
            with counter:
                step(model, optim_wrapper, batch)
        syncs = sum(n for op, n in counter.ops.items() if op in SYNC_OPS)
        times = []
        for _ in range(args.steps):
            if args.device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step(model, optim_wrapper, batch)  # float() of the loss syncs once per step
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        top = ", ".join(f"{op} {n}" for op, n in counter.ops.most_common(args.top))
        ops, syncs = ("n/a", "n/a") if args.compile_layers else (sum(counter.ops.values()), syncs)
        print(f"{name}: {ops} ops, {syncs} syncs, "
              f"{times[len(times) // 2]:.1f} ms/step (median of {args.steps}, min {times[0]:.1f})\n  top: {top}")


if __name__ == "__main__":
    main()
