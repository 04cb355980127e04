"""Inference: image + text -> answer + masks; image + region masks -> captions."""
from .predictor import Prediction, Sa2VAPredictor, as_pil_image, seg_phrases

__all__ = ["Prediction", "Sa2VAPredictor", "as_pil_image", "seg_phrases"]
