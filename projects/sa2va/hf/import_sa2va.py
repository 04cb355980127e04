"""Released Sa2VA checkpoints (``Sa2VAChatModel`` directories, ``model_type: sa2va_chat``) -> a built model.

Such a directory holds everything: ``vision_model.*``, ``mlp1.*``, ``language_model.*`` (the original InternVL
layout, LoRA already merged, special-token rows included), ``grounding_encoder.sam2_model.*`` (Meta SAM2 names with
``.gamma`` stored as ``.g_weight``, because transformers renames ``gamma`` on load) and ``text_hidden_fcs.*``.
:func:`load_sa2va_hf` copies all of it into a :class:`~sa2va.models.VideoLLaVASAMModel` built from one of our
configs (fresh LoRA adapters on top), so a run fine-tunes from the released weights.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from mmengine.logging import MMLogger

from ..tokenizer import IMG_CONTEXT_TOKEN
from .common import ConversionReport, copy_into, read_json, read_state_dict
from .import_internvl import convert_state_dict, load_original_tokenizer, text_arch

SAM2_PREFIX = "grounding_encoder.sam2_model."
TEXT_FCS_PREFIX = "text_hidden_fcs."
# parts of some Sa2VA checkpoints that these models do not have (the unused "fast pathway")
IGNORED_PREFIXES = ("text_exist_fcs.",)


def is_sa2va_hf(path: str | os.PathLike) -> bool:
    cfg = Path(path) / "config.json"
    return cfg.is_file() and read_json(cfg).get("model_type") == "sa2va_chat"


def _check_token_ids(model, path: Path) -> None:
    """Our special tokens (and ``<IMG_CONTEXT>``) must have the ids the Sa2VA tokenizer gave them."""
    if not (path / "tokenizer_config.json").is_file():
        MMLogger.get_current_instance().warning(f"{path}: no tokenizer; special-token ids are not checked")
        return
    theirs = load_original_tokenizer(path)
    for token in (*model.mllm.special_tokens, IMG_CONTEXT_TOKEN):
        ours, their = model.tokenizer.convert_tokens_to_ids(token), theirs.convert_tokens_to_ids(token)
        if ours != their:
            raise ValueError(f"{path}: token '{token}' has id {their} in the checkpoint's tokenizer but {ours} in the "
                             f"model's; build the model from the same base tokenizer and special_tokens order")


def _untie_check(hf_model, converted: dict, source: str) -> None:
    """A tied head cannot hold a different checkpoint head: refuse instead of silently using the embedding."""
    embed, head = hf_model.get_input_embeddings().weight, hf_model.lm_head.weight
    if embed.data_ptr() == head.data_ptr() and "lm_head.weight" in converted:
        if not torch.equal(converted["lm_head.weight"], converted["model.language_model.embed_tokens.weight"]):
            raise ValueError(f"{source}: the checkpoint has its own lm_head but the model ties lm_head to the input "
                             f"embedding (tie_word_embeddings=True)")
        del converted["lm_head.weight"]


@torch.no_grad()
def load_sa2va_hf(model, path: str | os.PathLike) -> ConversionReport:
    """Copy a Sa2VA HF directory's weights into ``model`` (strict: every InternVL, SAM2 and text_hidden_fcs weight
    of the model must be in the checkpoint with the same shape, and every checkpoint key must be used, except the
    known-unused ``text_exist_fcs``). LoRA adapters stay as initialised; trainable-token rows take the checkpoint's
    rows. Errors name the file and the keys."""
    path = Path(path)
    original = read_json(path / "config.json")
    if original.get("model_type") != "sa2va_chat":
        raise ValueError(f"{path / 'config.json'}: model_type {original.get('model_type')!r} is not 'sa2va_chat'")
    _check_token_ids(model, path)
    state, origin = read_state_dict(path)
    hf_model = model.mllm.hf_model
    converted, renamed_from, other = convert_state_dict(state, text_arch(original, str(path)),
                                                        hf_model.config.text_config)
    _untie_check(hf_model, converted, str(path))
    report = ConversionReport(source=f"Sa2VA HF {path}")
    copy_into(hf_model, converted, str(path), "the model's InternVL (mllm)", renamed_from)
    for k in converted:
        report.count(k.split(".")[1] if k.startswith("model.") else "lm_head")

    sam2 = {k[len(SAM2_PREFIX):].replace(".g_weight", ".gamma"): state[k] for k in other if k.startswith(SAM2_PREFIX)}
    copy_into(model.grounding_encoder.sam2_model, sam2, str(path), "the model's SAM2 (grounding_encoder)",
              {k[len(SAM2_PREFIX):].replace(".g_weight", ".gamma"): k for k in other if k.startswith(SAM2_PREFIX)})
    report.count("sam2", len(sam2))
    fcs = {k[len(TEXT_FCS_PREFIX):]: state[k] for k in other if k.startswith(TEXT_FCS_PREFIX)}
    copy_into(model.text_hidden_fcs, fcs, str(path), "the model's text_hidden_fcs")
    report.count("text_hidden_fcs", len(fcs))

    rest = [k for k in other if not k.startswith((SAM2_PREFIX, TEXT_FCS_PREFIX))]
    unknown = [k for k in rest if not k.startswith(IGNORED_PREFIXES)]
    if unknown:
        raise KeyError(f"{origin[unknown[0]]}: unexpected keys {unknown[:10]}")
    report.ignored = rest
    report.new = [n for n, _ in model.named_parameters() if "lora_" in n]
    report.log()
    return report


def init_from_sa2va_hf(model, path: str | os.PathLike):
    """Config helper: ``model = dict(type=init_from_sa2va_hf, model=dict(type=VideoLLaVASAMModel, ...),
    path='pretrained/Sa2VA-4B')`` builds the model and loads the Sa2VA weights into it."""
    from ..registry import BUILDER

    if isinstance(model, dict):
        model = BUILDER.build(model)
    load_sa2va_hf(model, path)
    return model
