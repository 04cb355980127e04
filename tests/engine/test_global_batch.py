"""Same global batch on 1 and on several ranks: which items each optimizer step trains on.

A run on ``W`` ranks with micro-batch ``b`` and ``A`` accumulation steps trains optimizer step ``s`` on iterations
``s*A .. s*A + A-1`` of every rank (mmengine/DeepSpeed accumulation, one ``TrainLoop`` iteration = one micro-batch).
These tests read the batches through a real ``DataLoader`` with the sampler, as the runner does, with the rank
faked through ``get_dist_info``.
"""
import numpy as np
import pytest
from torch.utils.data import DataLoader

import sa2va.datasets.samplers as samplers_mod
from sa2va.datasets import LengthGroupedSampler


class _Lengths:
    """Items are their own index; ``lengths`` as ConcatDataset gives them (negative: text-only)."""

    def __init__(self, n=203, seed=0):
        rng = np.random.default_rng(seed)
        lengths = rng.integers(50, 3000, n)
        lengths[::5] *= -1
        self.lengths = lengths.tolist()

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, i):
        return i


def _steps(monkeypatch, dataset, world, micro, accum, epochs=(0, 1), start_iter=0, per_device=None, **kw):
    """{(epoch, step): [micro-batch (tuple of items) of rank 0's accumulation steps in order, then rank 1's, ...]}."""
    per_rank = []
    for rank in range(world):
        monkeypatch.setattr(samplers_mod, "get_dist_info", lambda r=rank: (r, world))
        sampler = LengthGroupedSampler(dataset, per_device_batch_size=per_device or micro * accum, seed=7, **kw)
        batches = []
        for epoch in epochs:
            sampler.set_epoch(epoch)
            skip = start_iter if epoch == epochs[0] else 0
            if skip:
                sampler.set_start(skip * micro)  # what TrainLoop._position_data does on resume
            loader = DataLoader(dataset, batch_size=micro, sampler=sampler, collate_fn=tuple)
            batches += [(epoch, skip + i, b) for i, b in enumerate(loader)]
        per_rank.append(batches)
    steps: dict = {}
    for rank_batches in per_rank:
        for epoch, it, batch in rank_batches:
            steps.setdefault((epoch, it // accum), []).append(batch)
    return steps


@pytest.mark.parametrize("rank_split", ["strided", "contiguous"])
@pytest.mark.parametrize("world,accum", [(2, 1), (4, 1), (2, 2)])
def test_union_of_ranks_equals_one_process_window(monkeypatch, rank_split, world, accum):
    ds = _Lengths()
    one = _steps(monkeypatch, ds, world=1, micro=2, accum=world * accum, rank_split=rank_split)
    many = _steps(monkeypatch, ds, world=world, micro=2, accum=accum, rank_split=rank_split)
    assert one.keys() == many.keys() and len(one) > 20
    for key in one:
        a = sorted(i for b in one[key] for i in b)
        m = sorted(i for b in many[key] for i in b)
        assert a == m, key
        assert len(m) == 2 * world * accum  # a full global batch every step (round_up)


def test_contiguous_split_gives_the_same_micro_batches(monkeypatch):
    """Same micro-batches, so the same per-micro-batch losses and the same accumulated gradient."""
    ds = _Lengths()
    one = _steps(monkeypatch, ds, world=1, micro=2, accum=4, rank_split="contiguous")
    two = _steps(monkeypatch, ds, world=2, micro=2, accum=2, rank_split="contiguous")
    four = _steps(monkeypatch, ds, world=4, micro=2, accum=1, rank_split="contiguous")
    for key in one:
        assert one[key] == two[key] == four[key], key  # rank r's micro-batches = 1-process steps r*A .. r*A+A-1


def test_strided_split_pairs_items_differently(monkeypatch):
    """Why the parity benchmark uses 'contiguous': strided gives the same items per step, other micro-batches."""
    ds = _Lengths()
    one = _steps(monkeypatch, ds, world=1, micro=2, accum=2, rank_split="strided")
    two = _steps(monkeypatch, ds, world=2, micro=2, accum=1, rank_split="strided")
    assert sum(sorted(one[k]) != sorted(two[k]) for k in one) > len(one) // 2


def test_per_device_batch_size_must_follow_accumulation(monkeypatch):
    """The demo config computes per_device_batch_size = batch_size * accumulative_counts when it is read; overriding
    only optim_wrapper.accumulative_counts on the command line leaves it at the old value and the 1-GPU run then
    trains other items in each step (the order depends on per_device_batch_size * world_size)."""
    ds = _Lengths()
    stale = _steps(monkeypatch, ds, world=1, micro=2, accum=2, per_device=2)
    two = _steps(monkeypatch, ds, world=2, micro=2, accum=1)
    differ = sum(sorted(i for b in stale[k] for i in b) != sorted(i for b in two[k] for i in b) for k in two)
    assert differ > len(two) // 2


@pytest.mark.parametrize("rank_split", ["strided", "contiguous"])
def test_resume_mid_epoch_continues_the_same_steps(monkeypatch, rank_split):
    ds = _Lengths()
    full = _steps(monkeypatch, ds, world=2, micro=2, accum=1, epochs=(1,), rank_split=rank_split)
    resumed = _steps(monkeypatch, ds, world=2, micro=2, accum=1, epochs=(1,), start_iter=9, rank_split=rank_split)
    assert resumed == {k: v for k, v in full.items() if k[1] >= 9}


def test_contiguous_round_up_false_equal_counts(monkeypatch):
    ds = _Lengths(n=203)
    orders = []
    for rank in range(2):
        monkeypatch.setattr(samplers_mod, "get_dist_info", lambda r=rank: (r, 2))
        s = LengthGroupedSampler(ds, per_device_batch_size=4, seed=1, round_up=False, rank_split="contiguous")
        orders.append(list(s))
        assert len(s) == len(orders[-1]) == 101
    assert len(set(orders[0] + orders[1])) == 202  # disjoint, one item dropped


def test_rank_split_is_checked():
    with pytest.raises(ValueError, match="rank_split must be one of"):
        LengthGroupedSampler(_Lengths(n=10), per_device_batch_size=2, seed=0, rank_split="blocks")


def test_mmengine_default_sampler_same_items_per_step(monkeypatch):
    """mmengine's DefaultSampler (the demo's alternative) is strided over one permutation of the whole dataset: same
    items per step on any world size (as long as the epoch length is a multiple of the global batch)."""
    import mmengine.dataset.sampler as mm_sampler
    from mmengine.dataset import DefaultSampler

    ds = _Lengths(n=200)

    def steps(world, accum):
        out: dict = {}
        for rank in range(world):
            monkeypatch.setattr(mm_sampler, "get_dist_info", lambda r=rank: (r, world))
            s = DefaultSampler(ds, seed=3)
            for it, b in enumerate(DataLoader(ds, batch_size=2, sampler=s, collate_fn=tuple)):
                out.setdefault(it // accum, []).extend(b)
        return {k: sorted(v) for k, v in out.items()}

    assert steps(1, 2) == steps(2, 1)
