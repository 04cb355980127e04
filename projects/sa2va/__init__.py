"""sa2va-train: config-driven training of Sa2VA-style grounded multimodal models."""
from .registry import BUILDER

__version__ = "0.1.0"
__all__ = ["BUILDER"]
