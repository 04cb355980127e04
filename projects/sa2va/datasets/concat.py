"""Several datasets as one epoch.

Repeats are **the datasets' own**: ``dict(type=OspreyDataset, ..., repeats=4)`` (the Sa2VA config vocabulary;
:class:`~sa2va.datasets.base.ImageDatasetBase` serves its records ``repeats`` times, item ``j`` = record ``j % n``,
and its ``lengths`` include the repeats). ConcatDataset only concatenates and reports; it never repeats, so
there is one place that does.
"""
from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence

from torch.utils.data import ConcatDataset as _TorchConcatDataset
from torch.utils.data import Dataset

from ..registry import BUILDER
from .samplers import EpochIndex


def dataset_name(dataset) -> str:
    """A dataset's display name: its ``name`` or ``data_source`` attribute, else its class name."""
    return getattr(dataset, "name", None) or getattr(dataset, "data_source", None) or type(dataset).__name__


def dataset_lengths(dataset) -> list[int]:
    """Per-item ``length`` values (docs/batch_layout.md) from a dataset's ``lengths`` attribute (repeats included).

    ``modality_length`` (the xtuner name) is accepted too.
    """
    for attr in ("lengths", "modality_length"):
        lengths = getattr(dataset, attr, None)
        if lengths is not None:
            lengths = [int(x) for x in lengths]
            if len(lengths) != len(dataset):
                raise ValueError(f"{dataset_name(dataset)}: {attr} has {len(lengths)} entries for "
                                 f"{len(dataset)} items")
            return lengths
    raise TypeError(f"{dataset_name(dataset)} ({type(dataset).__name__}) has no 'lengths' attribute "
                    f"(one int per item: token count, negative for text-only)")


def dataset_position(cumulative_sizes: Sequence[int], index: int) -> tuple[int, int]:
    """Where item ``index`` (0 <= index < total) of a concatenation lies: (dataset k, index within dataset k)."""
    k = bisect.bisect_right(cumulative_sizes, index)
    return k, index - (cumulative_sizes[k - 1] if k else 0)


class ConcatDataset(_TorchConcatDataset):
    """Concatenation of ``datasets`` (config dicts, built here through ``BUILDER``, or dataset objects).

    Attributes:
        datasets: the built datasets.
        lengths: per-item lengths of the whole concatenation, for
            :class:`~sa2va.datasets.samplers.LengthGroupedSampler`.
    """

    def __init__(self, datasets: Sequence[Mapping | Dataset]):
        if not datasets:
            raise ValueError("ConcatDataset needs at least one dataset")
        built = [BUILDER.build(d) if isinstance(d, Mapping) else d for d in datasets]
        for k, d in enumerate(built):
            if len(d) == 0:
                raise ValueError(f"ConcatDataset: dataset {k} ({dataset_name(d)}) is empty")
        super().__init__(built)
        self._lengths: list[int] | None = None

    @property
    def accepts_epoch_index(self) -> bool:
        return all(getattr(d, "accepts_epoch_index", False) for d in self.datasets)

    def __getitem__(self, idx: int | EpochIndex):
        if not isinstance(idx, EpochIndex):
            return super().__getitem__(idx)
        epoch, idx = idx
        if not -len(self) <= idx < len(self):
            raise IndexError(f"ConcatDataset: index {idx} out of range for {len(self)} items")
        idx %= len(self)
        k, i = dataset_position(self.cumulative_sizes, idx)
        return self.datasets[k][EpochIndex(epoch, i)]

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to every dataset (their per-item randomness depends on it)."""
        for d in self.datasets:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    @property
    def lengths(self) -> list[int]:
        if self._lengths is None:
            self._lengths = [x for d in self.datasets for x in dataset_lengths(d)]
        return self._lengths

    def summary(self) -> list[dict]:
        """Per dataset: ``name``, ``samples`` (distinct records), ``repeats``, ``items`` (per epoch), ``share``."""
        total = len(self)
        rows = []
        for d in self.datasets:
            repeats = int(getattr(d, "repeats", 1))
            samples = int(getattr(d, "num_records", len(d) // repeats))
            rows.append(dict(name=dataset_name(d), samples=samples, repeats=repeats, items=len(d),
                             share=len(d) / total))
        return rows

    def summary_table(self) -> str:
        """:meth:`summary` as an aligned text table, for logs."""
        summary = self.summary()
        rows = [("dataset", "samples", "repeats", "items", "share")]
        rows += [(s["name"], str(s["samples"]), str(s["repeats"]), str(s["items"]), f"{100 * s['share']:.1f}%")
                 for s in summary]
        rows.append(("total", str(sum(s["samples"] for s in summary)), "", str(len(self)), "100.0%"))
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        return "\n".join("  ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                                   for c, (cell, w) in enumerate(zip(row, widths))) for row in rows)
