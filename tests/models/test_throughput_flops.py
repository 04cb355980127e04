"""benchmarks/train_throughput.py's FLOP count: the LLM's attention part is split out exactly."""
import importlib.util
from pathlib import Path

import torch

from model_helpers import caption_sample, collate, model_config, seg_sample
from sa2va import BUILDER

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("train_throughput", REPO / "benchmarks" / "train_throughput.py")
train_throughput = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_throughput)


def test_llm_attention_flops_are_the_full_matrix_formula_per_sample(tiny_models, recwarn):
    torch.manual_seed(0)
    model = BUILDER.build(model_config(tiny_models))
    samples = [seg_sample(model, n_masks=2), caption_sample(model, tiles=1)]
    total, attention = train_throughput.count_flops(model, collate(samples, model.tokenizer.pad_token_id))
    cfg = model.mllm.language_model.config
    q_width = cfg.num_attention_heads * cfg.head_dim if getattr(cfg, "head_dim", None) else cfg.hidden_size
    # QK^T and AV: 2 matmuls of 2*L*L*q_width FLOPs forward, twice that backward; each sample at its own length
    expected = sum(12 * len(s["input_ids"]) ** 2 * q_width * cfg.num_hidden_layers for s in samples)
    assert attention == expected
    assert 0 < attention < total
