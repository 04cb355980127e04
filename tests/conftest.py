"""Session-wide fixtures: tiny real-architecture checkpoints written once per test session."""
import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Paths of a tiny native-InternVL directory and a tiny Meta-format SAM2 checkpoint + YAML."""
    from sa2va.tiny_models import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("tiny_models"))
