"""Session fixtures for the dataset tests: a tiny InternVL checkpoint (for its tokenizer) and the synthetic data,
written once per session; plus factories that copy parts of the synthetic data so a test can break them."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

TILE = 112      # tiny model tile size
TPT = 16        # tokens per 112-px tile
GRID = 4        # prompt grid of a 112-px tile
SAM2_SIZE = 128  # small SAM2 input keeps the tests fast


@pytest.fixture(scope="session")
def tiny_internvl(tmp_path_factory) -> str:
    from sa2va.tiny_models import make_tiny_internvl

    return str(make_tiny_internvl(tmp_path_factory.mktemp("tiny_internvl")))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_internvl):
    from sa2va.tokenizer import build_tokenizer

    return build_tokenizer(tiny_internvl)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> dict:
    from sa2va.datasets.synthetic import make_synthetic_data

    return make_synthetic_data(tmp_path_factory.mktemp("synthetic"), seed=0, num_images=24)


@pytest.fixture(scope="session")
def common(tiny_tokenizer) -> dict:
    """Arguments every dataset of these tests takes."""
    return dict(tokenizer=tiny_tokenizer, template="qwen_chat", max_length=4096, tile_size=TILE)


@pytest.fixture(scope="session")
def sam2_processor():
    from sa2va.datasets.image_processing import DirectResize

    return DirectResize(SAM2_SIZE)


@pytest.fixture
def make_refer(synthetic, common, sam2_processor):
    """``make_refer(cls=ReferSegmDataset, name='refcoco', root=None, **kwargs)`` with the synthetic files."""
    from sa2va.datasets.refer import ReferSegmDataset

    def make(cls=ReferSegmDataset, name="refcoco", root=None, image_dir=None, **kwargs):
        args = dict(common, data_root=root or synthetic[name],
                    data_prefix=dict(img_path=image_dir or synthetic["image_dir"]),
                    split_file="refs(umd).p" if name == "refcocog" else "refs(unc).p")
        if cls is ReferSegmDataset:
            args["extra_image_processor"] = sam2_processor
        args.update(kwargs)
        return cls(**args)

    return make


@pytest.fixture
def refer_copy(synthetic, tmp_path):
    """A writable copy of ``ref_seg/<name>``: returns (root, refs list, instances dict, save()) for editing."""

    def copy(name="refcoco"):
        root = tmp_path / name
        shutil.copytree(synthetic[name], root)
        split_file = "refs(umd).p" if name == "refcocog" else "refs(unc).p"
        with open(root / split_file, "rb") as f:
            refs = pickle.load(f)
        with open(root / "instances.json") as f:
            instances = json.load(f)

        def save():
            with open(root / split_file, "wb") as f:
                pickle.dump(refs, f)
            with open(root / "instances.json", "w") as f:
                json.dump(instances, f)

        return root, refs, instances, save

    return copy


@pytest.fixture
def image_dir_copy(synthetic, tmp_path) -> Path:
    """A writable copy of the synthetic image folder."""
    out = tmp_path / "images"
    shutil.copytree(synthetic["image_dir"], out)
    return out


def _coco_decode(segmentation, height, width):
    """Reference decode, as pycocotools' COCO.annToMask: polygons merged, uncompressed RLE converted."""
    import numpy as np
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return np.asarray(mask_utils.decode(rle), dtype=np.uint8)


@pytest.fixture(scope="session")
def coco_decode():
    return _coco_decode


@pytest.fixture(scope="session")
def token_ids(tiny_tokenizer) -> dict:
    names = ["[SEG]", "<IMG_CONTEXT>", "<img>", "</img>", "<vp>", "</vp>"]
    return {n: tiny_tokenizer.convert_tokens_to_ids(n) for n in names}


@pytest.fixture(scope="session")
def region_token_counts(token_ids):
    """``input_ids`` -> number of <IMG_CONTEXT> inside each <vp>...</vp> group, in order."""

    def counts(input_ids) -> list[int]:
        out, inside = [], False
        for t in input_ids.tolist():
            if t == token_ids["<vp>"]:
                inside = True
                out.append(0)
            elif t == token_ids["</vp>"]:
                inside = False
            elif inside and t == token_ids["<IMG_CONTEXT>"]:
                out[-1] += 1
        return out

    return counts
