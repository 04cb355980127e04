"""What every image dataset of this package shares: arguments, image loading, bad-record skipping, repeats,
per-item randomness and the length list for the sampler.

A subclass reads its annotation files in ``__init__`` into ``self.records`` (one entry per item, cheap to hold,
no pixels) and implements

* ``prepare(record_index, rng) -> dict``: one contract item (docs/batch_layout.md), via ``self.builder``;
* ``estimate_length(record_index) -> int``: its token count without loading the image.

Bad records: ``prepare`` raises :class:`~sa2va.datasets.errors.BadRecordError` (file, record id, field). With
``skip_bad_records=False`` (default) it propagates; with True it is logged, counted in ``self.skip_counts``
(``reason -> n``, each bad record once per process) and ``__getitem__`` moves deterministically to the next good
record (index + 1, + 2, ... wrapping around). Truncations are counted in ``self.truncations``.

Lengths (``self.lengths`` = ``self.modality_length``, one per item, repeats included): estimated at construction
from the annotation alone: exact image tokens from the stored width/height (upper bound when the format stores no
size), text characters / 4, template tokens per turn. Positive: every item here has an image.

Randomness (which refs, which sentence, which question): item ``i`` is a pure function of ``(seed, epoch, i)``:
a fresh generator per item, seeded with ``seed`` (default: ``torch.initial_seed()`` when the dataset is built,
i.e. the run's seed) and the epoch: the one an :class:`~sa2va.datasets.samplers.EpochIndex` carries (what
LengthGroupedSampler yields), else the one set by :meth:`set_epoch`. So every epoch samples anew, any DataLoader
worker produces the same item, also one that outlives the epoch (``persistent_workers=True``), and a resumed run
sees exactly the data of an uninterrupted one.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np
import torch
from mmengine.logging import MMLogger
from PIL import Image
from torch.utils.data import Dataset

from ..registry import BUILDER
from ..tokenizer import (IMG_CONTEXT_TOKEN, IMG_END_TOKEN, IMG_START_TOKEN, SEG_TOKEN, VP_END_TOKEN,
                         VP_START_TOKEN)
from .errors import BadRecordError
from .image_processing import DirectResize, TileProcessor
from .samples import SampleBuilder
from .samplers import EpochIndex
from .templates import get_template

__all__ = ["ImageDatasetBase", "load_image", "find_image"]

REQUIRED_TOKENS = (IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN, SEG_TOKEN, VP_START_TOKEN, VP_END_TOKEN)
DEFAULT_SAM2_PROCESSOR = dict(type=DirectResize, target_length=1024)


def _build(cfg_or_obj):
    return BUILDER.build(cfg_or_obj) if isinstance(cfg_or_obj, Mapping) else cfg_or_obj


def load_image(path: str | os.PathLike, *, file: str | os.PathLike, record_id: object, field: str = "file_name",
               expected_size: tuple[int, int] | None = None) -> Image.Image:
    """Open an image as RGB (grayscale, palette, RGBA, CMYK ... are converted; alpha is dropped, as the original).

    ``file``/``record_id``/``field`` name the annotation record for errors. ``expected_size`` = (width, height)
    stored in the annotation: a different actual size would misalign the masks and is an error.
    EXIF orientation is not applied: COCO-style annotations are in stored-pixel coordinates.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BadRecordError(file, record_id, field, f"image file not found: {path}", reason="missing_image")
    try:
        with Image.open(path) as im:
            im.load()
            image = im.convert("RGB")
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError ... for broken files
        raise BadRecordError(file, record_id, field, f"cannot read image {path}: {type(e).__name__}: {e}",
                             reason="corrupt_image") from e
    if expected_size is not None and tuple(expected_size) != image.size:
        raise BadRecordError(file, record_id, "width/height",
                             f"annotation says {expected_size[0]}x{expected_size[1]} but {path} is "
                             f"{image.size[0]}x{image.size[1]}", reason="size_mismatch")
    return image


def find_image(folders: list[str], file_name: str) -> str:
    """The first ``folder/file_name`` that exists (the first candidate when none does, for the error message)."""
    candidates = [os.path.join(folder, file_name) for folder in folders]
    return next((c for c in candidates if os.path.isfile(c)), candidates[0])


class ImageDatasetBase(Dataset):
    """Common base of the REFER, Osprey and custom-json datasets (see the module docstring).

    Args:
        tokenizer: a tokenizer, or a config dict built with ``BUILDER`` (e.g.
            ``dict(type=build_tokenizer, pretrained_model_name_or_path=...)``); must carry Sa2VA's special tokens.
        template: chat template name or dict (``qwen_chat``, ``phi3_chat``, ``internlm2_chat``).
        max_length: longest token sequence; whole trailing turns are dropped beyond it.
        tile_size, max_dynamic_patch, min_dynamic_patch, use_thumbnail: InternVL tiling.
        extra_image_processor: SAM2 image processor (config dict or object with ``apply_image``), or None.
        skip_bad_records: skip (and count) bad records instead of raising.
        seed: None for training; an int makes every item a pure function of (seed, index).
        repeats: the records are served ``repeats`` times per epoch (item ``j`` is record ``j % n``).
        name: display name (``data_source`` of items, summaries); defaults to the class name.
        uint8_tiles: ``pixel_values`` as uint8 pixels, normalised by the model on its device (same values; half the
            loader's CPU time per sample, a 4x smaller batch to pin and copy).
        resize_backend: ``'pil'`` (the original's tiles, pixel for pixel) or ``'torch'`` (the same tiles resized by
            torch's uint8 bicubic kernel: ~3x faster, within a few levels of PIL's pixels; :class:`TileProcessor`).
            The SAM2 image's backend is ``extra_image_processor``'s own (``DirectResize(resize_backend=...)``).
    """

    def __init__(self, *, tokenizer, template="qwen_chat", max_length: int = 8192, tile_size: int = 448,
                 max_dynamic_patch: int = 12, min_dynamic_patch: int = 1, use_thumbnail: bool = True,
                 extra_image_processor=None, skip_bad_records: bool = False, seed: int | None = None,
                 repeats: int = 1, name: str | None = None, uint8_tiles: bool = False, resize_backend: str = "pil"):
        if int(repeats) != repeats or repeats < 1:
            raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
        self.name = name or type(self).__name__
        if tokenizer is None:
            raise ValueError(f"{self.name}: tokenizer is required (a tokenizer or a config dict, e.g. "
                             f"dict(type=build_tokenizer, pretrained_model_name_or_path=...))")
        self.tokenizer = _build(tokenizer)
        vocab = self.tokenizer.get_vocab()
        missing = [t for t in REQUIRED_TOKENS if t not in vocab]
        if missing:
            raise ValueError(f"{self.name}: the tokenizer lacks {missing}; build it with "
                             f"sa2va.tokenizer.build_tokenizer (adds Sa2VA's special tokens)")
        self.template = get_template(template, tokenizer=self.tokenizer)
        self.max_length = int(max_length)
        self.tile_processor = TileProcessor(tile_size, max_dynamic_patch, min_dynamic_patch, use_thumbnail,
                                            normalize=not uint8_tiles, resize_backend=resize_backend)
        self.extra_image_processor = _build(extra_image_processor)
        self.skip_bad_records = bool(skip_bad_records)
        self.seed = int(seed) if seed is not None else torch.initial_seed() % (1 << 63)
        self.epoch = 0
        self.repeats = int(repeats)
        self.skip_counts: Counter = Counter()
        self.truncations: Counter = Counter()
        self.builder = SampleBuilder(self.tokenizer, self.template, self.max_length, self.tile_processor,
                                     self.extra_image_processor, self.truncations)
        self.records: list = []
        self._bad_records: set[int] = set()
        self._bad_parts: set = set()
        self._lengths: list[int] | None = None

    # ------------------------------------------------------------------------------------------ subclass API
    def prepare(self, record_index: int, rng: np.random.Generator) -> dict:
        raise NotImplementedError

    def estimate_length(self, record_index: int) -> int:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def logger(self) -> MMLogger:
        return MMLogger.get_current_instance()

    def skip_or_raise(self, error: BadRecordError) -> None:
        """Inside ``prepare``, for a bad *part* of a record (one ref, one region) that can be left out:
        count it when skipping, else raise."""
        if not self.skip_bad_records:
            raise error
        self.skip_counts[error.reason] += 1
        self.logger.warning(f"{self.name}: leaving out: {error}")

    def choose_parts(self, keys: Sequence[Hashable], limit: int, rng: np.random.Generator,
                     load: Callable[[Hashable], object]) -> list[tuple[Hashable, object]]:
        """Up to ``limit`` distinct parts of a record (refs, objects), in random order, without replacement.

        ``load(key)`` returns the part's data or raises :class:`BadRecordError`; a bad part is counted (or raised,
        see :meth:`skip_or_raise`), remembered so it is neither retried nor counted again, and replaced by the
        next candidate. Returns ``[(key, data), ...]`` (possibly empty).
        """
        chosen = []
        for j in rng.permutation(len(keys)):
            if len(chosen) == limit:
                break
            key = keys[j]
            if key in self._bad_parts:
                continue
            try:
                chosen.append((key, load(key)))
            except BadRecordError as e:
                self._bad_parts.add(key)
                self.skip_or_raise(e)
        return chosen

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rng_for(self, index: int, epoch: int | None = None) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch if epoch is None else int(epoch), int(index)])

    # ------------------------------------------------------------------------------------------ Dataset
    @property
    def num_records(self) -> int:
        return len(self.records)

    def __len__(self) -> int:
        return self.num_records * self.repeats

    accepts_epoch_index = True  # __getitem__ takes an EpochIndex too (samplers.py, step 6)

    def __getitem__(self, index: int | EpochIndex) -> dict:
        epoch = None
        if isinstance(index, EpochIndex):
            epoch, index = index
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range for {len(self)} items")
        index %= len(self)
        n = self.num_records
        for step in range(n):
            i = (index + step) % n
            if i in self._bad_records:
                continue
            try:
                item = self.prepare(i, self.rng_for(index, epoch))
            except BadRecordError as e:
                if not self.skip_bad_records:
                    raise
                self._bad_records.add(i)
                self.skip_counts[e.reason] += 1
                self.logger.warning(f"{self.name}: skipping: {e}")
                continue
            item["data_source"] = self.name
            item["data_issues"] = self._new_issues()
            return item
        raise RuntimeError(f"{self.name}: no good record left (skipped: {dict(self.skip_counts)})")

    def _new_issues(self) -> dict[str, int]:
        """Skips and truncations counted in this process since the last item, so they travel with the batches to
        the training loop (dataloader workers keep their own counters)."""
        now = Counter({f"{self.name}: skipped: {r}": n for r, n in self.skip_counts.items()})
        now.update({f"{self.name}: truncated: {r}": n for r, n in self.truncations.items()})
        reported = getattr(self, "_reported_issues", Counter())
        self._reported_issues = now
        return {k: n - reported.get(k, 0) for k, n in now.items() if n > reported.get(k, 0)}

    @property
    def lengths(self) -> list[int]:
        """Estimated token count per item (repeats included), for the length-grouped sampler."""
        if self._lengths is None:
            self._lengths = [int(self.estimate_length(i)) for i in range(self.num_records)]
        return self._lengths * self.repeats

    @property
    def modality_length(self) -> list[int]:  # the xtuner / Sa2VA name
        return self.lengths

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, records={self.num_records}, repeats={self.repeats}, "
                f"template={self.template.get('NAME')!r}, tiles={self.tile_processor}, "
                f"sam2={self.extra_image_processor!r})")
