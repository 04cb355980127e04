"""tools/check_data.py on synthetic data: a clean copy passes, a broken copy fails naming the record."""
import importlib.util
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest

from encoding_helpers import tiny_internvl_dir

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(Path(__file__).with_name("check_data_config.py"))


def _tool():
    spec = importlib.util.spec_from_file_location("check_data_tool", REPO / "tools" / "check_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from sa2va.datasets.synthetic import make_synthetic_data

    return make_synthetic_data(tmp_path_factory.mktemp("synthetic"), seed=0, num_images=12)["root"]


def _options(root, *extra):
    d = "train_dataloader.dataset.datasets"
    images = f"{root}/coco2014/train2014"
    opts = [f"{d}.0.data_root={root}/ref_seg/refcoco", f"{d}.0.data_prefix.img_path={images}",
            f"{d}.1.data_root={root}/ref_seg/refcocog", f"{d}.1.data_prefix.img_path={images}",
            f"{d}.2.data_path={root}/osprey/osprey_conversation.json", f"{d}.2.image_folder=[{images}]",
            f"{d}.3.data_root={root}/custom"]
    opts += [f"{d}.{k}.tokenizer.pretrained_model_name_or_path={tiny_internvl_dir()}" for k in range(4)]
    return [CONFIG, "--cfg-options", *opts, *extra]


def _first_train_image(root):
    """(image_id, file_name) of the first train ref of the synthetic refcoco."""
    with open(os.path.join(root, "ref_seg", "refcoco", "refs(unc).p"), "rb") as f:
        refs = pickle.load(f)
    with open(os.path.join(root, "ref_seg", "refcoco", "instances.json")) as f:
        images = {im["id"]: im["file_name"] for im in json.load(f)["images"]}
    image_id = next(r["image_id"] for r in refs if r["split"] == "train")
    return image_id, images[image_id]


def test_clean_data_passes(synthetic, capsys):
    assert _tool().main(_options(synthetic)) == 0
    out = capsys.readouterr().out
    for text in ("== refcoco (ReferSegmDataset) ==", "== refcocog_caption (ReferRegionCaptionDataset) ==",
                 "== osprey_conversation (OspreyDataset) ==", "== custom (CustomJsonDataset) ==",
                 "tokens p50/p90/p99/max", "masks per sample", "regions per sample", "truncated samples",
                 "images missing", "== epoch composition ==", "OK: every record was read"):
        assert text in out, text
    assert "ERROR" not in out


@pytest.fixture()
def broken(synthetic, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(synthetic, root)
    image_id, file_name = _first_train_image(root)
    os.remove(root / "coco2014" / "train2014" / file_name)
    return str(root), image_id, file_name


def test_missing_image_fails_naming_the_record(broken, capsys):
    root, image_id, file_name = broken
    assert _tool().main(_options(root)) == 1
    out = capsys.readouterr().out
    error_lines = [line for line in out.splitlines() if "ERROR" in line]
    assert error_lines and any(f"image_id={image_id}" in line and file_name in line for line in error_lines)
    assert "FAILED" in out


def test_missing_image_skipped_when_asked(broken, capsys):
    root, _, _ = broken
    d = "train_dataloader.dataset.datasets"
    code = _tool().main(_options(root, *[f"{d}.{k}.skip_bad_records=True" for k in range(4)]))
    out = capsys.readouterr().out
    assert code == 0, out
    refcoco = out.split("== refcoco (")[1].split("==\n")[1]
    assert re.search(r"images missing\s+1\n", refcoco) and re.search(r"skipped\s+1 ", refcoco)
    assert "missing_image" in refcoco


def test_build_failure_is_reported(tmp_path, capsys):
    assert _tool().main(_options(str(tmp_path / "nowhere"))) == 1
    assert "BUILD FAILED" in capsys.readouterr().out
