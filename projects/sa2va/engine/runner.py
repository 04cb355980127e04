"""Turn a config + command-line choices into an mmengine runner.

* no ``--deepspeed``: mmengine ``Runner`` with the config's ``optim_wrapper`` (AMP bf16 on GPU);
* ``--deepspeed zero2|zero3|FILE.json``: ``FlexibleRunner`` + ``DeepSpeedStrategy``; gradient accumulation,
  micro-batch size and clipping come from the config (``optim_wrapper.accumulative_counts``,
  ``train_dataloader.batch_size``, ``optim_wrapper.clip_grad.max_norm``), bf16 when the GPU supports it;
* no CUDA: the same config on CPU in float32 with a plain ``OptimWrapper`` and the gloo backend (one log line).
"""
from __future__ import annotations

import copy
import json
import os
import os.path as osp

import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

from ..config_utils import set_model_dtype, type_name
from .checkpoint import find_resumable_checkpoint, register_checkpoint_safe_globals

DEEPSPEED_CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))),
                                "configs", "deepspeed")
# hooks every run gets unless the config lists them itself
_STANDARD_HOOKS = ("sa2va.engine.hooks.ThroughputHook", "sa2va.engine.hooks.LossCurveHook",
                   "sa2va.engine.hooks.DatasetSummaryHook", "sa2va.engine.resume_state.ResumeStateHook")


def adapt_to_cpu(cfg: Config) -> None:
    """Run a GPU config on CPU: float32 weights, plain OptimWrapper, gloo."""
    ow = cfg.optim_wrapper
    if type_name(ow.get("type", "")) in ("AmpOptimWrapper", "DeepSpeedOptimWrapper"):
        ow.type = "OptimWrapper"
    for key in ("dtype", "loss_scale"):
        ow.pop(key, None)
    set_model_dtype(cfg.model, "float32")
    cfg.setdefault("env_cfg", ConfigDict())
    cfg.env_cfg.setdefault("dist_cfg", ConfigDict())
    cfg.env_cfg.dist_cfg.backend = "gloo"
    print_log("CUDA is not available: training on CPU in float32 with a plain OptimWrapper (gloo backend)",
              logger="current")


def deepspeed_strategy(cfg: Config, spec: str) -> dict:
    """DeepSpeed strategy dict from ``zero2``/``zero3`` or a JSON file, with "auto" values filled from the config."""
    path = spec if osp.isfile(spec) else osp.join(DEEPSPEED_CONFIG_DIR, f"{spec}.json")
    if not osp.isfile(path):
        raise FileNotFoundError(f"--deepspeed {spec}: neither a file nor one of "
                                f"{sorted(p[:-5] for p in os.listdir(DEEPSPEED_CONFIG_DIR))}")
    with open(path) as f:
        ds = json.load(f)
    accum = cfg.optim_wrapper.get("accumulative_counts", 1)
    micro = cfg.train_dataloader.batch_size
    clip = (cfg.optim_wrapper.get("clip_grad") or {}).get("max_norm", 0.0)
    for key, value in (("gradient_accumulation_steps", accum), ("train_micro_batch_size_per_gpu", micro),
                       ("gradient_clipping", clip)):
        if ds.get(key, "auto") == "auto":
            ds[key] = value
        elif ds[key] != value:
            print_log(f"DeepSpeed json sets {key}={ds[key]} but the config implies {value}; using the json",
                      logger="current", level=30)
    ds.pop("train_batch_size", None)
    bf16_ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if ds.get("bf16", {}).get("enabled") == "auto":
        ds["bf16"]["enabled"] = bf16_ok
    if ds.get("fp16", {}).get("enabled") == "auto":
        ds["fp16"]["enabled"] = torch.cuda.is_available() and not bf16_ok
    return dict(type="DeepSpeedStrategy", config=ds, gradient_accumulation_steps=ds["gradient_accumulation_steps"],
                train_micro_batch_size_per_gpu=ds["train_micro_batch_size_per_gpu"],
                gradient_clipping=ds["gradient_clipping"], exclude_frozen_parameters=True)


def _add_standard_hooks(cfg: Config) -> None:
    present = {type_name(h["type"]) for h in cfg.get("custom_hooks", [])}
    cfg.custom_hooks = list(cfg.get("custom_hooks", [])) + [
        dict(type=path) for path in _STANDARD_HOOKS if type_name(path) not in present]


def _drop_unavailable_vis_backends(cfg: Config) -> None:
    """TensorBoard logging is optional: without the package, keep the JSON scalars and say so once."""
    vis = cfg.get("visualizer") or {}
    backends = vis.get("vis_backends") or []
    try:
        import tensorboard  # noqa: F401
        return
    except ImportError:
        pass
    kept = [b for b in backends if "Tensorboard" not in str(b.get("type"))]
    if len(kept) != len(backends):
        vis["vis_backends"] = kept
        print_log("tensorboard is not installed: TensorBoard logging off (scalars.json still written)",
                  logger="current", level=30)


def prepare_config(cfg: Config, work_dir: str | None = None, resume: str | None = None,
                   deepspeed: str | None = None, launcher: str = "none", seed: int | None = None,
                   config_path: str | None = None) -> tuple[Config, bool]:
    """Apply command-line choices to ``cfg``. Returns (cfg, use_flexible_runner)."""
    cfg = copy.deepcopy(cfg)
    if work_dir:
        cfg.work_dir = work_dir
    elif not cfg.get("work_dir"):
        stem = osp.splitext(osp.basename(config_path or "run"))[0]
        cfg.work_dir = osp.join("work_dirs", stem)
    cfg.launcher = launcher
    if seed is not None:
        cfg.randomness = dict(cfg.get("randomness", {}), seed=seed)
    if not torch.cuda.is_available():
        adapt_to_cpu(cfg)
        if launcher != "none":  # DDP on CPU modules takes no device_ids
            cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False,
                                         find_unused_parameters=False)
        if deepspeed:
            print_log(f"--deepspeed {deepspeed} ignored: DeepSpeed needs CUDA here", logger="current", level=30)
            deepspeed = None
    _add_standard_hooks(cfg)
    _drop_unavailable_vis_backends(cfg)

    if resume == "auto":
        path = find_resumable_checkpoint(cfg.work_dir)
        print_log(f"--resume auto: {path or 'no complete checkpoint in ' + cfg.work_dir + ', starting fresh'}",
                  logger="current")
        cfg.resume, cfg.load_from = path is not None, path
    elif resume:
        cfg.resume, cfg.load_from = True, resume

    flexible = bool(deepspeed)
    if deepspeed:
        cfg.strategy = deepspeed_strategy(cfg, deepspeed)
        if cfg.strategy["config"].get("zero_optimization", {}).get("stage") == 3:
            cfg.model.uniform_module_calls = True  # ZeRO-3 needs every module called on every rank
        cfg.optim_wrapper = dict(type="DeepSpeedOptimWrapper", optimizer=cfg.optim_wrapper.optimizer)
        cfg.pop("model_wrapper_cfg", None)
    return cfg, flexible


def build_runner(cfg: Config, flexible: bool = False):
    register_checkpoint_safe_globals()
    if cfg.get("launcher", "none") == "pytorch" and not torch.cuda.is_available():
        # mmengine's pytorch launcher calls torch.cuda.set_device; on CPU join the gloo group ourselves
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="gloo")
    if flexible:
        from mmengine.runner import FlexibleRunner

        return FlexibleRunner.from_cfg(cfg)
    from mmengine.runner import Runner

    return Runner.from_cfg(cfg)
