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


@pytest.mark.parametrize("endless", [False, True])
def test_a_resume_positions_a_fresh_iterator_at_the_trained_batch(endless):
    """TrainLoop._position_data: set_epoch + set_start, then a new DataLoader iterator, so the resumed stream is the
    uninterrupted one from iteration k on. With a worker the old iterator has already drawn its indices, so
    keeping it (instead of starting a new one) would restart at batch 0."""
    import itertools
    from unittest import mock

    from sa2va.datasets import LengthGroupedSampler
    from sa2va.engine.loops import TrainLoop

    class _D:
        lengths = list(range(1, 25))

        def __len__(self):
            return 24

        def __getitem__(self, i):
            return i

    def loop_over(k):
        sampler = LengthGroupedSampler(_D(), per_device_batch_size=4, seed=3, endless=endless)
        loader = DataLoader(_D(), batch_size=4, sampler=sampler, num_workers=1, persistent_workers=True)
        loop = TrainLoop(mock.MagicMock(), loader, max_iters=20)
        loop._iter = k
        if k:
            loop._position_data()
        return [next(loop.dataloader_iterator).tolist() for _ in range(14 - k)]

    full = loop_over(0)  # 6 batches per epoch: iterations 0..13 cross two epoch ends
    assert len({tuple(b) for b in full[:6]}) == 6
    for k in (4, 8):  # mid-epoch 0 and mid-epoch 1
        assert loop_over(k) == full[k:], k
    assert list(itertools.chain(*full[:6])) != list(itertools.chain(*full[6:12]))  # epochs differ
