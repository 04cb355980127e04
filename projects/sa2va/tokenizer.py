"""The one tokenizer of a run.

The model and every dataset get their tokenizer from :func:`build_tokenizer`, which loads the checkpoint's
tokenizer and adds Sa2VA's special tokens once. Calls with the same arguments return the *same object*
in one process, so the token ids the datasets write are the ids whose embeddings the model resized.
"""
from __future__ import annotations

import functools
import os

DEFAULT_SPECIAL_TOKENS = ("[SEG]", "<p>", "</p>", "<vp>", "</vp>")
SEG_TOKEN = "[SEG]"
IMG_START_TOKEN = "<img>"
IMG_END_TOKEN = "</img>"
IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"
VP_START_TOKEN = "<vp>"
VP_END_TOKEN = "</vp>"


@functools.lru_cache(maxsize=8)
def _load(path: str, special_tokens: tuple[str, ...], padding_side: str):
    from transformers import AutoTokenizer

    from .hf.import_internvl import is_original_internvl, load_original_tokenizer

    # original InternVL directories: their config.json is remote code, which AutoTokenizer would consult
    load = load_original_tokenizer if is_original_internvl(path) else AutoTokenizer.from_pretrained
    tok = load(path, padding_side=padding_side)
    missing = [t for t in (IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN) if t not in tok.get_vocab()]
    if missing:
        raise ValueError(f"tokenizer at {path} lacks InternVL image tokens {missing}: is this an InternVL checkpoint?")
    tok.add_tokens(list(special_tokens), special_tokens=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_tokenizer(pretrained_model_name_or_path: str | os.PathLike,
                    special_tokens: list[str] | tuple[str, ...] = DEFAULT_SPECIAL_TOKENS,
                    padding_side: str = "right"):
    """Load the checkpoint's tokenizer and add ``special_tokens`` (in order, only those not yet present)."""
    return _load(os.fspath(pretrained_model_name_or_path), tuple(special_tokens), padding_side)
