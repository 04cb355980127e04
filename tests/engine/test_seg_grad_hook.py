"""SegGradToLLMHook: the mask losses reach the LLM only from a given iteration on."""
import pytest
import torch.nn as nn
from mmengine.logging import MMLogger

from sa2va.engine import SegGradToLLMHook


class _Model(nn.Module):
    seg_grad_to_llm = 1.0


class _Runner:
    def __init__(self, model):
        self.model, self.iter, self.logger = model, 0, MMLogger.get_current_instance()


def test_stage_follows_the_iteration_including_a_resumed_run():
    model = _Model()
    runner = _Runner(model)
    hook = SegGradToLLMHook(start_iter=3)
    hook.before_train(runner)
    seen = []
    for it in range(6):
        runner.iter = it
        hook.before_train_iter(runner, it)
        seen.append(model.seg_grad_to_llm)
    assert seen == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    resumed = _Model()
    resumed.seg_grad_to_llm = 1.0
    runner = _Runner(resumed)
    runner.iter = 2  # resumed inside the first stage: gated again
    hook.before_train_iter(runner, 2)
    assert resumed.seg_grad_to_llm == 0.0


def test_scale_and_wrong_setups():
    model = _Model()
    runner = _Runner(model)
    runner.iter = 5
    SegGradToLLMHook(start_iter=2, scale=0.25).before_train_iter(runner, 5)
    assert model.seg_grad_to_llm == 0.25
    with pytest.raises(TypeError, match="Linear has no seg_grad_to_llm"):
        SegGradToLLMHook(start_iter=2).before_train(_Runner(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="start_iter >= 0"):
        SegGradToLLMHook(start_iter=-1)
