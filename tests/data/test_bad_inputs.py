"""One test per kind of bad (or merely unusual) input: the error names file, record id and field, or, with
``skip_bad_records=True``, the record is skipped and counted."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sa2va.datasets.base import load_image
from sa2va.datasets.errors import BadRecordError
from sa2va.datasets.masks import decode_segmentation
from sa2va.datasets.osprey import OspreyDataset
from sa2va.datasets.refer import ReferSegmDataset


def _record_index(ds, min_refs=1, image_id=None):
    return next(i for i, r in enumerate(ds.records)
                if len(r["refs"]) >= min_refs and (image_id is None or r["image_id"] == image_id))


def _assert_names(error, *parts):
    message = str(error)
    for part in parts:
        assert part in message, (part, message)


# ------------------------------------------------------------------------------------------------ images
def test_missing_image_file(make_refer, image_dir_copy):
    ds = make_refer(image_dir=str(image_dir_copy))
    rec = ds.records[0]
    os.remove(image_dir_copy / rec["file_name"])
    with pytest.raises(BadRecordError) as e:
        ds[0]
    _assert_names(e.value, "instances.json", f"record image_id={rec['image_id']}", "'file_name'", "not found",
                  rec["file_name"])
    skipping = make_refer(image_dir=str(image_dir_copy), skip_bad_records=True)
    item = skipping[0]
    assert f"image_id={skipping.records[1]['image_id']}" in item["record_id"]  # moved on to the next record
    again = skipping[0]
    assert skipping.skip_counts == {"missing_image": 1}  # counted once per record
    # the count travels with the items (reported once) so the training loop sees it from dataloader workers
    name = skipping.name
    assert item["data_issues"] == {f"{name}: skipped: missing_image": 1} and again["data_issues"] == {}
    from sa2va.datasets.collate import sa2va_collate_fn
    assert sa2va_collate_fn([item, again])["data"]["data_issues"] == {f"{name}: skipped: missing_image": 1}


def test_corrupt_image(make_refer, image_dir_copy):
    ds = make_refer(image_dir=str(image_dir_copy), skip_bad_records=False)
    garbage, truncated = ds.records[0], ds.records[1]
    (image_dir_copy / garbage["file_name"]).write_bytes(b"this is not a jpeg" * 10)
    data = (image_dir_copy / truncated["file_name"]).read_bytes()
    (image_dir_copy / truncated["file_name"]).write_bytes(data[: len(data) // 3])
    for i, rec in enumerate((garbage, truncated)):
        with pytest.raises(BadRecordError) as e:
            ds[i]
        _assert_names(e.value, "instances.json", f"image_id={rec['image_id']}", "'file_name'", "cannot read image")
        assert e.value.reason == "corrupt_image"
    skipping = make_refer(image_dir=str(image_dir_copy), skip_bad_records=True)
    assert f"image_id={skipping.records[2]['image_id']}" in skipping[0]["record_id"]
    assert skipping.skip_counts == {"corrupt_image": 2}


def test_grayscale_and_rgba_png_work(synthetic, common, tmp_path):
    # the synthetic set has a grayscale JPEG and an RGBA PNG; every Osprey entry covers one image
    entries = json.load(open(f"{synthetic['osprey']}/osprey_conversation.json"))
    modes = {}
    for k, entry in enumerate(entries):
        with Image.open(os.path.join(synthetic["image_dir"], entry["file_name"])) as im:
            modes[im.mode] = k
    assert {"L", "RGBA"} <= set(modes)
    ds = OspreyDataset(f"{synthetic['osprey']}/osprey_conversation.json", synthetic["image_dir"], **common)
    for mode in ("L", "RGBA"):
        item = ds[modes[mode]]
        assert item["pixel_values"].shape[1:] == (3, 112, 112) and torch.isfinite(item["pixel_values"]).all()
    # other modes through the loader
    base = Image.open(os.path.join(synthetic["image_dir"], entries[0]["file_name"])).convert("RGB")
    for mode, ext in [("P", "png"), ("LA", "png"), ("CMYK", "jpg"), ("I;16", "png")]:
        path = tmp_path / f"img_{mode.replace(';', '')}.{ext}"
        base.convert(mode).save(path)
        image = load_image(path, file="ann.json", record_id=1, expected_size=base.size)
        assert image.mode == "RGB" and image.size == base.size


def test_image_size_differs_from_annotation(make_refer, image_dir_copy):
    ds = make_refer(image_dir=str(image_dir_copy))
    rec = ds.records[0]
    path = image_dir_copy / rec["file_name"]
    Image.open(path).resize((rec["width"] // 2, rec["height"] // 2)).save(path, format=Image.open(path).format)
    with pytest.raises(BadRecordError) as e:
        ds[0]
    _assert_names(e.value, "instances.json", f"image_id={rec['image_id']}", "'width/height'",
                  f"{rec['width']}x{rec['height']}")


# ------------------------------------------------------------------------------------------------ refs
def test_ref_whose_ann_id_is_not_in_instances(refer_copy, make_refer):
    root, refs, instances, save = refer_copy()
    ref = next(r for r in refs if r["split"] == "train")
    ref["ann_id"] = 987654
    save()
    with pytest.raises(BadRecordError) as e:
        make_refer(root=str(root))
    _assert_names(e.value, "refs(unc).p", f"record ref_id={ref['ref_id']}", "'ann_id'", "987654")
    ds = make_refer(root=str(root), skip_bad_records=True)
    assert ds.skip_counts == {"unknown_ann": 1}
    assert ref["ref_id"] not in {r["ref_id"] for rec in ds.records for r in rec["refs"]}


def test_images_with_zero_refs_in_the_split(refer_copy, make_refer):
    root, refs, instances, save = refer_copy()
    train_images = {r["image_id"] for r in refs if r["split"] == "train"}
    ds = make_refer(root=str(root), split="train")
    assert {rec["image_id"] for rec in ds.records} == train_images  # images with refs only elsewhere: no item
    unreferenced = instances["images"][-1]["id"]
    assert all(unreferenced not in {rec["image_id"] for rec in make_refer(root=str(root), split=s).records}
               for s in ("train", "val", "testA", "testB"))
    for r in refs:  # a split without any ref is an error naming the file and the splits it has
        if r["split"] == "testB":
            r["split"] = "testA"
    save()
    with pytest.raises(ValueError) as e:
        make_refer(root=str(root), split="testB")
    _assert_names(e.value, "refs(unc).p", "split='testB'", "testA")


def test_odd_whitespace_and_unicode_sentences_are_normalised(refer_copy, make_refer, tiny_tokenizer):
    root, refs, instances, save = refer_copy()
    ds = make_refer(root=str(root))
    i = _record_index(ds)
    image_refs = {r["ref_id"] for r in ds.records[i]["refs"]}
    for r in refs:
        if r["ref_id"] in image_refs:
            r["sentences"] = [dict(raw="  The\u00a0RED\tｃｉｒｃｌｅ\u200b on  the\nleft.  ", sent="the red circle")]
    save()
    ds = make_refer(root=str(root), seed=0)
    assert all(r["sentences"] == ["the red circle on the left"] for r in ds.records[i]["refs"])
    text = tiny_tokenizer.decode(ds[i]["input_ids"])
    assert "the red circle on the left" in text and "\u200b" not in text and "ｃ" not in text
    # a sentence that is empty after normalisation is a bad record (or left out and counted)
    first = next(r for r in refs if r["ref_id"] in image_refs)
    first["sentences"] = [dict(raw=" \u200b\t ", sent="")] + first["sentences"]
    save()
    with pytest.raises(BadRecordError) as e:
        make_refer(root=str(root))
    _assert_names(e.value, "refs(unc).p", f"ref_id={first['ref_id']}", "'sentences[0]'")
    skipping = make_refer(root=str(root), skip_bad_records=True)
    assert skipping.skip_counts == {"empty_sentence": 1}


# ------------------------------------------------------------------------------------------------ masks
@pytest.mark.parametrize("segmentation, reason, words", [
    ([[10, 10, 50, 50]], "bad_polygon", "at least 3 points"),
    ([[10, 10, 50, 50, 90]], "bad_polygon", "even number"),
    ([[0, 0, 10, 10, 20, 20]], "bad_polygon", "zero area"),  # collinear
    ([], "bad_segmentation", "non-empty list"),
    ([[10, 10, 50, 10, 50, 50], "x"], "bad_polygon", "polygon 1"),
])
def test_empty_or_degenerate_polygon(segmentation, reason, words, refer_copy, make_refer):
    with pytest.raises(BadRecordError) as e:
        decode_segmentation(segmentation, 480, 640, file="instances.json", record_id="ann_id=7")
    assert e.value.reason == reason
    _assert_names(e.value, "instances.json", "ann_id=7", "'segmentation'", words)
    # in a dataset: an error naming the annotation, or the ref is left out and counted
    root, refs, instances, save = refer_copy()
    ds = make_refer(root=str(root))
    i = _record_index(ds, min_refs=2)
    victim = ds.records[i]["refs"][0]
    next(a for a in instances["annotations"] if a["id"] == victim["ann_id"])["segmentation"] = segmentation
    save()
    with pytest.raises(BadRecordError) as e:
        make_refer(root=str(root), seed=0)[i]
    _assert_names(e.value, "instances.json", f"ann_id={victim['ann_id']}", f"ref_id={victim['ref_id']}",
                  "'segmentation'")
    skipping = make_refer(root=str(root), skip_bad_records=True, seed=0)
    item = skipping[i]
    assert len(item["masks"]) == len(ds.records[i]["refs"]) - 1 and skipping.skip_counts == {reason: 1}


def test_polygon_outside_the_image(refer_copy, make_refer):
    outside = [[700, 500, 800, 500, 800, 600]]
    with pytest.raises(BadRecordError) as e:
        decode_segmentation(outside, 480, 640, file="instances.json", record_id="ann_id=3")
    assert e.value.reason == "polygon_outside"
    _assert_names(e.value, "instances.json", "ann_id=3", "'segmentation'", "outside the 640x480 image")
    # partly outside is fine: clipped to the image
    mask = decode_segmentation([[600, 400, 700, 400, 700, 500, 600, 500]], 480, 640, file="f", record_id=1)
    assert mask[400:, 600:].all() and mask.sum() == 80 * 40
    root, refs, instances, save = refer_copy()
    ds = make_refer(root=str(root))
    i = _record_index(ds, min_refs=2)
    victim = ds.records[i]["refs"][0]
    next(a for a in instances["annotations"] if a["id"] == victim["ann_id"])["segmentation"] = outside
    save()
    skipping = make_refer(root=str(root), skip_bad_records=True, seed=0)
    skipping[i]
    assert skipping.skip_counts == {"polygon_outside": 1}


def test_rle_compressed_and_uncompressed_work(synthetic, make_refer, coco_decode):
    instances = json.load(open(f"{synthetic['refcoco']}/instances.json"))
    images = {im["id"]: im for im in instances["images"]}
    crowd = [a for a in instances["annotations"] if isinstance(a["segmentation"], dict)]
    assert {type(a["segmentation"]["counts"]) for a in crowd} == {str, list}
    for a in crowd:
        im = images[a["image_id"]]
        gt = coco_decode(a["segmentation"], im["height"], im["width"])
        mask = decode_segmentation(a["segmentation"], im["height"], im["width"], file="f", record_id=a["id"])
        assert gt.any() and np.array_equal(mask, gt)
        if isinstance(a["segmentation"]["counts"], str):  # bytes counts too
            as_bytes = dict(a["segmentation"], counts=a["segmentation"]["counts"].encode())
            assert np.array_equal(decode_segmentation(as_bytes, im["height"], im["width"], file="f", record_id=1), gt)
        with pytest.raises(BadRecordError, match="RLE size"):
            decode_segmentation(a["segmentation"], im["height"] + 1, im["width"], file="f", record_id=a["id"])
    # and through the dataset: every crowd object referred to in the split shows up among the item's masks
    by_id = {a["id"]: a for a in crowd}
    ds = make_refer(split="train", seed=0)
    checked = 0
    for i, rec in enumerate(ds.records):
        for ref in rec["refs"]:
            if ref["ann_id"] in by_id:
                gt = coco_decode(by_id[ref["ann_id"]]["segmentation"], rec["height"], rec["width"])
                assert any(np.array_equal(m.numpy(), gt) for m in ds[i]["masks"])
                checked += 1
    assert checked


# ------------------------------------------------------------------------------------------------ Osprey
def _osprey_copy(synthetic, tmp_path, edit):
    entries = json.load(open(f"{synthetic['osprey']}/osprey_conversation.json"))
    edit(entries)
    path = tmp_path / "osprey_conversation.json"
    path.write_text(json.dumps(entries))
    return str(path)


def test_osprey_region_with_empty_grid_mask(synthetic, common, tmp_path):
    def edit(entries):  # a 10x10 square near the corner: no 4x4 grid sample point inside
        entries[0]["annotation"][1]["segmentation"] = [[5, 5, 15, 5, 15, 15, 5, 15]]

    path = _osprey_copy(synthetic, tmp_path, edit)
    ds = OspreyDataset(path, synthetic["image_dir"], **common)
    with pytest.raises(BadRecordError) as e:
        ds[0]
    _assert_names(e.value, "osprey_conversation.json", "record #0 (id=1)", "'annotation[1].segmentation'",
                  "empty on the 4x4 prompt grid")
    skipping = OspreyDataset(path, synthetic["image_dir"], skip_bad_records=True, **common)
    assert "record #1" in skipping[0]["record_id"] and skipping.skip_counts == {"empty_region_mask": 1}


def test_osprey_text_mentions_a_region_that_does_not_exist(synthetic, common, tmp_path):
    def edit(entries):
        entries[2]["conversations"][0]["value"] += " Compare it with <region9>."

    ds = OspreyDataset(_osprey_copy(synthetic, tmp_path, edit), synthetic["image_dir"], **common)
    with pytest.raises(BadRecordError) as e:
        ds[2]
    _assert_names(e.value, "osprey_conversation.json", "record #2", "'conversations'", "[9]")


# ------------------------------------------------------------------------------------------------ length
def test_text_longer_than_max_length(synthetic, common, tmp_path):
    def edit(entries):
        entries[0]["conversations"][0]["value"] += " very" * 3000

    path = _osprey_copy(synthetic, tmp_path, edit)
    args = dict(common, max_length=600)
    with pytest.raises(BadRecordError) as e:
        OspreyDataset(path, synthetic["image_dir"], **args)[0]
    _assert_names(e.value, "osprey_conversation.json", "record #0", "'text'", "max_length=600")
    skipping = OspreyDataset(path, synthetic["image_dir"], skip_bad_records=True, **args)
    assert "record #1" in skipping[0]["record_id"] and skipping.skip_counts == {"too_long": 1}


def test_trailing_turns_over_max_length_are_dropped_and_counted(synthetic, common, tmp_path):
    def edit(entries):
        entries[0]["conversations"][-1]["value"] += " very" * 3000  # the last answer only

    path = _osprey_copy(synthetic, tmp_path, edit)
    ds = OspreyDataset(path, synthetic["image_dir"], **dict(common, max_length=600))
    item = ds[0]
    regions = len(json.loads(Path(path).read_text())[0]["annotation"])
    assert len(item["input_ids"]) <= 600 and item["prompt_masks"].shape[0] == regions >= 2  # header regions kept
    assert ds.truncations["samples"] == 1 and ds.truncations["turns"] == 1


def test_bad_record_error_crosses_dataloader_workers(make_refer, image_dir_copy):
    from torch.utils.data import DataLoader

    ds = make_refer(image_dir=str(image_dir_copy))
    os.remove(image_dir_copy / ds.records[0]["file_name"])
    with pytest.raises(BadRecordError, match="'file_name'"):
        next(iter(DataLoader(ds, batch_size=1, num_workers=1, collate_fn=lambda b: b)))


def test_missing_annotation_files(tmp_path, common, sam2_processor):
    with pytest.raises(FileNotFoundError, match=r"refs\(unc\)\.p not found"):
        ReferSegmDataset(str(tmp_path), extra_image_processor=sam2_processor, **common)
