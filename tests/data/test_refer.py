"""ReferSegmDataset / ReferRegionCaptionDataset on the synthetic REFER files."""
from __future__ import annotations

import json
import pickle
from collections import defaultdict

import numpy as np
import pytest
import torch

from sa2va.datasets.encoding import IGNORE_INDEX
from sa2va.datasets.masks import decode_segmentation, to_prompt_grid
from sa2va.datasets.refer import ReferRegionCaptionDataset, ReferSegmDataset
from sa2va.datasets.text import ANSWER_LIST, REGION_CAPTION_QUESTION, SEG_QUESTIONS

TPT = 16
SPLITS = {"refcoco": ("refs(unc).p", ("train", "val", "testA", "testB")),
          "refcocog": ("refs(umd).p", ("train", "val", "test"))}


def _load(root, split_file):
    with open(f"{root}/{split_file}", "rb") as f:
        refs = pickle.load(f)
    with open(f"{root}/instances.json") as f:
        instances = json.load(f)
    return refs, instances


@pytest.mark.parametrize("name", ["refcoco", "refcocog"])
def test_one_item_per_image_with_refs_in_split(name, synthetic, make_refer):
    split_file, splits = SPLITS[name]
    refs, instances = _load(synthetic[name], split_file)
    for split in splits:
        images = {r["image_id"] for r in refs if r["split"] == split}
        ds = make_refer(name=name, split=split)
        assert len(ds) == len(images) > 0
        assert [r["image_id"] for r in ds.records] == sorted(images)
        assert len(ds.lengths) == len(ds) and all(n > 0 for n in ds.lengths)
    # the last image of instances.json has no refs at all and is in no split
    assert instances["images"][-1]["id"] not in {r["image_id"] for r in refs}


def test_segmentation_items_follow_the_contract(synthetic, make_refer, coco_decode, token_ids, tiny_tokenizer):
    refs, instances = _load(synthetic["refcoco"], "refs(unc).p")
    anns = {a["id"]: a for a in instances["annotations"]}
    images = {im["id"]: im for im in instances["images"]}
    ds = make_refer(split="train", seed=0)
    seg_answers = {a + "<|im_end|>" for a in ANSWER_LIST}
    for i in range(len(ds)):
        item = ds[i]
        rec = ds.records[i]
        img = images[rec["image_id"]]
        ids, labels, masks = item["input_ids"], item["labels"], item["masks"]
        n_refs = len(rec["refs"])
        # masks: one per [SEG], min(5, refs) distinct objects, each exactly pycocotools' decode of its annotation
        assert masks.dtype == torch.uint8 and masks.shape == (min(5, n_refs), img["height"], img["width"])
        assert int((ids == token_ids["[SEG]"]).sum()) == len(masks)
        gt = {r["ann_id"]: coco_decode(anns[r["ann_id"]]["segmentation"], img["height"], img["width"])
              for r in rec["refs"]}
        matched = [next(a for a, m in gt.items() if np.array_equal(m, masks[k].numpy())) for k in range(len(masks))]
        assert len(set(matched)) == len(matched)  # no object twice
        assert set(masks.unique().tolist()) <= {0, 1}
        # image tokens, SAM2 input, bookkeeping
        t = item["pixel_values"].shape[0]
        assert item["pixel_values"].shape[1:] == (3, 112, 112)
        assert int((ids == token_ids["<IMG_CONTEXT>"]).sum()) == t * TPT
        assert item["g_pixel_values"].dtype == torch.uint8 and item["g_pixel_values"].shape == (3, 128, 128)
        assert item["length"] == len(ids) > 0 and item["frames_per_batch"] == 1
        assert item["data_source"] == "ReferSegmDataset" and f"image_id={rec['image_id']}" in item["record_id"]
        # text: the image, '\n', then the first question; only answers (+ suffix) are supervised
        text = tiny_tokenizer.decode(ids)
        assert text.startswith("<|im_start|>user\n<img>") and "</img>\n" in text
        supervised = [tiny_tokenizer.decode(ids[s]) for s in _spans(labels)]
        assert len(supervised) == len(masks) and all(s in seg_answers for s in supervised)
        questions = [seg.split("<|im_start|>assistant")[0].split("<|im_end|>")[0]
                     for seg in text.split("user\n")[1:]]
        questions[0] = questions[0].split("</img>\n", 1)[1]
        phrases = {s for r in rec["refs"] for s in r["sentences"]}
        for q in questions:
            assert any(q == tpl.format(class_name=p) for tpl in SEG_QUESTIONS for p in phrases), q


def _spans(labels):
    sup = (labels != IGNORE_INDEX).tolist() + [False]
    spans, start = [], None
    for i, s in enumerate(sup):
        if s and start is None:
            start = i
        elif not s and start is not None:
            spans.append(slice(start, i))
            start = None
    return spans


def test_masks_union_overlapping_polygon_parts(synthetic, coco_decode):
    """The synthetic 'star' is two overlapping triangles: the mask is their union (0/1), not the sum."""
    _, instances = _load(synthetic["refcoco"], "refs(unc).p")
    images = {im["id"]: im for im in instances["images"]}
    stars = [a for a in instances["annotations"] if isinstance(a["segmentation"], list) and len(a["segmentation"]) == 2]
    assert stars
    for a in stars:
        im = images[a["image_id"]]
        mask = decode_segmentation(a["segmentation"], im["height"], im["width"], file="f", record_id=a["id"])
        parts = [coco_decode([p], im["height"], im["width"]) for p in a["segmentation"]]
        assert (parts[0] & parts[1]).any()  # they do overlap
        assert mask.max() == 1 and np.array_equal(mask, np.maximum(parts[0], parts[1]))


def test_sampling_is_per_epoch_and_reproducible_without_replacement(make_refer):
    ds = make_refer(split="train")
    i = max(range(len(ds)), key=lambda k: len(ds.records[k]["refs"]))
    texts = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        texts.add(tuple(ds[i]["input_ids"].tolist()))
        assert torch.equal(ds[i]["input_ids"], ds[i]["input_ids"])  # a pure function of (seed, epoch, index)
    assert len(texts) > 1  # not frozen at load time: each epoch samples anew
    one = make_refer(split="train", num_classes_per_sample=1)
    assert all(len(one[k]["masks"]) == 1 for k in range(len(one)))
    seeded_a, seeded_b = make_refer(split="train", seed=3), make_refer(split="train", seed=3)
    for k in range(3):
        assert torch.equal(seeded_a[k]["input_ids"], seeded_b[k]["input_ids"])
        assert torch.equal(seeded_a[k]["masks"], seeded_b[k]["masks"])


def test_tokenizer_as_config_and_repeats(synthetic, tiny_internvl, sam2_processor):
    from sa2va.tokenizer import build_tokenizer

    ds = ReferSegmDataset(synthetic["refcoco"], data_prefix=dict(img_path=synthetic["image_dir"]),
                          tokenizer=dict(type=build_tokenizer, pretrained_model_name_or_path=tiny_internvl),
                          tile_size=112, extra_image_processor=sam2_processor, split="val", repeats=3,
                          name="refcoco_val")
    n = ds.num_records
    assert len(ds) == 3 * n and len(ds.lengths) == len(ds) and len(ds.modality_length) == len(ds)
    assert ds[n]["record_id"] == ds[0]["record_id"] and ds[0]["data_source"] == "refcoco_val"
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_length_estimates_are_close(make_refer):
    for ds in (make_refer(split="train", seed=0), make_refer(ReferRegionCaptionDataset, name="refcocog", seed=0)):
        for i in range(len(ds)):
            real = ds[i]["length"]
            assert abs(ds.lengths[i] - real) <= 0.25 * real, (i, ds.lengths[i], real)


def test_truncation_drops_whole_turns_and_their_masks(make_refer, token_ids):
    full = make_refer(split="train", seed=0)
    i = max(range(len(full)), key=lambda k: len(full.records[k]["refs"]))
    ref_item = full[i]
    first_turn = int(torch.nonzero(ref_item["labels"] != IGNORE_INDEX)[0]) + 12  # through the first answer
    ds = make_refer(split="train", seed=0, max_length=first_turn + 4)
    item = ds[i]
    assert len(item["input_ids"]) <= first_turn + 4
    assert len(item["masks"]) == 1 == int((item["input_ids"] == token_ids["[SEG]"]).sum())
    assert torch.equal(item["masks"][0], ref_item["masks"][0])
    assert ds.truncations["samples"] == 1 and ds.truncations["masks"] == len(ref_item["masks"]) - 1


def test_eval_view_lists_every_sentence_with_its_mask(synthetic, make_refer, coco_decode):
    refs, instances = _load(synthetic["refcocog"], "refs(umd).p")
    anns = {a["id"]: a for a in instances["annotations"]}
    ds = make_refer(name="refcocog", split="val")
    view = ds.eval_view()
    assert len(view) == len(ds)
    by_image = defaultdict(list)
    for r in refs:
        if r["split"] == "val":
            by_image[r["image_id"]] += [(s["sent"], r["ann_id"]) for s in r["sentences"]]
    for k in range(len(view)):
        e = view[k]
        expected = by_image[e["image_id"]]
        assert sorted(zip(e["texts"], e["ann_ids"])) == sorted(expected)
        assert e["masks"].shape[0] == len(e["texts"]) and e["image"].mode == "RGB"
        for text_mask, ann_id in zip(e["masks"], e["ann_ids"]):
            h, w = text_mask.shape
            assert np.array_equal(text_mask.numpy(), coco_decode(anns[ann_id]["segmentation"], h, w))
    again = view[0]
    assert again["texts"] == view[0]["texts"]  # no randomness


def test_region_caption_items(synthetic, make_refer, coco_decode, region_token_counts, token_ids, tiny_tokenizer):
    refs, instances = _load(synthetic["refcocog"], "refs(umd).p")
    anns = {a["id"]: a for a in instances["annotations"]}
    raws = {r["ann_id"]: {s["raw"] for s in r["sentences"]} for r in refs}
    ds = make_refer(ReferRegionCaptionDataset, name="refcocog", split="train", seed=1)
    assert "g_pixel_values" not in ds[0] and "masks" not in ds[0]
    for i in range(len(ds)):
        item = ds[i]
        rec = ds.records[i]
        pm = item["prompt_masks"]
        assert pm.dtype == torch.uint8 and pm.shape == (min(5, len(rec["refs"])), 4, 4)
        # region r consumes exactly its non-zero grid cells; total <IMG_CONTEXT> = tiles + regions
        assert region_token_counts(item["input_ids"]) == pm.flatten(1).sum(1).tolist()
        assert int((item["input_ids"] == token_ids["<IMG_CONTEXT>"]).sum()) == \
            item["pixel_values"].shape[0] * TPT + int(pm.sum())
        assert int((item["input_ids"] == token_ids["[SEG]"]).sum()) == 0
        # each region is the nearest-downsampled mask of one of the image's refs
        grids = {r["ann_id"]: to_prompt_grid(coco_decode(anns[r["ann_id"]]["segmentation"], rec["height"],
                                                         rec["width"])[None], 4)[0] for r in rec["refs"]}
        region_anns = [next(a for a, g in grids.items() if torch.equal(g, pm[r])) for r in range(len(pm))]
        # labels supervise only the captions (+ end-of-turn), caption r describes region r
        supervised = [tiny_tokenizer.decode(item["input_ids"][s]) for s in _spans(item["labels"])]
        assert len(supervised) == len(pm)
        for r, (text, ann_id) in enumerate(zip(supervised, region_anns)):
            assert text.endswith("<|im_end|>") and text[: -len("<|im_end|>")] in raws[ann_id]
        decoded = tiny_tokenizer.decode(item["input_ids"])
        for r in range(len(pm)):
            assert REGION_CAPTION_QUESTION.format(index=r + 1) in decoded


def test_dataloader_workers_and_collate(make_refer):
    from torch.utils.data import DataLoader

    from sa2va.datasets.collate import sa2va_collate_fn

    ds = make_refer(split="val")
    batches = list(DataLoader(ds, batch_size=2, num_workers=2, collate_fn=sa2va_collate_fn))
    assert sum(len(b["data"]["masks"]) for b in batches) == len(ds)
    data = batches[0]["data"]
    assert data["pixel_values"].shape[0] == sum(data["num_tiles"])


def test_requires_sam2_processor_and_known_split(make_refer):
    with pytest.raises(ValueError, match="extra_image_processor"):
        make_refer(extra_image_processor=None)
    with pytest.raises(ValueError, match="testA"):
        make_refer(split="nope")


def test_uint8_tiles_option_keeps_everything_else(make_refer):
    """uint8_tiles=True: the same item with uint8 pixel_values that normalise to the float ones."""
    from sa2va.datasets.image_processing import normalize_tiles

    a, b = make_refer(seed=3)[0], make_refer(seed=3, uint8_tiles=True)[0]
    assert b["pixel_values"].dtype == torch.uint8
    torch.testing.assert_close(normalize_tiles(b["pixel_values"]), a["pixel_values"], rtol=0, atol=0)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["masks"], b["masks"])
