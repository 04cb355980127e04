"""The Sa2VA fine-tuning json (bytedance/Sa2VA "codebase v2", docs/finetune.md).

On disk::

    <data_root>/annotations.json   [{"image": "file.jpg", "mask": [[poly, ...], ...], "text": ["...", ...]}, ...]
    <data_root>/images/file.jpg

``mask[k]`` is object k's segmentation (a list of flat polygons; an RLE dict works too) and ``text[k]`` describes it.
The same records serve two tasks:

* ``task='seg'``: text -> mask, exactly like :class:`~sa2va.datasets.refer.ReferSegmDataset` (up to
  ``num_classes_per_sample`` objects per item, without replacement; one ``[SEG]`` answer per object);
* ``task='caption'``: mask -> text, like :class:`~sa2va.datasets.refer.ReferRegionCaptionDataset` (the objects are
  regions of the Osprey header; each region's text answers the short-description question).

The format stores no image size, so the sampler's length estimate uses the maximum tile count (an upper bound).
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch

from ..registry import BUILDER
from .base import DEFAULT_SAM2_PROCESSOR, ImageDatasetBase, load_image
from .errors import BadRecordError
from .masks import decode_segmentation
from .text import REGION_CAPTION_QUESTION, clean_text, normalize_phrase

__all__ = ["CustomJsonDataset"]

TASKS = ("seg", "caption")


@BUILDER.register_module()
class CustomJsonDataset(ImageDatasetBase):
    """Sa2VA fine-tune json as referring segmentation (``task='seg'``) or mask captioning (``task='caption'``).

    Args:
        data_root: directory holding ``ann_file`` and ``image_folder``.
        ann_file, image_folder: relative to ``data_root`` (or absolute).
        task: ``'seg'`` or ``'caption'``.
        num_classes_per_sample: objects per item (without replacement; all when the image has fewer).
        extra_image_processor: SAM2 image processor for ``task='seg'`` (default ``DirectResize(1024)``); unused
            for captioning.
        other args: :class:`~sa2va.datasets.base.ImageDatasetBase`.
    """

    def __init__(self, data_root: str, ann_file: str = "annotations.json", image_folder: str = "images",
                 task: str = "seg", tokenizer=None, template="qwen_chat", max_length: int = 8192,
                 num_classes_per_sample: int = 5, extra_image_processor=DEFAULT_SAM2_PROCESSOR, tile_size: int = 448,
                 max_dynamic_patch: int = 12, skip_bad_records: bool = False, seed: int | None = None,
                 repeats: int = 1, name: str | None = None, **kwargs):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if task == "seg" and extra_image_processor is None:
            raise ValueError("CustomJsonDataset(task='seg') needs extra_image_processor (the SAM2 input)")
        super().__init__(tokenizer=tokenizer, template=template, max_length=max_length, tile_size=tile_size,
                         max_dynamic_patch=max_dynamic_patch,
                         extra_image_processor=extra_image_processor if task == "seg" else None,
                         skip_bad_records=skip_bad_records, seed=seed, repeats=repeats, name=name, **kwargs)
        self.task = task
        self.num_classes_per_sample = int(num_classes_per_sample)
        self.data_root = os.fspath(data_root)
        self.ann_path = os.path.join(self.data_root, ann_file)
        self.image_dir = os.path.join(self.data_root, image_folder)
        if not os.path.isfile(self.ann_path):
            raise FileNotFoundError(f"{self.name}: {self.ann_path} not found")
        with open(self.ann_path) as f:
            self.records = json.load(f)
        if not isinstance(self.records, list) or not self.records:
            raise ValueError(f"{self.ann_path}: expected a non-empty json list of records")
        self.logger.info(f"{self.name}: {len(self.records)} records ({task}) in {self.ann_path}")

    def _record_id(self, index: int) -> str:
        rec = self.records[index]
        image = rec.get("image") if isinstance(rec, dict) else None
        return f"#{index}" + (f" ({image})" if isinstance(image, str) else "")

    def _record(self, index: int) -> dict:
        rec, rid = self.records[index], self._record_id(index)

        def bad(field, problem):
            return BadRecordError(self.ann_path, rid, field, problem, reason="bad_record")

        if not isinstance(rec, dict):
            raise bad("record", f"expected an object, got {type(rec).__name__}")
        if not isinstance(rec.get("image"), str) or not rec["image"]:
            raise bad("image", f"missing or not a string: {rec.get('image')!r}")
        masks, texts = rec.get("mask"), rec.get("text")
        if not isinstance(masks, list) or not masks:
            raise bad("mask", "missing or empty list")
        if not isinstance(texts, list) or len(texts) != len(masks):
            raise bad("text", f"need one text per mask ({len(masks)}), got {texts!r:.120}")
        return rec

    def prepare(self, record_index: int, rng: np.random.Generator) -> dict:
        rec, rid = self._record(record_index), self._record_id(record_index)
        image = load_image(os.path.join(self.image_dir, rec["image"]), file=self.ann_path, record_id=rid,
                           field="image")
        width, height = image.size

        def load(k: int):
            text = rec["text"][k]
            text = (normalize_phrase if self.task == "seg" else clean_text)(text) if isinstance(text, str) else ""
            if not text:
                raise BadRecordError(self.ann_path, rid, f"text[{k}]", "empty or not a string",
                                     reason="empty_sentence")
            mask = decode_segmentation(rec["mask"][k], height, width, file=self.ann_path, record_id=rid,
                                       field=f"mask[{k}]")  # [H, W]
            if self.task == "caption":
                mask = self.builder.prompt_masks(mask[None], file=self.ann_path, record_id=rid,
                                                 fields=[f"mask[{k}]"])[0]  # [g, g]
            return text, mask

        keys = [(record_index, k) for k in range(len(rec["mask"]))]
        chosen = [value for _, value in self.choose_parts(keys, self.num_classes_per_sample, rng,
                                                          lambda key: load(key[1]))]
        if not chosen:
            raise BadRecordError(self.ann_path, rid, "mask", "none of the record's objects is usable",
                                 reason="no_usable_objects")
        texts = [text for text, _ in chosen]
        if self.task == "seg":
            masks = np.stack([mask for _, mask in chosen])  # [N, H, W], in [SEG] order
            return self.builder.referring_segmentation(image, texts, masks, rng, file=self.ann_path, record_id=rid)
        turns = [dict(input=REGION_CAPTION_QUESTION.format(index=r + 1), output=text) for r, text in enumerate(texts)]
        prompt_masks = torch.stack([grid for _, grid in chosen])  # [R, g, g]
        return self.builder.region_conversation(image, prompt_masks, turns, file=self.ann_path, record_id=rid)

    def estimate_length(self, record_index: int) -> int:
        rec = self.records[record_index]
        texts = [t for t in (rec.get("text") or []) if isinstance(t, str)] if isinstance(rec, dict) else []
        n = max(1, min(self.num_classes_per_sample, len(texts)))
        mean_text = sum(map(len, texts)) / len(texts) if texts else 0
        if self.task == "seg":
            return self.builder.estimate_referring_segmentation(None, None, n, mean_text)
        chars = int(n * (mean_text + len(REGION_CAPTION_QUESTION)))
        return self.builder.estimate_region_conversation(None, None, chars, n, n * self.builder.grid ** 2 // 8, n)
