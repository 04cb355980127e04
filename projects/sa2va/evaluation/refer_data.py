"""Where the REFER evaluation data of a run lives: from the training config, or from a data root.

RefCOCO and RefCOCO+ use ``refs(unc).p`` with splits val / testA / testB; RefCOCOg uses ``refs(umd).p`` with
val / test (the original evaluation script offered a ``test`` split for RefCOCO, which has none).

From a config: the ``ReferSegmDataset`` / ``ReferRegionCaptionDataset`` entry of the training data whose
``data_root`` directory (or ``name``) is the dataset's name gives ``data_root``, ``ann_file``, ``split_file``,
``data_prefix`` and tiling; a dataset the config does not train on is looked for next to one it does
(``.../ref_seg/refcoco`` -> ``.../ref_seg/refcocog``, same image folder), the layout of the original configs and of
the demo. From ``data_root``: ``data_root/<name>`` (or ``data_root`` itself) with images under ``img_dir``
(default ``coco2014/train2014/`` inside it, as the original configs).
"""
from __future__ import annotations

import os
import os.path as osp
from collections.abc import Mapping

from ..datasets.image_processing import DirectResize
from ..datasets.refer import ReferSegmDataset
from ..inference.loading import iter_dataset_configs
from ..config_utils import type_name
from ..registry import BUILDER

SPLITS = {"refcoco": ("val", "testA", "testB"), "refcoco+": ("val", "testA", "testB"), "refcocog": ("val", "test")}
SPLIT_FILES = {"refcoco": "refs(unc).p", "refcoco+": "refs(unc).p", "refcocog": "refs(umd).p"}
ALIASES = {"refcoco_plus": "refcoco+", "refcocoplus": "refcoco+"}
_REFER_TYPES = ("ReferSegmDataset", "ReferRegionCaptionDataset")
_COPIED = ("data_root", "ann_file", "split_file", "data_prefix", "tile_size", "max_dynamic_patch",
           "min_dynamic_patch", "use_thumbnail", "template")


def canonical_name(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in SPLITS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(SPLITS)}")
    return name


def check_split(name: str, split: str) -> None:
    if split not in SPLITS[name]:
        raise ValueError(f"{name} has no split {split!r}; its evaluation splits are {list(SPLITS[name])}")


def _refer_configs(cfg) -> list[Mapping]:
    return [d for d in iter_dataset_configs(cfg) if type_name(d["type"]) in _REFER_TYPES and "data_root" in d]


def _root_name(data_root: str) -> str:
    return osp.basename(osp.normpath(os.fspath(data_root)))


def dataset_args_from_config(cfg, name: str) -> dict:
    """Constructor arguments of the evaluation dataset ``name`` as the config's training data lays it out."""
    found = _refer_configs(dict(cfg.items()))  # top-level dataset variables and the train_dataloader
    if not found:
        raise ValueError("the config has no ReferSegmDataset / ReferRegionCaptionDataset entry to take the data "
                         "layout from; pass --data-root (and --img-dir)")
    exact = [d for d in found if _root_name(d["data_root"]) == name or d.get("name") == name]
    if exact:
        seg = [d for d in exact if type_name(d["type"]) == "ReferSegmDataset"]
        src = (seg or exact)[0]
        args = {k: src[k] for k in _COPIED if k in src}
        if _root_name(src["data_root"]) != name:
            args["data_root"] = src["data_root"]
    else:  # a sibling of a dataset the config trains on
        src = found[0]
        args = {k: src[k] for k in _COPIED if k in src}
        args["data_root"] = osp.join(osp.dirname(osp.normpath(os.fspath(src["data_root"]))), name)
        args.pop("split_file", None)
    args.setdefault("split_file", SPLIT_FILES[name])
    return args


def dataset_args_from_root(name: str, data_root: str, img_dir: str | None = None) -> dict:
    root = osp.join(data_root, name) if osp.isdir(osp.join(data_root, name)) else data_root
    img = img_dir if img_dir is not None else "coco2014/train2014/"
    return dict(data_root=root, split_file=SPLIT_FILES[name],
                data_prefix=dict(img_path=osp.abspath(img) if img_dir is not None else img))


def build_refer_eval_dataset(name: str, split: str, tokenizer, cfg=None, data_root: str | None = None,
                             img_dir: str | None = None, sam2_size: int = 1024, **overrides) -> ReferSegmDataset:
    """The ``ReferSegmDataset`` of ``name``/``split`` for evaluation (use its ``eval_view()``).

    ``data_root`` (with optional ``img_dir``) wins over the config; ``overrides`` replace constructor arguments.
    The template and tiling come from the config's dataset entry when there is one.
    """
    name = canonical_name(name)
    check_split(name, split)
    if data_root is not None:
        args = dataset_args_from_root(name, data_root, img_dir)
        if cfg is not None:  # keep the config's tiling / template
            try:
                cfg_args = dataset_args_from_config(cfg, name)
                args.update({k: v for k, v in cfg_args.items() if k not in ("data_root", "split_file",
                                                                              "data_prefix", "ann_file")})
            except ValueError:
                pass
    elif cfg is not None:
        args = dataset_args_from_config(cfg, name)
        if img_dir is not None:
            args["data_prefix"] = dict(img_path=osp.abspath(img_dir))
    else:
        raise ValueError(f"{name}: no data location: give a config with REFER datasets or a data root")
    args.update(overrides)
    args.update(split=split, tokenizer=tokenizer, name=f"{name}_{split}",
                extra_image_processor=dict(type=DirectResize, target_length=sam2_size))
    if not osp.isdir(args["data_root"]):
        raise FileNotFoundError(f"{name}: data_root {args['data_root']} does not exist")
    return BUILDER.build(dict(type=ReferSegmDataset, **args))
