"""TaskCurriculumSampler: only the first stage's datasets for the first N batches, then everything."""
import numpy as np
import pytest
from mmengine.registry import DATA_SAMPLERS
from torch.utils.data import DataLoader

from sa2va.datasets import EpochDefaultSampler, LengthGroupedSampler, TaskCurriculumSampler


class _Concat:
    """What the sampler needs of a ConcatDataset: cumulative sizes, lengths (for LengthGroupedSampler), items."""

    def __init__(self, *sizes):
        self.cumulative_sizes = np.cumsum(sizes).tolist()
        rng = np.random.default_rng(0)
        self.lengths = rng.integers(10, 100, self.cumulative_sizes[-1]).tolist()

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, i):
        return i


def _batches(sampler, dataset, batch_size, epochs):
    """The batches a DataLoader makes over ``epochs`` epochs (mmengine sets the epoch before each)."""
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out += [b.tolist() for b in DataLoader(dataset, batch_size=batch_size, sampler=sampler)]
    return out


@pytest.mark.parametrize("inner", [dict(type=LengthGroupedSampler, per_device_batch_size=4),
                                   dict(type=EpochDefaultSampler, shuffle=True)])
def test_first_stage_draws_only_its_datasets_then_all(inner):
    ds = _Concat(30, 18)  # dataset 1 (indices 30..47): 18 items = 4 full batches + a partial one per epoch
    sampler = TaskCurriculumSampler(ds, sampler=inner, first_iters=7, first_datasets=[1], batch_size=4, seed=1)
    batches = _batches(sampler, ds, batch_size=4, epochs=4)
    first, rest = batches[:7], batches[7:]
    assert all(i >= 30 for b in first for i in b)
    assert [len(b) for b in first] == [4, 4, 4, 4, 2, 4, 4]  # epoch 0 ends in a partial batch; it counts
    assert sorted(i for b in first[:5] for i in b) == list(range(30, 48))  # a first-stage epoch: all of dataset 1
    assert any(i < 30 for i in rest[0])  # the stage changes at batch 7, inside the second epoch
    later = [i for b in batches[10:] for i in b]  # the epochs after the first stage: both datasets, every item
    assert set(later) == set(range(48))
    assert sampler.batches == len(batches)


def test_built_by_mmengine_and_forwards_the_epoch():
    ds = _Concat(12, 12)
    sampler = DATA_SAMPLERS.build(
        dict(type=TaskCurriculumSampler, first_iters=2, first_datasets=[0], batch_size=4,
             sampler=dict(type=LengthGroupedSampler, per_device_batch_size=4)),
        default_args=dict(dataset=ds, seed=5))
    assert isinstance(sampler.sampler, LengthGroupedSampler) and sampler.sampler.seed == 5
    assert sampler.hands_epoch_to_dataset and len(sampler) == 24
    sampler.set_epoch(3)
    assert sampler.sampler.epoch == 3
    # no first stage: exactly the wrapped sampler's order
    plain = TaskCurriculumSampler(ds, sampler=LengthGroupedSampler(ds, per_device_batch_size=4, seed=5),
                                  first_iters=0, first_datasets=[0], batch_size=4)
    plain.set_epoch(3)
    assert list(plain) == list(sampler.sampler)


def test_rejects_what_it_cannot_stage():
    inner = dict(type=EpochDefaultSampler, shuffle=True)
    with pytest.raises(TypeError, match="ConcatDataset"):
        TaskCurriculumSampler(list(range(8)), sampler=inner, first_iters=1, first_datasets=[0], batch_size=2)
    with pytest.raises(ValueError, match="first_datasets"):
        TaskCurriculumSampler(_Concat(4, 4), sampler=inner, first_iters=1, first_datasets=[2], batch_size=2)
    with pytest.raises(ValueError, match="empty"):
        TaskCurriculumSampler(_Concat(4, 0), sampler=inner, first_iters=1, first_datasets=[1], batch_size=2)


def _loop_stream(inner, k, n, drop_last=False, workers=0, sizes=(20, 10)):
    """Batches n.. of a TrainLoop over a curriculum sampler, resumed at iteration k (k=0: not resumed)."""
    from unittest import mock

    from sa2va.engine.loops import TrainLoop

    ds = _Concat(*sizes)
    sampler = TaskCurriculumSampler(ds, sampler=inner, first_iters=6, first_datasets=[1], batch_size=4, seed=2)
    loader = DataLoader(ds, batch_size=4, sampler=sampler, drop_last=drop_last, num_workers=workers,
                        persistent_workers=workers > 0)
    loop = TrainLoop(mock.MagicMock(), loader, max_iters=100)
    loop._iter = k
    if k:
        loop._position_data()
    return [next(loop.dataloader_iterator).tolist() for _ in range(n - k)], sampler


@pytest.mark.parametrize("endless,drop_last", [(False, False), (False, True), (True, False)])
def test_a_resumed_run_seeks_into_the_same_stream(endless, drop_last):
    """TrainLoop positions a resumed run with seek(): the stream from iteration k on is the uninterrupted one's,
    across the stage change and the epoch ends (a first-stage epoch is 11 indices: 2 full batches and a partial
    one, which drop_last drops but the stage counts), and no batch is re-read."""
    inner = dict(type=LengthGroupedSampler, per_device_batch_size=4, endless=endless)
    full, sampler = _loop_stream(inner, 0, 30, drop_last)
    change = 4 if drop_last else 6  # 6 batches begun; with drop_last 2 of them were partial and dropped
    assert all(i >= 20 for b in full[:change] for i in b) and any(i < 20 for i in full[change])
    assert len(full[2]) == (4 if endless or drop_last else 3)  # the first epoch's partial batch (finite sampler)
    for k in (1, 2, 3, 5, 6, 7, 13, 21):
        resumed, resumed_sampler = _loop_stream(inner, k, 30, drop_last)
        assert resumed == full[k:], k
        assert resumed_sampler.batches == sampler.batches, k  # the same batches begun (what the stage counts)


def test_a_resume_seeks_with_a_loader_worker():
    """With a worker the sampler is drawn ahead; the new iterator after seek() still starts at the trained batch."""
    inner = dict(type=LengthGroupedSampler, per_device_batch_size=4, endless=True)
    full, _ = _loop_stream(inner, 0, 20, workers=1)
    assert _loop_stream(inner, 9, 20, workers=1)[0] == full[9:]


def test_seek_needs_a_wrapped_sampler_that_can_start_anywhere():
    ds = _Concat(8, 8)
    plain = TaskCurriculumSampler(ds, sampler=dict(type=EpochDefaultSampler, shuffle=True), first_iters=1,
                                  first_datasets=[0], batch_size=2)
    assert not plain.seekable
    with pytest.raises(TypeError, match="set_start"):
        plain.seek(3)


def test_a_resumed_run_without_seek_rereads_into_the_same_stream():
    """Wrapping a sampler without ``set_start``, ``TrainLoop`` resumes by re-reading the trained batches from a
    fresh sampler, which passes the same stage boundary and epochs (the loop's iterator sets the epoch at each
    rollover)."""
    from sa2va.engine.loops import EpochIterator

    def stream(n):
        ds = _Concat(20, 10)
        sampler = TaskCurriculumSampler(ds, sampler=dict(type=EpochDefaultSampler, shuffle=True),
                                        first_iters=6, first_datasets=[1], batch_size=4, seed=2)
        it = EpochIterator(DataLoader(ds, batch_size=4, sampler=sampler))
        return [next(it).tolist() for _ in range(n)]

    full = stream(20)
    assert all(i >= 20 for b in full[:6] for i in b) and any(i < 20 for i in full[6])
    assert stream(20) == full  # what the resumed run re-reads (its first k batches) and then trains on
