from .internvl import InternVL_Slowfast, InternVLMLLM
from .losses import CrossEntropyLoss, DiceLoss
from .sa2va_model import VideoLLaVASAMModel
from .sam2_runner import SAM2TrainRunner

__all__ = ["InternVLMLLM", "InternVL_Slowfast", "SAM2TrainRunner", "VideoLLaVASAMModel", "CrossEntropyLoss",
           "DiceLoss"]
