"""One registry for everything a config can name.

Configs are declarative Python files in the style of xtuner 0.x: every buildable thing is a
``dict(type=ClassOrFunction, **kwargs)``. ``BUILDER.build(cfg)`` builds such a dict **recursively**:
nested dicts (and lists/tuples of dicts) that carry a ``type`` key are built first, bottom-up, and the
results are passed as arguments. ``type`` may be a class, a function, or a name registered in ``BUILDER``.
"""
from __future__ import annotations

from typing import Any

from mmengine.config import ConfigDict
from mmengine.registry import Registry


def _is_buildable(obj: Any) -> bool:
    return isinstance(obj, dict) and "type" in obj


def build_recursive(cfg: Any, registry: Registry | None = None, default_args: dict | None = None) -> Any:
    """Build ``cfg`` and every buildable value nested inside it.

    Plain dicts without ``type`` are walked (their values may be buildable) but stay dicts.
    """
    registry = registry if registry is not None else BUILDER
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(build_recursive(c, registry) for c in cfg)
    if not isinstance(cfg, dict):
        return cfg
    if not _is_buildable(cfg):
        return {k: build_recursive(v, registry) for k, v in cfg.items()}
    args = {k: build_recursive(v, registry) for k, v in cfg.items() if k != "type"}
    if default_args:
        for k, v in default_args.items():
            args.setdefault(k, v)
    obj_type = cfg["type"]
    if isinstance(obj_type, str):
        obj_cls = registry.get(obj_type)
        if obj_cls is None:
            raise KeyError(
                f"'{obj_type}' is not registered in the '{registry.name}' registry; "
                f"pass the class itself as type= or register it with @BUILDER.register_module()"
            )
    elif callable(obj_type):
        obj_cls = obj_type
    else:
        raise TypeError(f"type= must be a class, a function or a registered name, got {obj_type!r}")
    try:
        return obj_cls(**args)
    except Exception as e:
        if hasattr(e, "add_note"):  # Python >= 3.11: say which config entry failed
            e.add_note(f"while building {getattr(obj_cls, '__qualname__', repr(obj_cls))}")
        raise


def _build_func(cfg: dict | ConfigDict, registry: Registry, default_args: dict | None = None) -> Any:
    return build_recursive(cfg, registry, default_args)


BUILDER = Registry("sa2va", build_func=_build_func)
