"""Where a learning-proof iteration goes: waiting for the DataLoader vs the training step, variants side by side.

    python benchmarks/loader_in_training.py [--images 2000] [--iters 120] [--warmup 20] [--workers 14]
        [--variants loader loader-nopin step-only] [--compile-layers]

The learning proof (``configs/sa2va_learning_proof.py``, batch 64) logged ~0.23 s per iteration on the GPU, of which
~0.1 s ``data_time``, while its step alone (``benchmarks/step_ops.py``) is 0.06-0.12 s. This script runs the real
loop pieces (the config's datasets, sampler, collate, DataLoader with its workers, model and AdamW wrapper; both
tasks from the first iteration; no mmengine Runner and no hooks) and times, per iteration, ``next(loader)`` (the
wait) and ``model.train_step`` (synchronised by reading the loss), for these variants, one after the other on one
model:

- ``loader``: the DataLoader as configured (``pin_memory=True``; the config's sampler is endless since 5d9afce);
- ``loader-nopin``: the same with ``pin_memory=False``;
- ``loader-finite`` / ``loader-endless``: the sampler (``LengthGroupedSampler``) with ``endless=False`` / ``True``:
  an endless one runs one DataLoader iteration on from epoch to epoch, so no epoch starts with an empty worker
  pipeline;
- ``step-only``: the step on batches already collated in this process (cycling through 8 of them): the floor.

A first pass of ``--warmup`` + ``--iters`` iterations of the first variant runs untimed before them: the first
variant of a process otherwise pays the GPU's and the allocator's warm-up (measured: 0.24 s/it first, 0.14-0.15
for the same variant later in the same process). Epochs follow each other without mmengine's 2-s pause.
``--simulate-step S`` builds no model and sleeps ``S`` seconds per step instead: the loader alone, e.g. on a CPU
machine, where the rollover waits show as ``max wait``.
``--compile-layers`` adds ``loader`` and ``step-only`` with ``model.mllm.compile_layers=True`` (a second model;
its compilation happens in the warm-up iterations).
"""
from __future__ import annotations

import argparse
import copy
import itertools
import os
import platform
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "projects"))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))


def build(args, compile_layers: bool):
    from mmengine.optim import build_optim_wrapper

    from learning_proof_sweep import variant_config
    from sa2va import BUILDER

    cfg = variant_config({"images": str(args.images), "caption_first": "0"})
    cfg.model.mllm.compile_layers = compile_layers
    if args.device == "cpu":  # a smoke test of the script: float32, no pinning
        from sa2va.engine.runner import adapt_to_cpu

        adapt_to_cpu(cfg)
    BUILDER.build(cfg.prepare)
    if args.simulate_step is not None:
        return cfg, None, None
    model = BUILDER.build(cfg.model).to(args.device)
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    return cfg, model, optim_wrapper


def loader_for(cfg, variant: str, workers: int, batch: int):
    from mmengine.runner import Runner

    loader_cfg = copy.deepcopy(cfg.train_dataloader)  # a variant's changes must not reach the next one
    loader_cfg.num_workers = workers
    loader_cfg.batch_size = loader_cfg.sampler.batch_size = loader_cfg.sampler.sampler.per_device_batch_size = batch
    if variant == "loader-nopin":
        loader_cfg.pin_memory = False
    if variant in ("loader-finite", "loader-endless"):  # a TaskCurriculumSampler around a LengthGroupedSampler
        loader_cfg.sampler.sampler.endless = variant == "loader-endless"
    return Runner.build_dataloader(loader_cfg, seed=0)


def time_variant(model, optim_wrapper, batches, n_warmup: int, n_iters: int, simulate_step=None) -> dict:
    waits, steps, kinds = [], [], []
    it = iter(batches)
    for i in range(n_warmup + n_iters):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        if model is None:
            time.sleep(simulate_step)
        else:
            losses = model.train_step(batch, optim_wrapper)
            float(sum(v.detach() for k, v in losses.items() if "loss" in k))  # waits for the step's kernels
        t2 = time.perf_counter()
        if i >= n_warmup:
            waits.append(t1 - t0)
            steps.append(t2 - t1)
            kinds.append("seg" if any(m is not None for m in batch["data"]["masks"]) else "cap")
    total = [w + s for w, s in zip(waits, steps)]
    seg = [s for s, k in zip(steps, kinds) if k == "seg"]
    cap = [s for s, k in zip(steps, kinds) if k == "cap"]
    return dict(s_per_it=statistics.mean(total), wait=statistics.mean(waits), max_wait=max(waits),
                step=statistics.mean(steps),
                step_seg=statistics.median(seg) if seg else float("nan"),
                step_cap=statistics.median(cap) if cap else float("nan"), seg_share=len(seg) / len(kinds))


def run(args, compile_layers: bool, variants: list[str]) -> None:
    from sa2va.engine.loops import EpochIterator

    cfg, model, optim_wrapper = build(args, compile_layers)
    tag = " + compile_layers" if compile_layers else ""
    for i, variant in enumerate([variants[0]] + variants):  # the first pass warms up, untimed
        loader = loader_for(cfg, "loader" if variant == "step-only" else variant, args.workers, args.batch)
        if variant == "step-only":
            it = iter(loader)
            source = itertools.cycle([next(it) for _ in range(8)])
            del it
        else:
            source = EpochIterator(loader)  # the training loop's iterator: the next epoch without a pause
        r = time_variant(model, optim_wrapper, source, args.warmup, args.iters, args.simulate_step)
        if i == 0:
            continue
        print(f"{variant + tag:32s} {r['s_per_it']:.3f} s/it  wait {r['wait']:.3f} (max {r['max_wait']:.3f})  "
              f"step {r['step']:.3f} "
              f"(median seg {r['step_seg']:.3f}, caption {r['step_cap']:.3f}; {r['seg_share']:.0%} seg batches)",
              flush=True)
        del source, loader


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--iters", type=int, default=120)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--workers", type=int, default=14)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--variants", nargs="+", default=["loader", "loader-nopin", "step-only"],
                   choices=["loader", "loader-nopin", "loader-finite", "loader-endless", "step-only"])
    p.add_argument("--simulate-step", type=float, default=None, metavar="S",
                   help="no model: sleep S seconds per step (times the loader alone)")
    p.add_argument("--compile-layers", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    if args.simulate_step is not None:
        card = f"no model, {args.simulate_step} s simulated step"
    else:
        card = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (smoke test only)"
    print(f"{platform.node()}, {card}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"batch {args.batch}, {args.workers} workers, {args.iters} timed iterations after {args.warmup}", flush=True)
    run(args, False, args.variants)
    if args.compile_layers:
        run(args, True, [v for v in ("loader", "step-only") if v in args.variants])


if __name__ == "__main__":
    main()
