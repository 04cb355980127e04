"""Shared helpers for the encoding / tiling / collate / sampler / concat / check_data tests.

``tiny_tokenizer()`` writes one tiny InternVL directory per test process and returns the run tokenizer
(``sa2va.tokenizer.build_tokenizer``, with Sa2VA's special tokens). Import the ``tokenizer`` fixture into a
test module with ``from encoding_helpers import tokenizer  # noqa: F401``.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile

import pytest


@functools.lru_cache(maxsize=1)
def tiny_internvl_dir() -> str:
    from sa2va.tiny_models import make_tiny_internvl

    root = tempfile.mkdtemp(prefix="sa2va_tiny_tok_")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return str(make_tiny_internvl(root))


def tiny_tokenizer():
    from sa2va.tokenizer import build_tokenizer

    return build_tokenizer(tiny_internvl_dir())


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()
