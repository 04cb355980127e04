"""Weak scaling of Sa2VA training over GPUs: the same per-GPU micro-batch on 1, 2, 4 ... GPUs with DeepSpeed ZeRO-2
(the framework's multi-GPU default, ``tools/train.py --deepspeed zero2``). One launch = one world size:

    torchrun --standalone --nproc_per_node 4 benchmarks/scaling.py --variant optimized --batch mix --micro-batch 2 \
        --steps 10 --out scaling.jsonl
    OUT=scaling bash benchmarks/gpu_scaling.sh          # 1, 2 and 4 GPUs in turn + the efficiency table

CPU dry runs (plumbing only: gloo, tiny models at the real 448-px tile / 1024-px SAM2 geometry, so the batches are
the real ones; torch DDP in fp32, or with ``--strategy zero2`` the same DeepSpeed ZeRO-2 step as on the GPU, bf16):

    torchrun --standalone --nproc_per_node 2 benchmarks/scaling.py --device cpu --steps 2 --warmup 1 \
        --out /tmp/scaling.jsonl
    torchrun --standalone --nproc_per_node 2 benchmarks/scaling.py --device cpu --strategy zero2 --steps 2 \
        --warmup 1 --out /tmp/scaling.jsonl
    DEVICE=cpu GPUS="1 2" OUT=/tmp/scaling bash benchmarks/gpu_scaling.sh

Per rank (GPU): the Sa2VA-1B shape with random weights (``train_throughput.write_model_dir`` / ``build_model``,
variants ``optimized`` or ``compiled``) wrapped by ``deepspeed.initialize`` with ``configs/deepspeed/zero2.json``
completed exactly as ``tools/train.py`` completes it (``sa2va.engine.runner.deepspeed_strategy``: bf16, micro-batch,
accumulation 1, clipping ``--clip``) and torch AdamW (lr 1e-5, weight decay 0.05) over the trainable parameters.
A step is what mmengine's DeepSpeed wrapper does: ``engine(data, mode='loss')`` -> ``parse_losses`` ->
``engine.backward`` -> ``engine.step``; as there, no autocast (DeepSpeed has cast the parameters to bf16;
``--autocast on`` adds a bf16 autocast around the forward). Each rank trains on its own batch of the same composition
(``train_throughput.make_batch``, generator seeded with the rank), the same batch every step.

Timing: warm-up steps (+3 for ``compiled``, whose first steps compile), then ``--steps`` steps between
synchronize + barrier pairs, wall clock. ``step_s`` = rank 0's time from the opening barrier to the closing one per
step; ``rank_step_s_max/min`` = each rank's own time to its last synchronize. Rank 0 prints one JSON line and
appends it to ``--out``; weak-scaling efficiency = per_gpu_samples_per_s(N) / per_gpu_samples_per_s(1).
"""
from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import os
import sys
import tempfile
import time
from unittest import mock

import torch
import torch.distributed as dist

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)
import train_throughput as tt  # noqa: E402  (also puts projects/ on sys.path)

LR, WEIGHT_DECAY = 1e-5, 0.05


def write_tiny_model_dirs(root: str) -> dict:
    """Tiny random InternVL/SAM2 checkpoints whose ViT tile is 448 px and SAM2 input 1024 px: the real geometry, so
    ``make_sample``'s 13 tiles, 16x16 region grid and 1024-px images fit."""
    from sa2va.tiny_models import make_tiny_models

    return make_tiny_models(root, internvl=dict(image_size=448), sam2=dict(image_size=1024))


def build_tiny_model(paths: dict, variant: str):
    """The demo config's model (configs/sa2va_demo.py) on ``write_tiny_model_dirs``'s checkpoints, fp32."""
    from mmengine.config import Config

    from sa2va.config_utils import set_model_dtype
    from sa2va.registry import BUILDER

    cfg = Config.fromfile(os.path.join(ROOT, "configs", "sa2va_demo.py")).model
    cfg.mllm.update(model_path=paths["internvl"], compile_layers=variant == "compiled")
    cfg.grounding_encoder.update(cfg_path=paths["sam2_cfg"], ckpt_path=paths["sam2_ckpt"])
    set_model_dtype(cfg, "float32")
    return BUILDER.build(cfg)


def zero2_config(micro_batch: int, clip: float) -> dict:
    """configs/deepspeed/zero2.json with its "auto" values filled as tools/train.py fills them."""
    from mmengine.config import Config

    from sa2va.engine.runner import deepspeed_strategy

    cfg = Config(dict(optim_wrapper=dict(accumulative_counts=1, clip_grad=dict(max_norm=clip)),
                      train_dataloader=dict(batch_size=micro_batch)))
    ds = deepspeed_strategy(cfg, "zero2")["config"]
    ds["steps_per_print"] = 10 ** 10  # as mmengine's DeepSpeedStrategy (no DeepSpeed progress lines)
    return ds


def make_step(model, args, device: torch.device):
    """Wrap ``model`` (``args.strategy``: DeepSpeed ZeRO-2 or torch DDP) and return ``step(data)``: one full
    optimizer step."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.autocast)

    if args.strategy == "zero2":
        import deepspeed

        config = zero2_config(args.micro_batch, args.clip)
        if device.type == "cpu":
            config["bf16"]["enabled"] = True  # (filled in for CUDA only) bf16 parameters as on the GPU
        engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=config)

        def step(data):
            with autocast():
                losses = engine(data, mode="loss")
            loss, _ = engine.module.parse_losses(losses)
            engine.backward(loss)
            engine.step()
        return step

    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)

    def step(data):
        with autocast():
            losses = ddp(data, mode="loss")
        loss, _ = model.parse_losses(losses)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def make_batch(model, args, rank: int, device: torch.device) -> dict:
    """``train_throughput.make_batch`` with a generator seeded by the rank; on CPU its ``.cuda()`` is a no-op."""
    g = torch.Generator().manual_seed(rank)
    on_cpu = mock.patch.object(torch.Tensor, "cuda", lambda t, *a, **k: t) if device.type == "cpu" \
        else contextlib.nullcontext()
    with on_cpu:
        return tt.make_batch(model, args.batch, args.micro_batch, g)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--shape", choices=sorted(tt.LLM_SHAPES) + ["tiny"], default=None,
                   help="model shape (default: 1b on cuda, tiny on cpu)")
    p.add_argument("--strategy", choices=["zero2", "ddp"], default=None,
                   help="default: zero2 (DeepSpeed) on cuda, ddp (torch DDP, fp32) on cpu")
    p.add_argument("--variant", choices=["optimized", "compiled"], default="optimized")
    p.add_argument("--batch", choices=["refcoco", "mix", "caption"], default="mix")
    p.add_argument("--micro-batch", type=int, default=2, help="samples per GPU per step")
    p.add_argument("--ckpt", action="store_true", help="gradient checkpointing on")
    p.add_argument("--clip", type=float, default=1.0, help="gradient clipping max norm (the recipes' max_norm)")
    p.add_argument("--autocast", choices=["auto", "on", "off"], default="auto",
                   help="bf16 autocast around the forward; auto: as tools/train.py does, i.e. off under DeepSpeed "
                   "(bf16 parameters), on for DDP on cuda (AMP), off on cpu (fp32)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", default="scaling.jsonl")
    p.add_argument("--time-limit", type=float, default=0,
                   help="seconds: then every rank dumps its Python stacks and exits (a hang cannot hold the GPUs)")
    args = p.parse_args()
    if args.time_limit > 0:
        faulthandler.dump_traceback_later(args.time_limit, exit=True)
    shape = args.shape or ("1b" if args.device == "cuda" else "tiny")
    args.strategy = args.strategy or ("zero2" if args.device == "cuda" else "ddp")
    args.autocast = {"on": True, "off": False}.get(args.autocast, args.device == "cuda" and args.strategy == "ddp")

    rank, world, local_rank = (int(os.environ.get(k, d)) for k, d in
                               (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    if args.device == "cuda":
        assert torch.cuda.is_available(), "no CUDA (use --device cpu for the dry run)"
        assert shape != "tiny", "the tiny shape is for the CPU dry run"
        torch.cuda.set_device(local_rank)
        torch.backends.cuda.matmul.allow_tf32 = True
        device = torch.device("cuda", local_rank)
    else:
        assert shape == "tiny", f"the {shape} shape needs CUDA"
        device = torch.device("cpu")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    t_build = time.time()
    with tempfile.TemporaryDirectory() as root:  # one per rank: nothing shared, nothing to wait for
        # written before the process group exists: with one initialised, transformers' save_pretrained writes the
        # weights on global rank 0 only
        path = write_tiny_model_dirs(root) if shape == "tiny" else tt.write_model_dir(shape, root)
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        torch.manual_seed(0)  # the same frozen weights on every rank (DDP/DeepSpeed broadcast rank 0's anyway)
        model = build_tiny_model(path, args.variant) if shape == "tiny" else \
            tt.build_model(path, args.variant, args.ckpt)
        model.train()
        step = make_step(model, args, device)
        data = make_batch(model, args, rank, device)
    tokens = int(data["attention_mask"].sum())
    t_build = time.time() - t_build

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warmup = args.warmup + (3 if args.variant == "compiled" else 0)
    t_warm = time.time()
    for _ in range(warmup):
        step(data)
    sync()
    t_warm = time.time() - t_warm

    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(data)
    sync()
    t_rank = (time.perf_counter() - t0) / args.steps
    dist.barrier()
    t_step = (time.perf_counter() - t0) / args.steps

    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else 0.0
    mine = torch.tensor([t_rank, peak, tokens], dtype=torch.float64, device=device)
    every = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)  # every rank's time, peak memory and tokens; max/min/sum taken below
    every = torch.stack(every).cpu()
    if rank == 0:
        dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        global_tokens = float(every[:, 2].sum())
        r = dict(world_size=world, shape=shape, variant=args.variant, batch=args.batch,
                 micro_batch=args.micro_batch, grad_ckpt=args.ckpt, autocast=args.autocast,
                 strategy=args.strategy, backend=dist.get_backend(), steps=args.steps,
                 warmup=warmup, step_s=round(t_step, 4), per_gpu_samples_per_s=round(args.micro_batch / t_step, 3),
                 global_samples_per_s=round(world * args.micro_batch / t_step, 3),
                 global_tokens_per_s=round(global_tokens / t_step, 1),
                 rank_step_s_max=round(float(every[:, 0].max()), 4),
                 rank_step_s_min=round(float(every[:, 0].min()), 4),
                 peak_mem_gib=round(float(every[:, 1].max()), 2) if device.type == "cuda" else None,
                 tokens_per_rank=tokens, device=dev_name, build_s=round(t_build, 1), warmup_s=round(t_warm, 1),
                 torch=torch.__version__)
        if args.strategy == "zero2":
            import deepspeed

            r["deepspeed"] = deepspeed.__version__
        print(json.dumps(r), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(r) + "\n")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
