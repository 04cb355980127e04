"""Text of a sample -> ``input_ids`` / ``labels``: the one encoder every dataset uses.

Sequence layout (docs/data_encoding.md, "Encoding")::

    [BOS]  PREFIX-or-SYSTEM + INSTRUCTION(input_1, round=1)  output_1 + SUFFIX [+EOS]  SEP
           INSTRUCTION(input_2, round=2)                     output_2 + SUFFIX [+EOS]  SEP   ...
    labels: -100 ...................................         token ids ..............  -100

* BOS only if encoding plain text with the tokenizer's own special tokens starts with its BOS (InternLM2 yes,
  Qwen2 no) and the template text does not already start with it.
* ``SYSTEM.format(system=...)`` when ``system`` is given, else the template's ``PREFIX`` (usually ``''``),
  is encoded together with the first instruction.
* Every piece is encoded with ``add_special_tokens=False``.
* Over ``max_length`` whole trailing turns are dropped, never part of a turn, so a kept turn keeps all of its
  image / region / ``[SEG]`` tokens; the first turn not fitting is an error.

Image and region placeholders (:func:`image_token_string`, :func:`region_token_string`) are written into the
user text by the datasets before encoding.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..tokenizer import IMG_CONTEXT_TOKEN, IMG_END_TOKEN, IMG_START_TOKEN, VP_END_TOKEN, VP_START_TOKEN
from .templates import resolve_template

IGNORE_INDEX = -100


def image_token_string(num_tiles: int, tokens_per_tile: int) -> str:
    """``'<img>' + '<IMG_CONTEXT>' * (num_tiles * tokens_per_tile) + '</img>'``: one image's placeholder."""
    if num_tiles < 1 or tokens_per_tile < 1:
        raise ValueError(f"image_token_string: need num_tiles >= 1 and tokens_per_tile >= 1, "
                         f"got {num_tiles}, {tokens_per_tile}")
    return IMG_START_TOKEN + IMG_CONTEXT_TOKEN * (num_tiles * tokens_per_tile) + IMG_END_TOKEN


def region_token_string(pixel_counts: Sequence[int]) -> str:
    """The mask-captioning region header; region k gets ``pixel_counts[k]`` ``<IMG_CONTEXT>`` tokens.

    ``'There are 2 part regions in the picture: region1<vp>...</vp>, region2<vp>...</vp>.\\n'``, where
    ``pixel_counts[k]`` is the number of non-zero cells of region k's mask on the thumbnail's token grid.
    """
    if len(pixel_counts) == 0:
        raise ValueError("region_token_string: need at least one region")
    if any(int(k) < 0 for k in pixel_counts):
        raise ValueError(f"region_token_string: negative pixel count in {list(pixel_counts)}")
    regions = ", ".join(f"region{i + 1}{VP_START_TOKEN}{IMG_CONTEXT_TOKEN * int(k)}{VP_END_TOKEN}"
                        for i, k in enumerate(pixel_counts))
    return f"There are {len(pixel_counts)} part regions in the picture: {regions}.\n"


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def _bos_ids(tokenizer, first_text: str) -> list[int]:
    """``[bos]`` when the tokenizer itself adds a BOS to plain text and the template text does not start with it."""
    bos = tokenizer.bos_token_id
    if bos is None or (tokenizer.bos_token and first_text.startswith(tokenizer.bos_token)):
        return []
    adds_bos = tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]
    return [bos] if adds_bos else []


def encode_conversation(turns: Sequence[Mapping[str, str]], tokenizer, template: str | Mapping, max_length: int,
                        system: str = "", record_id: str = "") -> dict:
    """Encode ``turns`` (``[{'input': user text, 'output': answer text}, ...]``) with ``template``.

    Args:
        turns: the conversation; user texts already contain image / region placeholders.
        tokenizer: the run's tokenizer (:func:`sa2va.tokenizer.build_tokenizer`).
        template: a template name, dict or ``'tokenizer'`` (:func:`~sa2va.datasets.templates.get_template`).
        max_length: the longest sequence to return; trailing whole turns are dropped to fit.
        system: optional system text (``SYSTEM.format(system=...)``).
        record_id: named in error messages (file + record id).

    Returns:
        ``dict(input_ids=LongTensor[L], labels=LongTensor[L], turns_kept=int, truncated=bool)``;
        ``labels`` is ``-100`` on BOS, system, instructions and separators, the token id on answers + SUFFIX.

    Raises:
        ValueError: no turns, a turn without ``input``/``output`` text, or the first turn alone over ``max_length``.
    """
    where = f"{record_id}: " if record_id else ""
    if not turns:
        raise ValueError(f"{where}conversation has no turns")
    tpl = resolve_template(template, tokenizer)
    if system and not tpl["SYSTEM"]:
        raise ValueError(f"{where}a system text was given but template {tpl['NAME']!r} has no SYSTEM")
    head_text = tpl["SYSTEM"].format(system=system) if system else tpl["PREFIX"]
    eos_ids = [] if tpl["SUFFIX_AS_EOS"] or tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    sep_ids = _encode(tokenizer, tpl["SEP"])

    first_prompt = head_text + tpl["INSTRUCTION"]
    input_ids: list[int] = _bos_ids(tokenizer, first_prompt)
    labels: list[int] = [IGNORE_INDEX] * len(input_ids)
    turns_kept = 0
    for i, turn in enumerate(turns):
        user, answer = turn.get("input"), turn.get("output")
        if not isinstance(user, str) or not isinstance(answer, str):
            raise ValueError(f"{where}turn {i}: 'input' and 'output' must be strings, "
                             f"got {type(user).__name__} and {type(answer).__name__}")
        prompt_ids = _encode(tokenizer, (head_text if i == 0 else "")
                             + tpl["INSTRUCTION"].format(input=user, round=i + 1))
        answer_ids = _encode(tokenizer, answer + tpl["SUFFIX"]) + eos_ids
        turn_len = len(prompt_ids) + len(answer_ids) + len(sep_ids)
        if len(input_ids) + turn_len > max_length:
            if i == 0:
                raise ValueError(f"{where}the first turn alone is {len(input_ids) + turn_len} tokens, over "
                                 f"max_length={max_length}; raise max_length or lower max_dynamic_patch")
            break
        input_ids += prompt_ids + answer_ids + sep_ids
        labels += [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [IGNORE_INDEX] * len(sep_ids)
        turns_kept += 1
    return dict(
        input_ids=torch.tensor(input_ids, dtype=torch.long),  # [L]
        labels=torch.tensor(labels, dtype=torch.long),        # [L]
        turns_kept=turns_kept,
        truncated=turns_kept < len(turns),
    )
