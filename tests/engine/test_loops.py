"""EpochIterator: the training loop's endless data iterator."""
import time

import pytest
from torch.utils.data import DataLoader

from sa2va.engine.loops import EpochIterator


class _EpochSampler:
    """Yields 0..n-1 shifted by 10 x the epoch it was handed, so each batch tells its epoch."""

    def __init__(self, n):
        self.n, self.epoch, self.epochs_set = n, 0, []

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.epochs_set.append(epoch)

    def __iter__(self):
        return iter(range(10 * self.epoch, 10 * self.epoch + self.n))

    def __len__(self):
        return self.n


@pytest.mark.parametrize("workers", [0, 1])
def test_epochs_follow_each_other_without_a_pause(monkeypatch, workers):
    """Each rollover hands the sampler the next epoch and goes on at once (mmengine's iterator sleeps 2 s there)."""
    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail(f"slept {s} s between epochs"))
    sampler = _EpochSampler(4)
    loader = DataLoader(list(range(100)), batch_size=2, sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0)
    it = EpochIterator(loader)
    batches = [next(it).tolist() for _ in range(7)]
    assert batches == [[0, 1], [2, 3], [10, 11], [12, 13], [20, 21], [22, 23], [30, 31]]
    assert sampler.epochs_set == [1, 2, 3]


def test_the_train_loop_iterates_with_it():
    """TrainLoop swaps mmengine's iterator for EpochIterator, keeping its DataLoader iterator (no second one)."""
    from unittest import mock

    from mmengine.runner.loops import _InfiniteDataloaderIterator

    from sa2va.engine.loops import TrainLoop

    loader = DataLoader(list(range(8)), batch_size=2)
    runner = mock.MagicMock()
    runner.build_dataloader.return_value = loader
    loop = TrainLoop(runner, loader, max_iters=5)
    assert type(loop.dataloader_iterator) is EpochIterator
    old = _InfiniteDataloaderIterator(loader)
    new = EpochIterator.taking_over(old)
    assert new._iterator is old._iterator and new._dataloader is loader and new._epoch == 0
