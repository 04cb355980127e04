"""Shared pieces of the checkpoint tests: a config file for the tiny model, perturbation, outputs to compare."""
from __future__ import annotations

import torch

from model_helpers import caption_sample, collate, seg_sample

CONFIG_TEMPLATE = """\
from peft import LoraConfig
from sa2va.models import CrossEntropyLoss, DiceLoss, InternVLMLLM, SAM2TrainRunner, VideoLLaVASAMModel

template = 'qwen_chat'
max_tiles = 6
model = dict(
    type=VideoLLaVASAMModel,
    mllm=dict(type=InternVLMLLM, model_path={internvl!r}, torch_dtype='bfloat16',
              llm_lora=dict(type=LoraConfig, r=8, lora_alpha=16, lora_dropout=0.0, bias='none'),
              new_token_training='rows'),
    grounding_encoder=dict(type=SAM2TrainRunner, cfg_path={sam2_cfg!r}, ckpt_path={sam2_ckpt!r}),
    loss_mask=dict(type=CrossEntropyLoss, use_sigmoid=True, reduction='mean', loss_weight=2.0),
    loss_dice=dict(type=DiceLoss, use_sigmoid=True, activate=True, reduction='mean', naive_dice=True, eps=1.0,
                   loss_weight=0.5),
)
"""


def write_config(tiny: dict, path) -> str:
    path.write_text(CONFIG_TEMPLATE.format(**tiny))
    return str(path)


@torch.no_grad()
def perturb(module: torch.nn.Module, seed: int = 0, only_trainable: bool = True, scale: float = 0.05) -> None:
    """Move weights away from their initial values (LoRA B included, so a merge changes the base weights)."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        if p.requires_grad or not only_trainable:
            p.add_(torch.randn(p.shape, generator=g).to(p.dtype) * scale)


def batch_for(model):
    torch.manual_seed(123)
    return collate([seg_sample(model, n_masks=2), caption_sample(model)], model.tokenizer.pad_token_id)


@torch.no_grad()
def outputs(model, batch) -> dict:
    """LM logits at every position and the mask logits of every [SEG]."""
    out = model(batch, mode="predict")
    return {"logits": model.mllm.logits(out["hidden_states"]).float(),
            "masks": [m for m in out["pred_masks"] if m is not None]}


def assert_outputs_equal(a: dict, b: dict) -> None:
    assert torch.equal(a["logits"], b["logits"]), (a["logits"] - b["logits"]).abs().max()
    assert len(a["masks"]) == len(b["masks"]) > 0
    for x, y in zip(a["masks"], b["masks"]):
        assert torch.equal(x, y), (x - y).abs().max()


def assert_outputs_close(a: dict, b: dict, atol: float, rtol: float = 0.0) -> None:
    torch.testing.assert_close(a["logits"], b["logits"], atol=atol, rtol=rtol)
    for x, y in zip(a["masks"], b["masks"]):
        torch.testing.assert_close(x, y, atol=atol, rtol=rtol)
