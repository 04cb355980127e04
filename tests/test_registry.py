import pytest
from mmengine.config import Config

from sa2va import BUILDER


class Inner:
    def __init__(self, x):
        self.x = x


class Outer:
    def __init__(self, inner, items, plain):
        self.inner, self.items, self.plain = inner, items, plain


def make_pair(a, b=2):
    return (a, b)


def test_build_recursive_with_classes_functions_and_names():
    if "Inner" not in BUILDER:
        BUILDER.register_module(module=Inner)
    cfg = dict(type=Outer, inner=dict(type="Inner", x=1), items=[dict(type=make_pair, a=3), 4],
               plain=dict(k=dict(type=Inner, x=5)))
    obj = BUILDER.build(Config(dict(cfg=cfg)).cfg)  # ConfigDicts behave like dicts
    assert isinstance(obj.inner, Inner) and obj.inner.x == 1
    assert obj.items == [(3, 2), 4]
    assert isinstance(obj.plain, dict) and obj.plain["k"].x == 5


def test_unknown_name_is_a_clear_error():
    with pytest.raises(KeyError, match="not registered"):
        BUILDER.build(dict(type="NoSuchThing"))
