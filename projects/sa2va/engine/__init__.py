from .checkpoint import AtomicCheckpointHook, find_resumable_checkpoint, register_checkpoint_safe_globals
from .eval_hook import ReferEvalHook
from .hooks import DatasetSummaryHook, LossCurveHook, ThroughputHook, TrainTimeLimitHook, unwrap_model
from .loops import TrainLoop
from .optim import GroupLrStepHook, MergedGroupsOptimWrapperConstructor
from .resume_state import ResumeStateHook
from .runner import build_runner, prepare_config
from .seg_grad_hook import SegGradToLLMHook

__all__ = ["AtomicCheckpointHook", "DatasetSummaryHook", "GroupLrStepHook", "LossCurveHook",
           "MergedGroupsOptimWrapperConstructor", "ReferEvalHook", "ResumeStateHook", "SegGradToLLMHook",
           "ThroughputHook", "TrainLoop", "TrainTimeLimitHook", "build_runner", "find_resumable_checkpoint",
           "prepare_config", "register_checkpoint_safe_globals", "unwrap_model"]
