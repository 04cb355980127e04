"""Greedy decoding with a KV cache that also returns the final-layer hidden state at every ``[SEG]`` input position.

Why our own loop instead of ``generate``: Sa2VA needs the hidden state of each generated ``[SEG]`` *as an input
token* (the state the training loss uses, no shift), the LoRA/trainable-token wrappers sit on the inner language
model, and the loop stays the same across transformers 5.x releases. Each step feeds the previous token, so the
state at a ``[SEG]`` input position comes for free one step after it was generated (one extra step when ``[SEG]``
is the very last token). This equals a teacher-forced pass over prompt + answer up to floating-point rounding
(tests/evaluation/test_predictor.py checks it).

Prompts of one batch are left-padded; position ids count real tokens only, so a padded prompt decodes exactly
like the same prompt alone.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass
class GenerationOutput:
    """Per prompt: generated token ids (stop token / stop word excluded) and ``[SEG]`` states ``[n_seg, D]``."""

    token_ids: list[list[int]]
    seg_hidden: list[torch.Tensor]
    stopped: list[bool]  # False when max_new_tokens was reached first


@functools.lru_cache(maxsize=8)
def _cache_kwarg(model_cls: type) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` during 5.x; use whichever the model takes."""
    params = inspect.signature(model_cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class StopCondition:
    """Ends a sequence at the tokenizer's EOS or at any of the template's stop words.

    Single-token stop words (``<|im_end|>``) are matched by id; longer ones by the decoded text's suffix
    (as the original's stop criteria did).
    """

    def __init__(self, tokenizer, stop_words: Sequence[str]):
        self.tokenizer = tokenizer
        self.stop_ids: set[int] = set()
        self.stop_texts: list[str] = []
        if tokenizer.eos_token_id is not None:
            self.stop_ids.add(int(tokenizer.eos_token_id))
        for word in stop_words:
            ids = tokenizer.encode(word, add_special_tokens=False)
            if len(ids) == 1:
                self.stop_ids.add(ids[0])
            elif word:
                self.stop_texts.append(word)
        self._tail = max((len(tokenizer.encode(w, add_special_tokens=False)) for w in self.stop_texts), default=0) + 2

    def trim(self, ids: list[int]) -> tuple[list[int], bool]:
        """(ids without the stop token / stop word, whether it stopped)."""
        if ids and ids[-1] in self.stop_ids:
            return ids[:-1], True
        if self.stop_texts and ids:
            tail = self.tokenizer.decode(ids[-self._tail:], skip_special_tokens=False)
            for word in self.stop_texts:
                if tail.endswith(word):
                    # keep the longest prefix of tokens whose text ends before the stop word starts
                    start = len(self.tokenizer.decode(ids, skip_special_tokens=False)) - len(word)
                    keep = len(ids)
                    while keep > 0 and len(self.tokenizer.decode(ids[:keep], skip_special_tokens=False)) > start:
                        keep -= 1
                    return ids[:keep], True
        return ids, False

    def is_stopped(self, ids: list[int]) -> bool:
        return self.trim(ids)[1]


@torch.inference_mode()
def greedy_generate(mllm, prompts: Sequence[torch.Tensor], pixel_values: torch.Tensor | None,
                    num_tiles: Sequence[int], prompt_masks: Sequence[torch.Tensor | None] | None, seg_token_id: int,
                    stop: StopCondition, max_new_tokens: int, pad_token_id: int,
                    logits_processor: Callable | None = None) -> GenerationOutput:
    """Greedy decoding of a batch of prompts through ``mllm`` (:class:`sa2va.models.InternVLMLLM`).

    Args:
        prompts: 1-D LongTensors of prompt ids (each with its image / region placeholders).
        pixel_values: tiles of all prompts, prompt after prompt (``[sum T_i, 3, s, s]``), or None.
        num_tiles / prompt_masks: per prompt, as in the batch layout.
        logits_processor: optional ``f(input_ids [B, L], scores [B, V]) -> scores`` applied before the argmax
            (the signature of transformers' LogitsProcessor); ``input_ids`` are the left-padded prompts plus
            the tokens generated so far.
    """
    device = mllm.lm_head.weight.device
    lm = mllm.language_model
    cache_kw = _cache_kwarg(type(lm))
    b = len(prompts)
    length = max(len(p) for p in prompts)
    input_ids = torch.full((b, length), pad_token_id, dtype=torch.long, device=device)
    attention = torch.zeros(b, length, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        input_ids[i, length - len(p):] = p.to(device)
        attention[i, length - len(p):] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # [B, L]

    embeds = mllm.input_embeddings(input_ids, pixel_values, list(num_tiles), prompt_masks)  # [B, L, D]
    out = lm(inputs_embeds=embeds, attention_mask=attention, position_ids=positions, use_cache=True)
    cache = getattr(out, cache_kw)
    hidden = out.last_hidden_state[:, -1]  # [B, D] state at the last prompt position

    generated: list[list[int]] = [[] for _ in range(b)]
    done = [False] * b
    stopped = [False] * b
    seg_states: list[list[torch.Tensor]] = [[] for _ in range(b)]
    all_ids = input_ids
    next_pos = positions[:, -1:] + 1  # [B, 1]
    for step in range(max_new_tokens):
        scores = mllm.logits(hidden).float()  # [B, V]
        if logits_processor is not None:
            scores = logits_processor(all_ids, scores)
        tokens = scores.argmax(-1)  # [B]
        is_seg = [False] * b
        for i in range(b):
            if done[i]:
                tokens[i] = pad_token_id
                continue
            generated[i].append(int(tokens[i]))
            if stop.is_stopped(generated[i]):
                done[i] = stopped[i] = True
            elif generated[i][-1] == seg_token_id:
                is_seg[i] = True
        all_ids = torch.cat([all_ids, tokens[:, None]], dim=1)
        if (all(done) or step == max_new_tokens - 1) and not any(is_seg):
            break  # nothing left to generate, and no [SEG] state still to compute
        attention = torch.cat([attention, torch.ones(b, 1, dtype=attention.dtype, device=device)], dim=1)
        out = lm(inputs_embeds=mllm.embed_tokens(tokens[:, None]), attention_mask=attention, position_ids=next_pos,
                 use_cache=True, **{cache_kw: cache})
        cache = getattr(out, cache_kw)
        hidden = out.last_hidden_state[:, -1]  # [B, D] state at the input position of ``tokens``
        next_pos = next_pos + 1
        for i in range(b):
            if is_seg[i]:
                seg_states[i].append(hidden[i])

    token_ids, seg_hidden = [], []
    for i in range(b):
        ids, _ = stop.trim(generated[i]) if stopped[i] else (generated[i], False)
        n_seg = sum(t == seg_token_id for t in ids)
        states = seg_states[i][:n_seg]
        if len(states) != n_seg:
            raise RuntimeError(f"prompt {i}: {n_seg} [SEG] generated but {len(states)} hidden states collected")
        token_ids.append(ids)
        seg_hidden.append(torch.stack(states) if states else hidden.new_zeros(0, hidden.shape[-1]))
    return GenerationOutput(token_ids=token_ids, seg_hidden=seg_hidden, stopped=stopped)
