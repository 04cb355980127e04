"""Small helpers for reading and adjusting built-or-not config dicts."""
from __future__ import annotations

from collections.abc import Mapping


def type_name(t) -> str:
    """Short name of a config ``type``: a class/function (``AmpOptimWrapper``) or a (dotted) string."""
    name = t if isinstance(t, str) else getattr(t, "__name__", str(t))
    return name.rsplit(".", 1)[-1]


def set_model_dtype(node, dtype: str) -> None:
    """Set every ``torch_dtype`` inside a (nested) model config."""
    if isinstance(node, Mapping):
        if "torch_dtype" in node:
            node["torch_dtype"] = dtype
        for v in node.values():
            set_model_dtype(v, dtype)
    elif isinstance(node, (list, tuple)):
        for v in node:
            set_model_dtype(v, dtype)
