"""LengthGroupedSampler: grouping by length and modality, determinism, equal counts per rank."""
import numpy as np
import pytest

import sa2va.datasets.samplers as samplers_mod
from sa2va.datasets import LengthGroupedSampler


class _Lengths:
    def __init__(self, lengths):
        self.lengths = list(lengths)

    def __len__(self):
        return len(self.lengths)


def _dataset(n=200, text_every=4, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(50, 5000, n)
    lengths[::text_every] *= -1  # every 4th item text-only
    return _Lengths(lengths.tolist())


def _per_rank(monkeypatch, dataset, world, epoch=0, **kw):
    orders = []
    for rank in range(world):
        monkeypatch.setattr(samplers_mod, "get_dist_info", lambda r=rank: (r, world))
        s = LengthGroupedSampler(dataset, seed=3, **kw)
        s.set_epoch(epoch)
        orders.append(list(s))
        assert len(s) == len(orders[-1])
    return orders


def test_groups_are_sorted_by_length_within_one_modality():
    ds = _dataset()
    s = LengthGroupedSampler(ds, per_device_batch_size=4, seed=0, mega_batch_mult=1000)  # one mega-batch
    order = s.epoch_order()
    lengths = np.array(ds.lengths)
    groups = [order[i:i + 4] for i in range(0, len(order), 4)]
    n_img, n_txt = int((lengths >= 0).sum()), int((lengths < 0).sum())
    full = groups[: n_img // 4 + n_txt // 4]
    for g in full:
        signs = np.sign(lengths[g])
        assert (signs == signs[0]).all(), "a full group mixes modalities"
    # with one mega-batch per modality, groups are contiguous runs of the sorted lengths: tight length ranges
    spread = np.mean([np.ptp(np.abs(lengths[g])) for g in full])
    shuffled = np.random.default_rng(0).permutation(200).reshape(-1, 4)
    random_spread = np.mean([np.ptp(np.abs(lengths[g])) for g in shuffled])
    assert spread < random_spread / 10
    # the longest item comes first
    assert abs(lengths[order[0]]) == np.abs(lengths).max()


def test_every_index_once_and_all_ranks_equal(monkeypatch):
    ds = _dataset(n=203)
    orders = _per_rank(monkeypatch, ds, world=2, per_device_batch_size=4)
    assert len(orders[0]) == len(orders[1]) == 104  # ceil(203 / 8) * 8 / 2
    seen = orders[0] + orders[1]
    assert set(seen) == set(range(203))  # everything, a few repeated to round up
    # a rank's micro-batch of 4 holds items of one modality, similar lengths (same group of 8)
    lengths = np.array(ds.lengths)
    s = LengthGroupedSampler(ds, per_device_batch_size=4, seed=3)
    full = s.epoch_order()[: 8 * ((lengths >= 0).sum() // 8 + (lengths < 0).sum() // 8)]
    for step in range(len(full) // 8):
        group = full[step * 8:(step + 1) * 8]
        assert len(set(np.sign(lengths[group]))) == 1


def test_round_up_false_drops_to_world_multiple(monkeypatch):
    orders = _per_rank(monkeypatch, _dataset(n=203), world=2, per_device_batch_size=4, round_up=False)
    assert len(orders[0]) == len(orders[1]) == 101
    assert len(set(orders[0] + orders[1])) == 202


def test_deterministic_per_seed_and_epoch(monkeypatch):
    ds = _dataset()
    a = _per_rank(monkeypatch, ds, world=1, epoch=0, per_device_batch_size=4)
    b = _per_rank(monkeypatch, ds, world=1, epoch=0, per_device_batch_size=4)
    c = _per_rank(monkeypatch, ds, world=1, epoch=1, per_device_batch_size=4)
    assert a == b and a != c
    other_seed = LengthGroupedSampler(ds, per_device_batch_size=4, seed=4)
    assert list(other_seed) != a[0]


def test_single_modality_small_dataset():
    s = LengthGroupedSampler(_Lengths([5, 1, 9, 3, 7]), per_device_batch_size=2, seed=0)
    order = list(s)
    assert len(order) == 6 and set(order) == {0, 1, 2, 3, 4} and order[0] == 2


def test_reads_modality_length_and_rejects_missing():
    class Xtuner:
        modality_length = [100, 100, -100, 100]

        def __len__(self):
            return 4

    assert sorted(LengthGroupedSampler(Xtuner(), 2, length_property="modality_length", seed=0)) == [0, 1, 2, 3]
    with pytest.raises(TypeError, match="no 'length'"):
        LengthGroupedSampler(object.__new__(type("NoLengths", (), {"__len__": lambda self: 3})), 2, seed=0)


def test_built_by_mmengine_with_default_args():
    from mmengine.registry import DATA_SAMPLERS

    sampler = DATA_SAMPLERS.build(dict(type=LengthGroupedSampler, per_device_batch_size=2),
                                  default_args=dict(dataset=_dataset(n=10), seed=5))
    assert sampler.seed == 5 and len(sampler) == 10


def test_set_start_skips_exactly_once():
    from sa2va.datasets.samplers import LengthGroupedSampler

    class _D:
        lengths = list(range(1, 41))

        def __len__(self):
            return 40

    s = LengthGroupedSampler(_D(), per_device_batch_size=4, seed=3)
    s.set_epoch(2)
    full = list(s)
    s.set_start(12)
    assert len(s) == len(full) - 12
    assert list(s) == full[12:]
    assert list(s) == full  # back to the whole epoch afterwards


def test_indices_carry_the_epoch_to_datasets_that_accept_it():
    class _Accepting(_Lengths):
        accepts_epoch_index = True

    plain = LengthGroupedSampler(_dataset(n=20), per_device_batch_size=4, seed=0)
    plain.set_epoch(2)
    assert all(type(i) is int for i in plain)
    accepting = LengthGroupedSampler(_Accepting(_dataset(n=20).lengths), per_device_batch_size=4, seed=0)
    accepting.set_epoch(2)
    got = list(accepting)
    assert got == [samplers_mod.EpochIndex(2, i) for i in plain.rank_order()]


def _epoch_default_sampler(ds):
    from sa2va.datasets import EpochDefaultSampler

    return EpochDefaultSampler(ds, shuffle=True, seed=0)


@pytest.mark.parametrize("make_sampler", [lambda ds: LengthGroupedSampler(ds, per_device_batch_size=4, seed=0),
                                          _epoch_default_sampler], ids=["length_grouped", "epoch_default"])
def test_persistent_workers_draw_each_epochs_own_items(make_refer, make_sampler):
    """Item randomness depends on the epoch. A persistent worker keeps the dataset copy it started with, so
    only the epoch inside the index tells it which epoch it draws for."""
    from torch.utils.data import DataLoader

    from sa2va.datasets import ConcatDataset

    ds = ConcatDataset([make_refer(num_classes_per_sample=1, seed=0), make_refer(num_classes_per_sample=1, seed=1)])
    sampler = make_sampler(ds)
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=1, persistent_workers=True,
                        collate_fn=lambda b: b)
    per_epoch = []
    for epoch in range(3):
        sampler.set_epoch(epoch)  # what mmengine's loop does; the worker's dataset copy does not see it
        order = [i.index for i in sampler]
        assert all(i.epoch == epoch for i in sampler)
        items = [it for batch in loader for it in batch]
        texts = {i: it["input_ids"].tolist() for i, it in zip(order, items)}
        fresh = [ds[samplers_mod.EpochIndex(epoch, i)]["input_ids"].tolist() for i in sorted(texts)]
        assert [texts[i] for i in sorted(texts)] == fresh  # = drawn in this process for that epoch
        per_epoch.append(texts)
    changed = sum(per_epoch[0][i] != per_epoch[2][i] for i in per_epoch[0])
    assert changed >= len(per_epoch[0]) // 4, changed  # other refs / sentences in another epoch


def test_epoch_default_sampler_keeps_mmengines_order():
    from mmengine.dataset import DefaultSampler

    from sa2va.datasets import EpochDefaultSampler

    class _Accepting(_Lengths):
        accepts_epoch_index = True

    ds = _Accepting(range(30))
    ours, theirs = EpochDefaultSampler(ds, shuffle=True, seed=5), DefaultSampler(ds, shuffle=True, seed=5)
    for s in (ours, theirs):
        s.set_epoch(3)
    assert [i.index for i in ours] == list(theirs) and {i.epoch for i in ours} == {3}
    plain = EpochDefaultSampler(_Lengths(range(30)), shuffle=True, seed=5)
    plain.set_epoch(3)
    assert list(plain) == list(theirs)  # plain ints for datasets that do not take an EpochIndex


def test_train_loop_warns_when_the_sampler_loses_the_epoch():
    from mmengine.dataset import DefaultSampler
    from torch.utils.data import DataLoader

    from sa2va.datasets import EpochDefaultSampler
    from sa2va.engine.loops import epoch_warning

    class _Accepting(_Lengths):
        accepts_epoch_index = True

    ds = _Accepting(range(8))
    warning = epoch_warning(DataLoader(ds, sampler=DefaultSampler(ds, seed=0)))
    assert "DefaultSampler does not hand the epoch" in warning and "EpochDefaultSampler" in warning
    assert epoch_warning(DataLoader(ds, sampler=EpochDefaultSampler(ds, seed=0))) is None
    assert epoch_warning(DataLoader(ds, sampler=LengthGroupedSampler(ds, per_device_batch_size=2, seed=0))) is None
    plain = _Lengths(range(8))  # a dataset without per-epoch draws: nothing to lose
    assert epoch_warning(DataLoader(plain, sampler=DefaultSampler(plain, seed=0))) is None


def test_endless_goes_on_epoch_after_epoch_and_resumes_exactly():
    """endless=True: one iteration yields epoch e, e+1, ... each exactly as the finite sampler orders it (with its
    epoch on each index); set_epoch + set_start start the stream where a resumed run must; len() is one epoch."""
    import itertools

    from torch.utils.data import DataLoader

    class _Accepting(_Lengths):
        accepts_epoch_index = True

        def __getitem__(self, index):
            return index.epoch * 1000 + index.index

    lengths = _dataset(n=22).lengths  # 22 items, batches of 4: round_up pads every epoch to 24
    finite = LengthGroupedSampler(_Accepting(lengths), per_device_batch_size=4, seed=1)
    epochs = []
    for e in (2, 3, 4):
        finite.set_epoch(e)
        epochs += list(finite)
    endless = LengthGroupedSampler(_Accepting(lengths), per_device_batch_size=4, seed=1, endless=True)
    endless.set_epoch(2)
    assert len(endless) == 24
    assert list(itertools.islice(iter(endless), 72)) == epochs
    assert {i.epoch for i in epochs[24:48]} == {3}
    endless.set_epoch(3)
    endless.set_start(8)  # a run resumed at epoch 3, batch 2
    assert list(itertools.islice(iter(endless), 40)) == epochs[32:72]
    assert list(itertools.islice(iter(endless), 4)) == epochs[24:28]  # set_start holds for one iteration only

    # a DataLoader over it never ends an epoch: batches run on into the next epoch with no new iterator
    endless.set_epoch(2)
    loader = DataLoader(_Accepting(lengths), batch_size=4, sampler=endless, num_workers=1)
    batches = list(itertools.islice(iter(loader), 12))
    assert [b.tolist() for b in batches] == [[i.epoch * 1000 + i.index for i in epochs[k:k + 4]]
                                             for k in range(0, 48, 4)]

    with pytest.raises(ValueError, match="round_up"):
        LengthGroupedSampler(_Accepting(lengths), per_device_batch_size=4, endless=True, round_up=False)
