"""A sampler that puts items of similar token length (and the same modality) in the same batch.

One epoch's order, for ``seed`` and ``epoch`` (the same on every rank):

1. split the items by the sign of their ``length``: image items (>= 0) and text-only items (< 0);
2. per modality: shuffle, cut into mega-batches of ``group * mega_batch_mult`` items
   (``group = per_device_batch_size * world_size``, one optimizer step over all ranks), sort each mega-batch by
   ``|length|`` (longest first) and cut it into groups; so a group holds items of similar length and one modality;
3. shuffle the full groups of both modalities together; the at most two partial groups go last (these may mix
   modalities); the longest item goes first (an out-of-memory shows at step one): its group is swapped to the
   front, or, if it is in the partial tail, the item itself is swapped with the first item;
4. ``round_up``: repeat the order from its start up to a multiple of ``group`` (every rank, every step full);
   otherwise drop the tail down to a multiple of ``world_size``;
5. split by rank, ``rank_split``:
   ``'strided'`` (default, as the original): rank ``r`` takes ``order[r::world_size]``; within each group every rank
   gets ``per_device_batch_size`` items, ranks alternate along the sorted lengths (balanced work per rank);
   ``'contiguous'``: rank ``r`` takes the ``r``-th block of ``per_device_batch_size`` items of every group (a partial
   tail with ``round_up=False`` is split strided). Rank ``r``'s micro-batches are then exactly the micro-batches
   ``r * A .. (r + 1) * A - 1`` of one optimizer step of a single process with ``world_size * A`` accumulation steps
   (``A`` = this run's accumulation; same ``per_device_batch_size * world_size``): runs on different GPU counts at
   the same global batch compute the same micro-batches (``benchmarks/gpu_multi.sh`` parity).

6. yield the indices, each as an :class:`EpochIndex` ``(epoch, index)`` when the dataset declares
   ``accepts_epoch_index`` (our datasets and ConcatDataset do), else as plain ints. An item's randomness depends on
   its epoch (``sa2va.datasets.base``), and DataLoader workers with ``persistent_workers=True`` keep the dataset
   copy they started with: the epoch has to travel with the index to reach them.

``endless=True``: one ``__iter__`` goes on from epoch to epoch (``epoch``, ``epoch + 1``, ...; each epoch exactly the
order above) and never ends. The DataLoader then never starts a new epoch, so its workers never stand idle: a
finite sampler ends each epoch with the DataLoader's worker pipeline empty, and the next epoch waits for a worker to
build its first batch from scratch (~1 s per ~40-batch epoch of the learning proof). ``len()``
stays one epoch (mmengine converts epochs to iterations with it), and ``set_epoch`` / ``set_start`` still say where
the next ``__iter__`` begins (an exact resume).

With either split, the epoch order depends on the world size only through ``group``: two runs with the same
``group`` and ``per_device_batch_size = batch_size * accumulative_counts`` (e.g. 1 GPU, micro-batch 2 x 2
accumulation steps, ``per_device_batch_size=4``; 2 GPUs, 2 x 1, ``per_device_batch_size=2``) see the same set of items
in every optimizer step (tests/engine/test_global_batch.py).

Config: ``sampler=dict(type=LengthGroupedSampler, per_device_batch_size=batch_size * accumulative_counts)``
(the original Sa2VA grouped over the accumulation steps too); mmengine passes ``dataset`` and ``seed``.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from mmengine.dataset import DefaultSampler
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler


class EpochIndex(NamedTuple):
    """A dataset index with the epoch it is drawn for (see step 6 above)."""

    epoch: int
    index: int


def _dataset_lengths(dataset, length_property: str) -> np.ndarray:
    for attr in (length_property, f"{length_property}s"):
        lengths = getattr(dataset, attr, None)
        if lengths is not None and not callable(lengths):
            lengths = np.asarray(list(lengths), dtype=np.int64)
            if lengths.shape != (len(dataset),):
                raise ValueError(f"LengthGroupedSampler: dataset.{attr} has shape {lengths.shape}, "
                                 f"expected ({len(dataset)},)")
            return lengths
    raise TypeError(f"LengthGroupedSampler: {type(dataset).__name__} has no '{length_property}' or "
                    f"'{length_property}s' attribute with one length per item")


def length_grouped_order(lengths: np.ndarray, group_size: int, mega_batch_mult: int,
                         generator: torch.Generator) -> list[int]:
    """Steps 1-3 above: all indices of ``lengths``, in groups of ``group_size`` of similar length and modality."""
    lengths = np.asarray(lengths)
    mega_size = group_size * mega_batch_mult
    full_groups: list[list[int]] = []
    partial: list[int] = []
    for members in (np.flatnonzero(lengths >= 0), np.flatnonzero(lengths < 0)):  # image items, text-only items
        if members.size == 0:
            continue
        shuffled = members[torch.randperm(members.size, generator=generator).numpy()]
        for start in range(0, shuffled.size, mega_size):
            mega = shuffled[start:start + mega_size]
            mega = mega[np.argsort(-np.abs(lengths[mega]), kind="stable")]  # longest first
            groups = [mega[i:i + group_size].tolist() for i in range(0, mega.size, group_size)]
            if len(groups[-1]) < group_size:
                partial += groups.pop()
            full_groups += groups
    full_groups = [full_groups[i] for i in torch.randperm(len(full_groups), generator=generator).tolist()]
    order = [i for g in full_groups for i in g] + partial
    # the longest item first: swap its whole group to the front, or (if it sits in the partial tail) the item itself
    at = int(np.argmax(np.abs(lengths[order])))
    if at < len(order) - len(partial):
        g = at // group_size
        full_groups[0], full_groups[g] = full_groups[g], full_groups[0]
        order = [i for grp in full_groups for i in grp] + partial
    else:
        order[0], order[at] = order[at], order[0]
    return order


def with_epoch(dataset, epoch: int, order: list[int]) -> Iterator[int | EpochIndex]:
    """The indices of ``order`` as :class:`EpochIndex` ``(epoch, i)`` when ``dataset`` accepts them, else as ints."""
    if getattr(dataset, "accepts_epoch_index", False):
        return iter([EpochIndex(epoch, i) for i in order])
    return iter(order)


class EpochDefaultSampler(DefaultSampler):
    """mmengine's ``DefaultSampler`` (shuffled, split over ranks, same arguments) that also hands the epoch to
    the dataset, as :class:`LengthGroupedSampler` does: with the plain ``DefaultSampler`` our datasets never learn
    the epoch, so every epoch repeats epoch 0's draws (which refs, which sentence, which question).

    Config: ``sampler=dict(type=EpochDefaultSampler, shuffle=True)``.
    """

    hands_epoch_to_dataset = True

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[int | EpochIndex]:
        return with_epoch(self.dataset, self.epoch, list(super().__iter__()))


class LengthGroupedSampler(Sampler):
    """Length- and modality-grouped, deterministic per (seed, epoch), equal count on every rank.

    Args:
        dataset: has a ``length_property`` (or ``length_property + 's'``) attribute: one int per item, the real
            token count, negative for text-only items (``ConcatDataset.lengths``).
        per_device_batch_size: items per rank per step (``batch_size * accumulative_counts`` to group over
            gradient accumulation as the original did).
        length_property: attribute name, see ``dataset``; ``'modality_length'`` reads xtuner-style datasets.
        mega_batch_mult: groups per mega-batch (the span over which lengths are sorted); default
            ``clip(len // (4 * group), 1, 50)``.
        seed: shuffling seed; None draws one and syncs it across ranks.
        round_up: pad the epoch by repetition to a multiple of ``per_device_batch_size * world_size``;
            False drops the tail down to a multiple of ``world_size``.
        rank_split: ``'strided'`` or ``'contiguous'``: how a group is shared among ranks (step 5 above).
        endless: iterate epoch after epoch without end (see the module docstring); needs ``round_up`` (every epoch
            a whole number of batches, so no batch straddles two epochs and a resume lands on a batch).
    """

    RANK_SPLITS = ("strided", "contiguous")
    hands_epoch_to_dataset = True  # see with_epoch

    def __init__(self, dataset, per_device_batch_size: int, length_property: str = "length",
                 mega_batch_mult: int | None = None, seed: int | None = None, round_up: bool = True,
                 rank_split: str = "strided", endless: bool = False):
        if per_device_batch_size < 1:
            raise ValueError(f"per_device_batch_size must be >= 1, got {per_device_batch_size}")
        if rank_split not in self.RANK_SPLITS:
            raise ValueError(f"LengthGroupedSampler: rank_split must be one of {self.RANK_SPLITS}, "
                             f"got {rank_split!r}")
        if endless and not round_up:
            raise ValueError("LengthGroupedSampler: endless=True needs round_up=True (whole batches per epoch)")
        self.rank_split = rank_split
        self.endless = endless
        self.per_device_batch_size = per_device_batch_size
        self.rank, self.world_size = get_dist_info()
        self.dataset = dataset
        self.lengths = _dataset_lengths(dataset, length_property)
        if self.lengths.size == 0:
            raise ValueError("LengthGroupedSampler: empty dataset")
        self.group_size = per_device_batch_size * self.world_size
        if mega_batch_mult is None:
            mega_batch_mult = min(max(self.lengths.size // (4 * self.group_size), 1), 50)
        if mega_batch_mult < 1:
            raise ValueError(f"mega_batch_mult must be >= 1, got {mega_batch_mult}")
        self.mega_batch_mult = mega_batch_mult
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.round_up = round_up
        self.epoch = 0
        self.start = 0  # indices of this rank to skip at the next __iter__ (resume), then back to 0
        n = self.lengths.size
        if round_up:
            self.total_size = math.ceil(n / self.group_size) * self.group_size
        else:
            self.total_size = n // self.world_size * self.world_size
            if self.total_size == 0:
                raise ValueError(f"LengthGroupedSampler: {n} items for {self.world_size} ranks with round_up=False")
        self.num_samples = self.total_size // self.world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):  # per-item data randomness depends on the epoch
            self.dataset.set_epoch(epoch)

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` indices of this rank's order at the next ``__iter__`` (exact resume)."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"set_start({start}): a rank has {self.num_samples} indices per epoch")
        self.start = int(start)

    def epoch_order(self, epoch: int | None = None) -> list[int]:
        """The whole order of ``epoch`` (default: the current one) over all ranks (before splitting by rank)."""
        generator = torch.Generator()
        generator.manual_seed(self.seed + (self.epoch if epoch is None else epoch))
        order = length_grouped_order(self.lengths, self.group_size, self.mega_batch_mult, generator)
        if self.round_up:
            order = (order * math.ceil(self.total_size / len(order)))[:self.total_size]
        return order[:self.total_size]

    def rank_order(self, rank: int | None = None, epoch: int | None = None) -> list[int]:
        """The indices of ``rank`` (default: this rank) for the whole of ``epoch`` (default: the current one), in
        order (step 5 above)."""
        rank = self.rank if rank is None else rank
        order = self.epoch_order(epoch)
        if self.rank_split == "strided":
            return order[rank::self.world_size]
        b, full = self.per_device_batch_size, self.total_size // self.group_size * self.group_size
        mine = [i for g in range(0, full, self.group_size) for i in order[g + rank * b:g + (rank + 1) * b]]
        return mine + order[full:][rank::self.world_size]

    def __iter__(self) -> Iterator[int | EpochIndex]:
        start, self.start = self.start, 0
        if self.endless:
            return self._epochs_from(self.epoch, start)
        return with_epoch(self.dataset, self.epoch, self.rank_order()[start:])

    def _epochs_from(self, epoch: int, start: int) -> Iterator[int | EpochIndex]:
        while True:
            yield from with_epoch(self.dataset, epoch, self.rank_order(epoch=epoch)[start:])
            epoch, start = epoch + 1, 0

    def __len__(self) -> int:
        """One epoch (its rest, after ``set_start``), also when ``endless``."""
        return self.num_samples - self.start
