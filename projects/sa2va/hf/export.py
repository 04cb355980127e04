"""Export a trained model to one self-contained directory (layout: :mod:`sa2va.hf.layout`).

:func:`export_from_config` is ``tools/convert_to_hf.py``: build the model from the training config (base InternVL
and SAM2 weights from their checkpoints), load the training checkpoint's trainable weights (strict), merge LoRA and
the special-token rows into the language model (peft ``merge_and_unload``), and write the directory with
:func:`export_sa2va`. The model is built in fp32 so that the merge ``W + B A * scale`` is rounded once, to the
export dtype.
"""
from __future__ import annotations

import inspect
import os
import shutil
from pathlib import Path

import torch
from mmengine.logging import MMLogger

from ..models.internvl import _as_dtype
from .common import ConversionReport
from .layout import SAM2_CONFIG_FILE, SAM2_WEIGHTS_FILE, TEXT_FCS_FILE, ExportConfig

DEFAULT_MAX_SHARD_SIZE = "5GB"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def merged_internvl(model):
    """The ``InternVLForConditionalGeneration`` of ``model.mllm`` with LoRA and trainable-token rows merged into the
    base weights (in place: the training model's mllm is unwrapped afterwards)."""
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    wrapper = model.mllm.model
    if not isinstance(wrapper, PeftModel):
        return wrapper
    n_adapted = sum(isinstance(m, BaseTunerLayer) for m in wrapper.modules())
    merged = wrapper.merge_and_unload()
    MMLogger.get_current_instance().info(f"merged {n_adapted} peft layers (LoRA, special-token rows) into the LLM")
    return merged


def export_sa2va(model, save_dir: str | os.PathLike, sam2_config: str, sam2_hydra_overrides=None,
                 dtype: str | torch.dtype = torch.bfloat16, template=None, max_tiles: int = 12, min_tiles: int = 1,
                 use_thumbnail: bool = True, max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
                 exported_from: dict | None = None) -> Path:
    """Write ``model`` (a :class:`VideoLLaVASAMModel`) to ``save_dir``.

    Args:
        sam2_config / sam2_hydra_overrides: what the model's SAM2 was built from (the YAML is copied into the
            directory; the overrides and the model's SAM2 image size are recorded).
        dtype: dtype of the InternVL weights (SAM2 and ``text_hidden_fcs`` stay fp32, as in training).
        template / max_tiles / min_tiles / use_thumbnail: recorded for the predictor (prompt format, tiling).
    The LoRA merge happens in place: ``model`` is for export only afterwards.
    """
    from safetensors.torch import save_file

    from ..models.sam2_runner import resolve_sam2_config

    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    dtype = _as_dtype(dtype)
    report = ConversionReport(source=f"export -> {save_dir}", verb="wrote")

    internvl = merged_internvl(model)
    internvl.to(dtype)
    internvl.save_pretrained(save_dir, max_shard_size=max_shard_size)
    report.count("internvl", len(internvl.state_dict()))
    model.tokenizer.save_pretrained(save_dir)

    runner = model.grounding_encoder
    shutil.copyfile(resolve_sam2_config(sam2_config), save_dir / SAM2_CONFIG_FILE)
    sam2_state = {k: v.detach().float().contiguous() for k, v in runner.sam2_model.state_dict().items()}
    save_file(sam2_state, str(save_dir / SAM2_WEIGHTS_FILE), metadata={"format": "pt"})
    report.count("sam2", len(sam2_state))
    fcs_state = {k: v.detach().float().contiguous() for k, v in model.text_hidden_fcs.state_dict().items()}
    save_file(fcs_state, str(save_dir / TEXT_FCS_FILE), metadata={"format": "pt"})
    report.count("text_hidden_fcs", len(fcs_state))

    mllm = model.mllm
    ExportConfig(
        special_tokens=list(mllm.special_tokens), template=template, tile_size=mllm.tile_size,
        max_tiles=max_tiles, min_tiles=min_tiles, use_thumbnail=use_thumbnail, tokens_per_tile=mllm.tokens_per_tile,
        sam2_image_size=int(runner.image_size), sam2_hydra_overrides=list(sam2_hydra_overrides or []),
        sam2_multimask_output=bool(runner.multimask_output),
        sam2_source_config=str(sam2_config), llm_dtype=_dtype_name(dtype), exported_from=dict(exported_from or {}),
    ).save(save_dir)
    report.log()
    return save_dir


# -- training checkpoints ---------------------------------------------------------------------------------------
def read_trainable_state(ckpt: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The trainable weights of a training checkpoint.

    * a file: ``{'state_dict': ...}`` (our checkpoints and mmengine's, read with ``weights_only=True``), a DeepSpeed
      ``*model_states.pt`` (``{'module': ...}``) or a bare state dict;
    * a DeepSpeed checkpoint directory (``work_dir/iter_N.pth/``, ZeRO-1/2/3): fp32 weights gathered with
      DeepSpeed's ``zero_to_fp32`` (trainable parameters only).
    """
    ckpt = Path(ckpt)
    if ckpt.is_dir():
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt.parent), tag=ckpt.name,
                                                         exclude_frozen_parameters=True)
    elif ckpt.is_file():
        from ..engine import register_checkpoint_safe_globals

        register_checkpoint_safe_globals()
        loaded = torch.load(ckpt, map_location="cpu", weights_only=True)
        if not isinstance(loaded, dict):
            raise ValueError(f"{ckpt}: expected a dict, got {type(loaded).__name__}")
        state = loaded.get("state_dict", loaded.get("module", loaded))
    else:
        raise FileNotFoundError(f"checkpoint {ckpt} not found")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{ckpt}: not a state dict (non-tensor entries {bad[:5]})")
    return {k.removeprefix("module."): v for k, v in state.items()}



def load_trainable_checkpoint(model, ckpt: str | os.PathLike, config=None) -> None:
    """Load a training checkpoint (see :func:`read_trainable_state`) into ``model`` strictly: every trainable
    weight present, no key unknown. Errors name the checkpoint (and the config it was built from)."""
    state = read_trainable_state(ckpt)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        where = f"{ckpt} (with config {config})" if config is not None else str(ckpt)
        raise RuntimeError(f"{where} does not fit the model: {e}") from None
    MMLogger.get_current_instance().info(f"loaded {len(state)} trainable tensors from {ckpt}")

def _constructor_arg(cfg: dict, cls, name: str):
    """``cfg[name]`` or the default of ``cls``'s constructor argument ``name``."""
    return cfg.get(name, inspect.signature(cls).parameters[name].default)


def _sa2va_model_cfg(model_cfg: dict) -> dict:
    """The ``VideoLLaVASAMModel`` dict of a config's ``model`` (which may wrap it, e.g. ``init_from_sa2va_hf``)."""
    node = model_cfg
    while "mllm" not in node:
        if not isinstance(node.get("model"), dict):
            raise KeyError(f"the config's model has no 'mllm' (nor a nested 'model' that has one): {list(model_cfg)}")
        node = node["model"]
    return node


def export_from_config(config: str | os.PathLike, checkpoint: str | os.PathLike | None, save_path: str | os.PathLike,
                       dtype: str = "bf16", max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
                       template=None, max_tiles: int | None = None) -> Path:
    """``tools/convert_to_hf.py``: config + training checkpoint -> exported directory (see module doc)."""
    from mmengine.config import Config

    from ..models.sam2_runner import SAM2TrainRunner
    from ..registry import BUILDER

    cfg = Config.fromfile(str(config))
    if cfg.get("prepare") is not None:  # assets a config needs (the demo's tiny models)
        BUILDER.build(cfg.prepare)
    model_cfg = _sa2va_model_cfg(cfg.model)
    model_cfg.mllm.torch_dtype = "float32"  # merge in fp32, round once to the export dtype
    model = BUILDER.build(cfg.model)
    if checkpoint is not None:
        load_trainable_checkpoint(model, checkpoint, config)
    else:
        MMLogger.get_current_instance().warning("no checkpoint given: exporting the model as the config builds it")
    sam2_cfg = model_cfg.grounding_encoder
    template = template if template is not None else cfg.get("template")
    if hasattr(template, "to_dict"):  # a ConfigDict template -> plain JSON
        template = template.to_dict()
    return export_sa2va(
        model.eval(), save_path,
        sam2_config=_constructor_arg(sam2_cfg, SAM2TrainRunner, "cfg_path"),
        sam2_hydra_overrides=_constructor_arg(sam2_cfg, SAM2TrainRunner, "hydra_overrides"),
        dtype=dtype, template=template,
        max_tiles=max_tiles or cfg.get("max_tiles", 12), min_tiles=cfg.get("min_tiles", 1),
        use_thumbnail=cfg.get("use_thumbnail", True), max_shard_size=max_shard_size,
        exported_from={"config": str(config), "checkpoint": str(checkpoint) if checkpoint else None},
    )
