"""A sampler that trains on some of a ConcatDataset's datasets first, then on all of them (a task curriculum).

``TaskCurriculumSampler`` wraps another sampler (``LengthGroupedSampler``, ``EpochDefaultSampler``, ...) over a
:class:`~sa2va.datasets.ConcatDataset`. For the first ``first_iters`` iterations it passes on only the indices that
fall in the datasets ``first_datasets`` (positions in the ConcatDataset's ``datasets`` list) and drops the rest;
afterwards it passes on every index of the wrapped sampler. The wrapped sampler's own order, grouping and epochs
are kept (an epoch of the first stage is the wrapped epoch without the dropped items, so it is shorter).

Why: two tasks that share a small model can compete. In the learning proof (docs/benchmarks.md), region captions
trained alone learn every word within a few hundred iterations, while trained together with referring
segmentation from the start they sat on a "region unused" plateau for 400-800 iterations and never learned the
shape word.

Config (the captions, dataset 1 of the ConcatDataset, alone for the first 400 iterations)::

    sampler=dict(type=TaskCurriculumSampler, first_iters=400, first_datasets=[1], batch_size=batch_size,
                 sampler=dict(type=LengthGroupedSampler, per_device_batch_size=batch_size))

``batch_size`` is the dataloader's (per rank). The sampler counts batches as it cuts its index stream into them
(a first-stage epoch may end in a partial batch, which counts as one), so every rank changes stage at the same
iteration. With ``drop_last=True`` the dropped partial batches count too.

Resuming: when the wrapped sampler can seek (``set_epoch`` + ``set_start``, as ``LengthGroupedSampler``),
:meth:`TaskCurriculumSampler.seek` places the stream at a training batch. It replays the earlier batches as indices
only (no item is loaded), through the stage change and the epoch ends. ``sa2va.engine.TrainLoop`` calls it. Otherwise
the loop re-reads the batches already trained on. Either way the stage boundary and the data order are those
of the uninterrupted run.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

from mmengine.registry import DATA_SAMPLERS
from torch.utils.data import Sampler

from .concat import dataset_position
from .samplers import EpochIndex


class TaskCurriculumSampler(Sampler):
    """See the module docstring. ``dataset`` and ``seed`` are passed by mmengine and forwarded to ``sampler``."""

    def __init__(self, dataset, sampler: dict | Sampler, first_iters: int, first_datasets: Sequence[int],
                 batch_size: int, seed: int | None = None):
        sizes = getattr(dataset, "cumulative_sizes", None)
        if sizes is None:
            raise TypeError(f"TaskCurriculumSampler: the dataset must be a ConcatDataset (with cumulative_sizes), "
                            f"got {type(dataset).__name__}")
        if first_iters < 0 or batch_size < 1:
            raise ValueError(f"TaskCurriculumSampler: first_iters must be >= 0 and batch_size >= 1, got "
                             f"first_iters={first_iters}, batch_size={batch_size}")
        self.first_datasets = sorted({int(d) for d in first_datasets})
        bad = [d for d in self.first_datasets if not 0 <= d < len(sizes)]
        if bad or not self.first_datasets:
            raise ValueError(f"TaskCurriculumSampler: first_datasets={list(first_datasets)} must name some of the "
                             f"{len(sizes)} datasets (0..{len(sizes) - 1})")
        starts = [0, *sizes[:-1]]
        if all(sizes[d] == starts[d] for d in self.first_datasets):
            raise ValueError(f"TaskCurriculumSampler: the datasets {self.first_datasets} are empty")
        if isinstance(sampler, dict):
            sampler = DATA_SAMPLERS.build(sampler, default_args=dict(dataset=dataset, seed=seed))
        self.sampler = sampler
        self.cumulative_sizes = list(sizes)
        self.first_iters, self.batch_size = int(first_iters), int(batch_size)
        self.batches = 0  # batches begun so far (this rank, since the start of training)

    @property
    def hands_epoch_to_dataset(self) -> bool:
        return getattr(self.sampler, "hands_epoch_to_dataset", False)

    def _dataset_of(self, index: int | EpochIndex) -> int:
        return dataset_position(self.cumulative_sizes, index.index if isinstance(index, EpochIndex) else int(index))[0]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def _stream(self) -> Iterator[tuple[int, int | EpochIndex]]:
        """(position in the wrapped sampler's iteration, index) of every index passed on."""
        passed = 0  # indices passed on in this iteration; the DataLoader cuts them into batches of batch_size
        first_stage = True
        for position, index in enumerate(self.sampler):
            if passed % self.batch_size == 0:  # this index begins a batch: the batch's stage is decided here
                first_stage = self.batches < self.first_iters
            if first_stage and self._dataset_of(index) not in self.first_datasets:
                continue
            if passed % self.batch_size == 0:
                self.batches += 1
            passed += 1
            yield position, index

    def __iter__(self) -> Iterator[int | EpochIndex]:
        return (index for _, index in self._stream())

    @property
    def seekable(self) -> bool:
        """Whether :meth:`seek` can place a resumed run: the wrapped sampler has ``set_epoch`` and ``set_start``."""
        return hasattr(self.sampler, "set_epoch") and hasattr(self.sampler, "set_start")

    def seek(self, batch: int, drop_last: bool = False) -> int:
        """Make the next ``__iter__`` continue at training batch ``batch`` (0-based, counted from the start of
        training) exactly as the uninterrupted run goes on. Returns the epoch the stream is then in.

        The batches before it are replayed as indices only (the wrapped sampler's orders, no items). The replay
        starts at epoch 0 and goes through the stage change and the epoch ends. A ``drop_last`` DataLoader drops a
        partial last batch of an epoch, which the training loop never counts. With an endless wrapped sampler,
        whose epochs all have ``len()`` indices, the epoch of a position is ``position // len()``."""
        if not self.seekable:
            raise TypeError(f"TaskCurriculumSampler.seek: the wrapped {type(self.sampler).__name__} has no "
                            f"set_epoch / set_start")
        if batch < 0:
            raise ValueError(f"TaskCurriculumSampler.seek: batch must be >= 0, got {batch}")
        endless = getattr(self.sampler, "endless", False)
        self.batches, dropped, epoch = 0, 0, 0
        while True:
            self.sampler.set_epoch(epoch)
            self.sampler.set_start(0)
            per_epoch = len(self.sampler)
            passed = 0
            for position, _ in self._stream():
                # an index that begins a batch has just been counted in self.batches
                if passed % self.batch_size == 0 and self.batches - 1 - dropped == batch:
                    self.batches -= 1  # the resumed iteration begins this batch again
                    if endless:
                        epoch, position = epoch + position // per_epoch, position % per_epoch
                    self.sampler.set_epoch(epoch)
                    self.sampler.set_start(position)
                    return epoch
                passed += 1
            if drop_last and passed % self.batch_size:
                dropped += 1
            epoch += 1

    def __len__(self) -> int:
        """The wrapped sampler's length (an epoch of the first stage is shorter)."""
        return len(self.sampler)
