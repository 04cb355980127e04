"""The synthetic data generator: layout, formats, determinism, and the CLI."""
from __future__ import annotations

import filecmp
import importlib.util
import json
import pickle
from collections import Counter
from pathlib import Path

from PIL import Image

from sa2va.datasets.masks import to_prompt_grid
from sa2va.datasets.synthetic import make_synthetic_data


def test_layout_and_formats(synthetic, coco_decode):
    root = Path(synthetic["root"])
    for rel in ["ref_seg/refcoco/instances.json", "ref_seg/refcoco/refs(unc).p", "ref_seg/refcocog/instances.json",
                "ref_seg/refcocog/refs(umd).p", "osprey/osprey_conversation.json",
                "osprey/osprey_detail_description.json", "osprey/osprey_short_form.json",
                "custom/annotations.json"]:
        assert (root / rel).is_file(), rel
    instances = json.loads((root / "ref_seg/refcoco/instances.json").read_text())
    assert len(instances["images"]) == 24
    # images: mostly 640x480 JPEG; other sizes; one grayscale JPEG; one RGBA PNG
    modes, sizes = Counter(), Counter()
    for im in instances["images"]:
        with Image.open(root / "coco2014/train2014" / im["file_name"]) as pil:
            assert pil.size == (im["width"], im["height"])
            modes[(pil.format, pil.mode)] += 1
            sizes[pil.size] += 1
    assert modes[("JPEG", "L")] == 1 and modes[("PNG", "RGBA")] == 1
    assert sizes[(640, 480)] >= 12 and len(sizes) >= 3
    # segmentations: polygons (some with two parts), compressed and uncompressed crowd RLE
    kinds = Counter()
    for a in instances["annotations"]:
        s = a["segmentation"]
        kinds["rle_" + type(s["counts"]).__name__ if isinstance(s, dict) else f"poly{len(s)}"] += 1
        assert a["iscrowd"] == isinstance(s, dict)
    assert kinds["rle_str"] and kinds["rle_list"] and kinds["poly1"] and kinds["poly2"]
    # splits
    for name, split_file, splits in [("refcoco", "refs(unc).p", {"train", "val", "testA", "testB"}),
                                     ("refcocog", "refs(umd).p", {"train", "val", "test"})]:
        with open(root / "ref_seg" / name / split_file, "rb") as f:
            refs = pickle.load(f)
        assert {r["split"] for r in refs} == splits
        split_of = {}
        for r in refs:  # all refs of an image are in one split
            assert split_of.setdefault(r["image_id"], r["split"]) == r["split"]
            assert all(s["raw"] and s["sent"] for s in r["sentences"])
        assert instances["images"][-1]["id"] not in split_of  # the image without refs


def test_every_object_covers_a_prompt_grid_cell(synthetic, coco_decode):
    """Objects sit on grid sample points, so region masks are never empty for 112- or 448-px tiles."""
    instances = json.loads(Path(synthetic["refcoco"], "instances.json").read_text())
    images = {im["id"]: im for im in instances["images"]}
    for a in instances["annotations"]:
        im = images[a["image_id"]]
        mask = coco_decode(a["segmentation"], im["height"], im["width"])
        for grid in (4, 16):
            assert to_prompt_grid(mask[None], grid).any(), (a["id"], grid)


def _load_cli():
    path = Path(__file__).resolve().parents[2] / "tools" / "make_synthetic_data.py"
    spec = importlib.util.spec_from_file_location("make_synthetic_data_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_same_tree(cmp: filecmp.dircmp) -> None:
    assert not cmp.left_only and not cmp.right_only
    _, mismatch, errors = filecmp.cmpfiles(cmp.left, cmp.right, cmp.common_files, shallow=False)
    assert not mismatch and not errors, mismatch
    for sub in cmp.subdirs.values():
        _assert_same_tree(sub)


def test_deterministic_by_seed_and_cli(synthetic, tmp_path, capsys):
    again = make_synthetic_data(tmp_path / "again", seed=0, num_images=24)
    _assert_same_tree(filecmp.dircmp(synthetic["root"], again["root"]))  # byte-identical, images included
    paths = _load_cli().main([str(tmp_path / "cli"), "--seed", "1", "--num-images", "6"])
    assert json.loads(capsys.readouterr().out) == paths
    other = json.loads(Path(paths["refcoco"], "instances.json").read_text())
    first = json.loads(Path(synthetic["refcoco"], "instances.json").read_text())
    assert len(other["images"]) == 6 and other["annotations"][0] != first["annotations"][0]


def test_images_drawn_in_parallel_match_a_smaller_serial_set(synthetic, tmp_path):
    """128 images are drawn by a process pool, 24 serially: image i depends on (seed, i) only."""
    from sa2va.datasets import synthetic as synth

    big = make_synthetic_data(tmp_path / "big", seed=0, num_images=128)
    small_dir, big_dir = Path(synthetic["image_dir"]), Path(big["image_dir"])
    names = sorted(p.name for p in small_dir.iterdir())
    assert len(names) == 24 and len(list(big_dir.iterdir())) == 128
    _, mismatch, errors = filecmp.cmpfiles(small_dir, big_dir, names, shallow=False)
    assert not mismatch and not errors, mismatch
    objects = synth._write_image((0, 3, synth._image_specs(24)[3], str(tmp_path / "one.jpg")))
    assert (tmp_path / "one.jpg").read_bytes() == (small_dir / names[3]).read_bytes()
    assert 2 <= len(objects) <= 4 and {o["shape"] for o in objects} <= set(synth.SHAPES)
