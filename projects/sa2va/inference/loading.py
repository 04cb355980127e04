"""Build a model for inference: from a training config + checkpoint, or from an exported directory.

Training checkpoints hold the trainable weights only (docs/model.md); the frozen ones come from the pretrained
checkpoints the config names. Files (``iter_N.pth``) and DeepSpeed directories are read by
:func:`sa2va.hf.read_trainable_state`; loading is strict (every trainable weight present, no unknown key).

The inference settings the model was trained with (chat template, tiling) are read from the config's training
data, so a predictor built from a config needs no further arguments.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

from ..config_utils import set_model_dtype, type_name
from ..registry import BUILDER

# keys of a dataset config that are inference settings, and the predictor argument each one sets
_DATASET_SETTINGS = {"template": "template", "max_dynamic_patch": "max_dynamic_patch",
                     "min_dynamic_patch": "min_dynamic_patch", "use_thumbnail": "use_thumbnail"}


def default_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _default_dtype(device: torch.device) -> str:
    return "bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"


def iter_dataset_configs(node):
    """Every dict with a ``type`` whose name ends in ``Dataset`` inside a config (depth first)."""
    if isinstance(node, Mapping):
        if "type" in node and type_name(node["type"]).endswith("Dataset"):
            yield node
        for v in node.values():
            yield from iter_dataset_configs(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from iter_dataset_configs(v)


def inference_settings(cfg: Config) -> dict:
    """Template and tiling the config trains with: top-level ``template`` / ``prompt_template`` if present, else
    the values of the first training dataset that sets them."""
    settings = {}
    for key in ("template", "prompt_template"):
        if cfg.get(key) is not None:
            settings["template"] = cfg[key]
            break
    for ds in iter_dataset_configs(cfg.get("train_dataloader", {})):
        for key, arg in _DATASET_SETTINGS.items():
            if key in ds and arg not in settings:
                settings[arg] = ds[key]
    if isinstance(settings.get("template"), Mapping):
        settings["template"] = dict(settings["template"])
    return settings


def load_model_from_config(config: str | os.PathLike | Config, checkpoint: str | os.PathLike | None = None,
                           device=None, dtype: str | None = None, cfg_options: dict | None = None):
    """Build ``cfg.model`` (weights in ``dtype``: default bf16 on a bf16 GPU, else fp32), load ``checkpoint``,
    move to ``device``. ``config`` is a path or a loaded Config (not modified).
    Returns ``(model in eval mode, inference settings dict)``."""
    cfg = copy.deepcopy(config) if isinstance(config, Config) else Config.fromfile(os.fspath(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get("prepare") is not None:  # assets the config makes on first use (the demo's tiny models and data)
        BUILDER.build(cfg.prepare)
    device = torch.device(device) if device is not None else default_device()
    set_model_dtype(cfg.model, dtype or _default_dtype(device))
    model = BUILDER.build(cfg.model)
    if checkpoint is not None:
        from ..hf import load_trainable_checkpoint

        load_trainable_checkpoint(model, checkpoint, config if isinstance(config, (str, os.PathLike)) else None)
    else:
        MMLogger.get_current_instance().warning("no checkpoint given, using the config's weights")
    return model.to(device).eval(), inference_settings(cfg)


def load_exported_model(export_dir: str | os.PathLike, device=None, dtype: str | None = None):
    """Load an exported directory with :func:`sa2va.hf.load_pretrained_sa2va` (default dtype: the exported one on a
    GPU, fp32 on CPU). Returns ``(model in eval mode, inference settings dict)`` with the export's template and
    tiling."""
    from ..hf import load_pretrained_sa2va

    device = torch.device(device) if device is not None else default_device()
    if dtype is None and device.type == "cpu":
        dtype = "float32"
    model = load_pretrained_sa2va(os.fspath(export_dir), dtype=dtype)
    export = model.export_config
    settings = dict(max_dynamic_patch=export.max_tiles, min_dynamic_patch=export.min_tiles,
                    use_thumbnail=export.use_thumbnail)
    if export.template is not None:
        settings["template"] = export.template
    if export.tile_size != model.mllm.tile_size:
        raise ValueError(f"{export_dir}: sa2va_config.json says tile_size {export.tile_size} but the InternVL config "
                         f"gives {model.mllm.tile_size}")
    return model.to(device).eval(), settings
