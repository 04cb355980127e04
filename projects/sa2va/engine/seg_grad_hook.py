"""A stage before the mask losses train the LLM: :class:`SegGradToLLMHook`."""
from __future__ import annotations

from mmengine.hooks import Hook

from ..registry import BUILDER
from .hooks import unwrap_model


@BUILDER.register_module()
class SegGradToLLMHook(Hook):
    """The mask losses reach the LLM only from iteration ``start_iter`` (0-based ``runner.iter``) on.

    Before it the model's ``seg_grad_to_llm`` is 0: ``text_hidden_fcs`` and SAM2 learn from the ``[SEG]`` hidden
    states as the LLM makes them (read detached), while the LLM still learns from its LM loss. From
    ``start_iter`` on it is ``scale`` (1.0: the original's full gradient). In the style of a first stage that
    trains only the new modules around a fixed LLM. The value follows from ``runner.iter`` at every iteration,
    so a resumed run is in the right stage.
    """

    priority = "NORMAL"

    def __init__(self, start_iter: int, scale: float = 1.0):
        if start_iter < 0 or scale < 0:
            raise ValueError(f"SegGradToLLMHook: need start_iter >= 0 and scale >= 0, got start_iter={start_iter}, "
                             f"scale={scale}")
        self.start_iter, self.scale = int(start_iter), float(scale)

    @staticmethod
    def _model(runner):
        model = unwrap_model(runner.model)
        if not hasattr(model, "seg_grad_to_llm"):
            raise TypeError(f"SegGradToLLMHook: {type(model).__name__} has no seg_grad_to_llm attribute "
                            f"(a VideoLLaVASAMModel has)")
        return model

    def before_train(self, runner):
        self._model(runner)  # a wrong model fails now, not at the first iteration

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = self._model(runner)
        value = 0.0 if runner.iter < self.start_iter else self.scale
        if value != model.seg_grad_to_llm:
            model.seg_grad_to_llm = value
            runner.logger.info(f"SegGradToLLMHook: the mask losses' gradient into the LLM x{value:g} from "
                               f"iteration {runner.iter + 1}")
