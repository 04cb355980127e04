"""Iteration-based training loop that is given epochs (like xtuner's TrainLoop) and resumes exactly.

On resume, mmengine's loop re-reads (and discards) every batch already trained on. Ours positions the sampler
instead when it supports ``set_start`` (ours do) or seeks itself (``TaskCurriculumSampler.seek``), then restores
the RNG states saved with the checkpoint *after* the data iterator exists, so the resumed run draws exactly the
random numbers the uninterrupted one drew.

Between epochs mmengine's data iterator sleeps 2 s ("prevent possible deadlock"); ours does not (``EpochIterator``).
"""
from __future__ import annotations

import logging

from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator

from ..registry import BUILDER
from .resume_state import set_rng_state


def epoch_warning(dataloader) -> str | None:
    """Why the data would repeat itself every epoch, or None: our datasets draw refs / sentences / questions per
    epoch, and only a sampler that hands them the epoch (ours) makes each epoch draw anew."""
    dataset = getattr(dataloader, "dataset", None)
    sampler = getattr(getattr(dataloader, "batch_sampler", None), "sampler", None) or getattr(dataloader, "sampler",
                                                                                             None)
    if not getattr(dataset, "accepts_epoch_index", False) or getattr(sampler, "hands_epoch_to_dataset", False):
        return None
    return (f"the sampler {type(sampler).__name__} does not hand the epoch to the dataset "
            f"{type(dataset).__name__}: every epoch will repeat epoch 0's random draws (which refs, sentences and "
            f"questions). Use sa2va.datasets.LengthGroupedSampler or EpochDefaultSampler (shuffled, as mmengine's "
            f"DefaultSampler).")


class EpochIterator(_InfiniteDataloaderIterator):
    """mmengine's endless data iterator (next epoch: ``set_epoch(epoch + 1)``, a new iterator) without its 2-s
    sleep at every epoch end. The learning proof's epochs are ~40 batches (~20 while only captions train): the
    sleep cost it 0.05-0.1 s per iteration (docs/benchmarks.md, twelfth session). The DataLoader's persistent
    workers are reused, not restarted; the first batch of an epoch still waits for a worker to build it, unless
    the sampler is endless (``LengthGroupedSampler(endless=True)``), when no epoch ends here at all."""

    @classmethod
    def taking_over(cls, iterator: _InfiniteDataloaderIterator) -> "EpochIterator":
        """The same position and epoch as ``iterator`` (whose DataLoader iterator, and workers, are kept)."""
        new = cls.__new__(cls)
        new.__dict__.update(iterator.__dict__)
        return new

    def __next__(self):
        try:
            return next(self._iterator)
        except StopIteration:
            self._epoch += 1
            sampler = getattr(self._dataloader, "sampler", None)
            if not hasattr(sampler, "set_epoch"):
                sampler = getattr(getattr(self._dataloader, "batch_sampler", None), "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(self._epoch)
            print_log(f"data epoch {self._epoch} starts", logger="current", level=logging.DEBUG)
            self._iterator = iter(self._dataloader)
            return next(self._iterator)


@BUILDER.register_module()
class TrainLoop(IterBasedTrainLoop):
    """``max_epochs`` (converted to iterations with the dataloader length) or ``max_iters``."""

    def __init__(self, runner, dataloader, max_epochs: float | None = None, max_iters: int | None = None,
                 val_begin: int = 1, val_interval: int = 1000, dynamic_intervals=None):
        if (max_epochs is None) == (max_iters is None):
            raise ValueError("give exactly one of max_epochs or max_iters")
        if max_iters is None:
            if isinstance(dataloader, dict):
                dataloader = runner.build_dataloader(dataloader, seed=runner.seed)
            max_iters = max(1, int(max_epochs * len(dataloader)))
        super().__init__(runner, dataloader, max_iters=max_iters, val_begin=val_begin, val_interval=val_interval,
                         dynamic_intervals=dynamic_intervals)
        self.dataloader_iterator = EpochIterator.taking_over(self.dataloader_iterator)
        warning = epoch_warning(self.dataloader)
        if warning:
            runner.logger.warning(warning)

    def _position_data(self) -> None:
        """Continue the data stream at iteration ``self._iter`` without loading the skipped batches."""
        sampler = getattr(self.dataloader, "sampler", None)
        if getattr(sampler, "seekable", False):  # TaskCurriculumSampler: its epochs vary in length
            epoch = sampler.seek(self._iter, drop_last=self.dataloader.drop_last)
            where = f"epoch {epoch}"
        elif sampler is not None and hasattr(sampler, "set_start"):
            epoch, offset = divmod(self._iter, len(self.dataloader))
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            sampler.set_start(offset * self.dataloader.batch_size)
            where = f"epoch {epoch}, batch {offset}"
        else:
            self.runner.logger.info(f"sampler cannot seek: reading {self._iter} batches to skip them")
            for _ in range(self._iter):
                next(self.dataloader_iterator)
            return
        # a new DataLoader iterator: the one made at construction has drawn its first indices already
        self.dataloader_iterator = EpochIterator(self.dataloader)
        self.dataloader_iterator._epoch = epoch
        self.runner.logger.info(f"resumed data stream at iteration {self._iter} ({where}; no batches re-read)")

    def run(self):
        self.runner.call_hook("before_train")
        self.runner.call_hook("before_train_epoch")
        if self._iter > 0:
            self._position_data()  # creates the data iterator, which draws a base seed from the global RNG
        pending = getattr(self.runner, "_pending_rng_state", None)
        if pending is not None:
            set_rng_state(pending)
            self.runner._pending_rng_state = None
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            data_batch = next(self.dataloader_iterator)
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0 or self._iter == self._max_iters)):
                self.runner.val_loop.run()
        self.runner.call_hook("after_train_epoch")
        self.runner.call_hook("after_train")
        return self.runner.model
