"""Dataset items -> one batch, exactly as docs/batch_layout.md specifies.

Use in a config: ``collate_fn=dict(type=sa2va_collate_fn, pad_token_id=<tokenizer.pad_token_id>)``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from .encoding import IGNORE_INDEX


def _record(item: dict, index: int) -> str:
    return item.get("record_id") or f"batch item {index}"


def _sum_issues(per_item) -> dict[str, int]:
    """Skip/truncation counts carried by the items (``"dataset: skipped: reason" -> n``), summed."""
    total: dict[str, int] = {}
    for issues in per_item:
        for k, n in (issues or {}).items():
            total[k] = total.get(k, 0) + n
    return total


def in_one_storage(tensors: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """The same tensors (shapes, dtypes, values; None stays None), copied into one storage per dtype.

    A DataLoader worker sends every storage of a batch to the training process as its own file descriptor (torch's
    default sharing strategy), which cost that process ~0.3 ms per storage on the 2-core VM: a learning-proof
    segmentation batch of 64 items (64 SAM2 images + 64 mask stacks) took 34-42 ms to receive as separate tensors,
    8-15 ms with each list in one storage (``benchmarks/batch_receive.py``, docs/benchmarks.md). Views of one
    storage travel as one.
    """
    out: list[torch.Tensor | None] = list(tensors)
    for dtype in {t.dtype for t in tensors if t is not None}:
        members = [i for i, t in enumerate(tensors) if t is not None and t.dtype == dtype]
        if len(members) < 2:
            continue
        flat = torch.empty(sum(tensors[i].numel() for i in members), dtype=dtype)
        offset = 0
        for i in members:
            t = tensors[i]
            out[i] = flat[offset:offset + t.numel()].view(t.shape)
            out[i].copy_(t)
            offset += t.numel()
    return out


def sa2va_collate_fn(instances: Sequence[dict], pad_token_id: int = 0) -> dict:
    """Right-pad token sequences and gather the per-sample vision inputs.

    Returns ``{'data': data, 'data_samples': None}`` with ``data`` holding ``input_ids``, ``labels``,
    ``attention_mask``, ``position_ids`` (all ``[B, Lmax]``), ``pixel_values`` (``[sum T_i, 3, s, s]`` or None),
    ``num_tiles``, ``g_pixel_values``, ``masks``, ``prompt_masks`` and ``frames_per_batch`` (lists of length B).
    """
    if not instances:
        raise ValueError("sa2va_collate_fn: empty batch")
    for i, item in enumerate(instances):
        if item["input_ids"].shape != item["labels"].shape or item["input_ids"].dim() != 1:
            raise ValueError(f"{_record(item, i)}: input_ids {tuple(item['input_ids'].shape)} and labels "
                             f"{tuple(item['labels'].shape)} must be 1-D of equal length")
        if item.get("masks") is not None and item.get("g_pixel_values") is None:
            raise ValueError(f"{_record(item, i)}: has masks but no g_pixel_values")

    input_ids = pad_sequence([x["input_ids"] for x in instances], batch_first=True,
                             padding_value=pad_token_id)                                   # [B, Lmax]
    labels = pad_sequence([x["labels"] for x in instances], batch_first=True,
                          padding_value=IGNORE_INDEX)                                      # [B, Lmax]
    seq_lens = torch.tensor([len(x["input_ids"]) for x in instances])                     # [B]
    max_len = input_ids.shape[1]
    positions = torch.arange(max_len)                                                      # [Lmax]
    attention_mask = positions[None, :] < seq_lens[:, None]                                # [B, Lmax] bool
    position_ids = positions[None, :].expand(len(instances), -1).clone()                   # [B, Lmax]

    tiles = [x.get("pixel_values") for x in instances]
    num_tiles = [0 if t is None else int(t.shape[0]) for t in tiles]
    present = [t for t in tiles if t is not None]
    if present:
        def per_record(prop):  # {record: prop(its tiles)} for an error message
            return {_record(x, i): prop(x["pixel_values"])
                    for i, x in enumerate(instances) if x.get("pixel_values") is not None}

        if len({tuple(t.shape[1:]) for t in present}) > 1:
            raise ValueError(f"tiles of different shapes in one batch: {per_record(lambda t: tuple(t.shape[1:]))}")
        if len({t.dtype for t in present}) > 1:  # cat would promote uint8 pixels to float: silently unnormalised
            raise ValueError(f"tiles of different dtypes in one batch (set uint8_tiles the same on every "
                             f"dataset): {per_record(lambda t: str(t.dtype))}")
        pixel_values = torch.cat(present, dim=0)                                           # [sum T_i, 3, s, s]
    else:
        pixel_values = None

    data = dict(
        input_ids=input_ids,
        labels=labels,
        attention_mask=attention_mask,
        position_ids=position_ids,
        pixel_values=pixel_values,
        num_tiles=num_tiles,
        # per-item tensors, each list in one storage (a worker sends one storage faster than B; see in_one_storage)
        g_pixel_values=in_one_storage([x.get("g_pixel_values") if x.get("masks") is not None else None
                                       for x in instances]),
        masks=in_one_storage([x.get("masks") for x in instances]),
        prompt_masks=in_one_storage([x.get("prompt_masks") for x in instances]),
        frames_per_batch=[int(x.get("frames_per_batch", 1)) for x in instances],
        data_issues=_sum_issues(x.get("data_issues") for x in instances),
    )
    return {"data": data, "data_samples": None}
