"""CustomJsonDataset (Sa2VA fine-tune json) as referring segmentation and as mask captioning."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sa2va.datasets.custom_json import CustomJsonDataset
from sa2va.datasets.encoding import IGNORE_INDEX
from sa2va.datasets.masks import to_prompt_grid
from sa2va.datasets.text import REGION_CAPTION_QUESTION, normalize_phrase

TPT = 16


@pytest.fixture
def records(synthetic):
    with open(f"{synthetic['custom']}/annotations.json") as f:
        return json.load(f)


def _gt_masks(synthetic, record, coco_decode):
    w, h = Image.open(f"{synthetic['custom']}/images/{record['image']}").size
    return [coco_decode(m, h, w) for m in record["mask"]]


def test_seg_task(synthetic, common, sam2_processor, records, coco_decode, token_ids, tiny_tokenizer):
    ds = CustomJsonDataset(synthetic["custom"], task="seg", extra_image_processor=sam2_processor, seed=0, **common)
    assert len(ds) == len(records) and len(ds.lengths) == len(ds)
    for i, rec in enumerate(records):
        item = ds[i]
        gt = _gt_masks(synthetic, rec, coco_decode)
        masks = item["masks"]
        assert masks.shape[0] == min(5, len(gt)) == int((item["input_ids"] == token_ids["[SEG]"]).sum())
        chosen = [next(k for k, g in enumerate(gt) if np.array_equal(g, m.numpy())) for m in masks]
        assert len(set(chosen)) == len(chosen)
        text = tiny_tokenizer.decode(item["input_ids"])
        for k in chosen:  # the question names the object's (normalised) text
            assert normalize_phrase(rec["text"][k]) in text
        assert item["g_pixel_values"].shape == (3, 128, 128)


def test_caption_task(synthetic, common, records, coco_decode, region_token_counts, tiny_tokenizer):
    ds = CustomJsonDataset(synthetic["custom"], task="caption", seed=0, **common)
    for i, rec in enumerate(records):
        item = ds[i]
        grids = [to_prompt_grid(m[None], 4)[0] for m in _gt_masks(synthetic, rec, coco_decode)]
        pm = item["prompt_masks"]
        chosen = [next(k for k, g in enumerate(grids) if torch.equal(g, p)) for p in pm]
        assert region_token_counts(item["input_ids"]) == pm.flatten(1).sum(1).tolist()
        sup = item["labels"] != IGNORE_INDEX
        assert tiny_tokenizer.decode(item["input_ids"][sup]) == "".join(rec["text"][k] + "<|im_end|>" for k in chosen)
        text = tiny_tokenizer.decode(item["input_ids"])
        assert all(REGION_CAPTION_QUESTION.format(index=r + 1) in text for r in range(len(pm)))
        assert "masks" not in item and "g_pixel_values" not in item


def test_bad_arguments_and_records(synthetic, common, tmp_path, records):
    from sa2va.datasets.errors import BadRecordError

    with pytest.raises(ValueError, match="task"):
        CustomJsonDataset(synthetic["custom"], task="detect", **common)
    bad = [dict(records[0], text=records[0]["text"][:-1])]
    (tmp_path / "annotations.json").write_text(json.dumps(bad))
    ds = CustomJsonDataset(str(tmp_path), image_folder=f"{synthetic['custom']}/images", task="caption", **common)
    with pytest.raises(BadRecordError) as e:
        ds[0]
    assert "annotations.json" in str(e.value) and "record #0" in str(e.value) and "'text'" in str(e.value)
