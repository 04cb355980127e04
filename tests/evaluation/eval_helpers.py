"""Tiny Sa2VA models and forced decoding for the evaluation tests."""
import numpy as np
import torch
from peft import LoraConfig
from PIL import Image

from sa2va import BUILDER
from sa2va.models import CrossEntropyLoss, DiceLoss, InternVLMLLM, SAM2TrainRunner, VideoLLaVASAMModel


def tiny_model_config(tiny):
    return dict(
        type=VideoLLaVASAMModel,
        mllm=dict(type=InternVLMLLM, model_path=tiny["internvl"], torch_dtype="float32",
                  llm_lora=dict(type=LoraConfig, r=8, lora_alpha=16, lora_dropout=0.0, bias="none")),
        grounding_encoder=dict(type=SAM2TrainRunner, cfg_path=tiny["sam2_cfg"], ckpt_path=tiny["sam2_ckpt"]),
        loss_mask=dict(type=CrossEntropyLoss, use_sigmoid=True, loss_weight=2.0),
        loss_dice=dict(type=DiceLoss, use_sigmoid=True, activate=True, naive_dice=True, eps=1.0, loss_weight=0.5),
    )


def build_tiny_model(tiny, seed=0):
    torch.manual_seed(seed)
    model = BUILDER.build(tiny_model_config(tiny)).eval()
    with torch.no_grad():  # move the trainable weights off their init so masks are not all background
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return model


def make_image(height=90, width=130, seed=0):
    """A non-square image of odd size with a few coloured blocks."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    pixels[10:50, 15:60] = (220, 30, 30)
    pixels[40:80, 70:120] = (30, 40, 220)
    return Image.fromarray(pixels)


class ForceTokens:
    """A logits processor that makes greedy decoding emit ``sequence`` (its last id repeats afterwards).
    ``free_after``: from that step on, the model's own argmax is kept."""

    def __init__(self, sequence, free_after=None):
        self.sequence = list(sequence)
        self.free_after = free_after
        self.start = self.last = None

    def __call__(self, input_ids, scores):
        if self.last is None or input_ids.shape[1] <= self.last:  # a new generate call
            self.start = input_ids.shape[1]
        self.last = input_ids.shape[1]
        step = input_ids.shape[1] - self.start
        if self.free_after is not None and step >= self.free_after:
            return scores
        forced = torch.full_like(scores, -1e9)
        forced[:, self.sequence[min(step, len(self.sequence) - 1)]] = 0.0
        return forced


def answer_ids(tokenizer, text, end="<|im_end|>"):
    """Ids of an answer written with literal special tokens, plus the end token."""
    return tokenizer(text, add_special_tokens=False).input_ids + ([tokenizer.convert_tokens_to_ids(end)] if end else [])
