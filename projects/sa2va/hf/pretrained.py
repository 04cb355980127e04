"""Load an exported directory (written by ``tools/convert_to_hf.py``) as a ready-to-run model."""
from __future__ import annotations

import os
from pathlib import Path

from .common import ConversionReport, copy_into
from .layout import SAM2_CONFIG_FILE, SAM2_WEIGHTS_FILE, TEXT_FCS_FILE, ExportConfig


def load_pretrained_sa2va(model_dir: str | os.PathLike, dtype=None, attn_implementation: str = "sdpa"):
    """Build a :class:`~sa2va.models.VideoLLaVASAMModel` from an exported directory.

    No training config and no remote code: the InternVL part loads with native transformers, SAM2 from the
    directory's YAML and safetensors. The model is in eval mode with every parameter frozen, without LoRA (merged)
    and without losses.

    Args:
        model_dir: the exported directory.
        dtype: dtype of the InternVL part (``'bfloat16'``, ``'float32'``, ``torch.float16``, ...; default: the
            exported dtype, ``sa2va_config.json``'s ``llm_dtype``). SAM2 and ``text_hidden_fcs`` stay fp32.
    The export settings (template, tile size, max tiles, SAM2 image size) are on ``model.export_config``.
    """
    from safetensors.torch import load_file

    from ..models import InternVLMLLM, SAM2TrainRunner, VideoLLaVASAMModel

    model_dir = Path(model_dir)
    export_cfg = ExportConfig.load(model_dir)
    mllm = InternVLMLLM(model_path=model_dir, special_tokens=export_cfg.special_tokens,
                        torch_dtype=dtype if dtype is not None else export_cfg.llm_dtype,
                        attn_implementation=attn_implementation, llm_lora=None, new_token_training="none")
    if len(mllm.tokenizer) != mllm.hf_model.get_input_embeddings().weight.shape[0]:
        raise ValueError(f"{model_dir}: the tokenizer has {len(mllm.tokenizer)} tokens but the embedding "
                         f"{mllm.hf_model.get_input_embeddings().weight.shape[0]} rows")
    runner = SAM2TrainRunner(cfg_path=str(model_dir / SAM2_CONFIG_FILE), ckpt_path=str(model_dir / SAM2_WEIGHTS_FILE),
                             hydra_overrides=export_cfg.sam2_hydra_overrides, image_size=export_cfg.sam2_image_size,
                             multimask_output=export_cfg.sam2_multimask_output)
    model = VideoLLaVASAMModel(mllm=mllm, grounding_encoder=runner)
    copy_into(model.text_hidden_fcs, load_file(str(model_dir / TEXT_FCS_FILE)), str(model_dir / TEXT_FCS_FILE),
              "text_hidden_fcs")
    model.export_config = export_cfg
    model.requires_grad_(False)
    report = ConversionReport(source=f"exported Sa2VA {model_dir}")
    report.count("internvl", len(mllm.hf_model.state_dict()))
    report.count("sam2", len(runner.sam2_model.state_dict()))
    report.count("text_hidden_fcs", len(model.text_hidden_fcs.state_dict()))
    report.log()
    return model.eval()
