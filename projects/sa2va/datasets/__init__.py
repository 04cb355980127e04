"""Datasets, encoding, image processing, batching and sampling for Sa2VA training.

The encoding / image / batching modules are imported here directly. The dataset-class modules are imported
through their own ``__all__`` when present, so this package imports even while one of them is being written.
"""
from __future__ import annotations

import importlib
import importlib.util

from .collate import sa2va_collate_fn
from .concat import ConcatDataset, dataset_lengths, dataset_name
from .encoding import IGNORE_INDEX, encode_conversation, image_token_string, region_token_string
from .image_processing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DirectResize,
    TileProcessor,
    num_tiles_for_size,
    prompt_grid_size,
    sam2_image_tensor,
    tokens_per_tile,
)
from .curriculum import TaskCurriculumSampler
from .samplers import EpochDefaultSampler, EpochIndex, LengthGroupedSampler
from .templates import PROMPT_TEMPLATES, get_template, resolve_template, template_from_tokenizer

__all__ = [
    "sa2va_collate_fn",
    "ConcatDataset", "dataset_lengths", "dataset_name",
    "IGNORE_INDEX", "encode_conversation", "image_token_string", "region_token_string",
    "IMAGENET_MEAN", "IMAGENET_STD", "DirectResize", "TileProcessor", "num_tiles_for_size", "prompt_grid_size",
    "sam2_image_tensor", "tokens_per_tile",
    "EpochDefaultSampler", "EpochIndex", "LengthGroupedSampler", "TaskCurriculumSampler",
    "PROMPT_TEMPLATES", "get_template", "resolve_template", "template_from_tokenizer",
]

# Dataset classes and their helpers (errors, masks, texts, sample building, REFER, Osprey, custom json,
# synthetic data).
_DATASET_MODULES = ("errors", "masks", "text", "samples", "base", "refer", "osprey", "custom_json", "synthetic")

for _name in _DATASET_MODULES:
    if importlib.util.find_spec(f"{__name__}.{_name}") is None:
        continue
    _module = importlib.import_module(f"{__name__}.{_name}")
    _public = getattr(_module, "__all__", [n for n in vars(_module) if not n.startswith("_")
                                           and getattr(vars(_module)[n], "__module__", None) == _module.__name__])
    globals().update({n: getattr(_module, n) for n in _public})
    __all__ += list(_public)
del _name
