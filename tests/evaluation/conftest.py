import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # eval_helpers


@pytest.fixture(scope="module")
def tiny_model(tiny_models):
    from eval_helpers import build_tiny_model

    return build_tiny_model(tiny_models)
