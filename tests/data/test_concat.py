"""ConcatDataset: building from config dicts, the datasets' own repeats, lengths, summary."""
import pytest
from mmengine.config import ConfigDict
from torch.utils.data import Dataset

from sa2va import BUILDER
from sa2va.datasets import ConcatDataset, LengthGroupedSampler


class ToyDataset(Dataset):
    """Serves its records ``repeats`` times, as the package's datasets do."""

    def __init__(self, name, lengths, repeats=1):
        self.name = name
        self.records = list(lengths)
        self.repeats = repeats

    @property
    def num_records(self):
        return len(self.records)

    @property
    def lengths(self):
        return self.records * self.repeats

    def __len__(self):
        return len(self.records) * self.repeats

    def __getitem__(self, i):
        j = i % len(self.records)
        return dict(data_source=self.name, index=j, length=self.records[j])


def test_build_from_configs_and_objects():
    cat = ConcatDataset([
        ConfigDict(type=ToyDataset, name="refcoco", lengths=[10, 20, 30], repeats=2),
        dict(type=ToyDataset, name="llava", lengths=[-5, 7]),
        ToyDataset("osprey", [1]),
    ])
    assert [type(d) for d in cat.datasets] == [ToyDataset] * 3
    assert len(cat) == 3 * 2 + 2 + 1
    assert cat.lengths == [10, 20, 30, 10, 20, 30, -5, 7, 1]
    assert [cat[i]["index"] for i in range(len(cat))] == [0, 1, 2, 0, 1, 2, 0, 1, 0]
    assert [cat[i]["data_source"] for i in (0, 5, 6, 8, -1)] == ["refcoco", "refcoco", "llava", "osprey", "osprey"]
    assert [cat[i]["length"] for i in range(len(cat))] == cat.lengths


def test_summary():
    cat = ConcatDataset([ToyDataset("refcoco", [1] * 30), ToyDataset("osprey", [1] * 10, repeats=3)])
    assert cat.summary() == [dict(name="refcoco", samples=30, repeats=1, items=30, share=0.5),
                             dict(name="osprey", samples=10, repeats=3, items=30, share=0.5)]
    table = cat.summary_table()
    assert "refcoco" in table and "50.0%" in table and table.splitlines()[-1].split()[:3] == ["total", "40", "60"]


def test_built_through_the_registry_and_sampled():
    cat = BUILDER.build(dict(type=ConcatDataset,
                             datasets=[dict(type=ToyDataset, name="a", lengths=[3, -4, 5, 6], repeats=2)]))
    sampler = LengthGroupedSampler(cat, per_device_batch_size=2, seed=0)
    assert sorted(sampler) == sorted(range(8))


def test_errors():
    class NoLengths(Dataset):
        def __len__(self):
            return 2

    with pytest.raises(TypeError, match="no 'lengths'"):
        ConcatDataset([NoLengths()]).lengths
    with pytest.raises(ValueError, match="empty"):
        ConcatDataset([ToyDataset("a", [])])
    with pytest.raises(ValueError, match="at least one"):
        ConcatDataset([])
