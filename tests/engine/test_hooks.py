"""DatasetSummaryHook sums the data issues carried by batches; LossCurveHook writes the global-batch loss."""
import logging
from types import SimpleNamespace

import pytest

from sa2va.engine.hooks import DatasetSummaryHook


def test_data_issues_are_summed_from_batches(caplog):
    hook = DatasetSummaryHook()
    for issues in ({"refcoco: skipped: missing_image": 1}, {}, {"refcoco: skipped: missing_image": 2,
                                                             "osprey: truncated: max_length": 1}):
        hook.before_train_iter(None, 0, {"data": {"data_issues": issues}, "data_samples": None})
    logger = logging.getLogger("test_hooks")
    runner = SimpleNamespace(model=SimpleNamespace(num_skipped_mismatch=1), logger=logger)
    with caplog.at_level(logging.INFO, logger="test_hooks"):
        hook.after_train(runner)
    text = caplog.text
    assert "refcoco: skipped: missing_image: 3" in text and "osprey: truncated: max_length: 1" in text
    assert "[SEG]/mask count mismatch: skipped: 1" in text


def test_mean_over_ranks():
    from sa2va.engine.hooks import mean_over_ranks

    rows = [{"loss": 3.0, "llm_loss": 2.0, "loss_mask": 1.0}, {"loss": 1.0, "llm_loss": 1.0, "loss_mask": 0.0}]
    assert mean_over_ranks(rows) == {"loss": 2.0, "llm_loss": 1.5, "loss_mask": 0.5, "per_rank": {
        "loss": [3.0, 1.0], "llm_loss": [2.0, 1.0], "loss_mask": [1.0, 0.0]}}
    odd = mean_over_ranks([{"loss": 1.0, "x_loss": 4.0}, {"loss": 3.0}])
    assert odd["x_loss"] == 4.0 and odd["per_rank"]["x_loss"] == [4.0, None]


def _loss_hook_runner(tmp_path):
    return SimpleNamespace(iter=6, work_dir=str(tmp_path))


def test_loss_curve_single_process_rows_unchanged(tmp_path):
    import json

    import torch

    from sa2va.engine.hooks import LossCurveHook

    hook = LossCurveHook()
    hook.after_train_iter(_loss_hook_runner(tmp_path), 0, None, {"loss": torch.tensor(2.5), "acc": 1.0})
    hook.after_train_iter(_loss_hook_runner(tmp_path), 0, None, {})
    assert [json.loads(x) for x in (tmp_path / "losses.jsonl").read_text().splitlines()] == [{"iter": 7, "loss": 2.5}]


def test_loss_curve_writes_the_global_batch_mean(tmp_path, monkeypatch):
    """Two ranks (faked): the row is the mean over ranks, with every rank's values under per_rank."""
    import json

    import torch

    import sa2va.engine.hooks as hooks_mod

    other_rank = {"loss": 1.0, "loss_mask": 0.0}  # e.g. rank 1's batch had no masks
    monkeypatch.setattr(hooks_mod, "get_world_size", lambda: 2)
    monkeypatch.setattr(hooks_mod, "all_gather_object", lambda obj: [obj, other_rank])
    hook = hooks_mod.LossCurveHook()
    hook.after_train_iter(_loss_hook_runner(tmp_path), 0, None,
                          {"loss": torch.tensor(3.0), "loss_mask": torch.tensor(0.5)})
    row = json.loads((tmp_path / "losses.jsonl").read_text())
    assert row == {"iter": 7, "loss": 2.0, "loss_mask": 0.25, "per_rank": {"loss": [3.0, 1.0], "loss_mask": [0.5, 0.0]}}
    assert hook.history == [{"iter": 7, "loss": 2.0, "loss_mask": 0.25}]  # the curve plots the means


def _gloo_worker(rank, world, port, work_dir):
    import os

    import torch
    import torch.distributed as dist

    from sa2va.engine.hooks import LossCurveHook

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        hook = LossCurveHook()
        runner = SimpleNamespace(iter=0, work_dir=work_dir)
        for it in range(3):
            runner.iter = it
            outputs = {"loss": torch.tensor(float(rank + it)), "loss_mask": torch.tensor(float(rank == 0))}
            hook.after_train_iter(runner, it, None, outputs if not (rank == 1 and it == 2) else {})
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_loss_curve_gathers_over_gloo_ranks(tmp_path):
    """Real 2-process gloo group; rank 1 has no loss terms at the last iteration and nothing hangs."""
    import json
    import random

    import torch.multiprocessing as mp

    mp.spawn(_gloo_worker, args=(2, random.randint(29500, 31500), str(tmp_path)), nprocs=2, join=True)
    rows = [json.loads(x) for x in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows] == [1, 2, 3]
    assert rows[0] == {"iter": 1, "loss": 0.5, "loss_mask": 0.5,
                       "per_rank": {"loss": [0.0, 1.0], "loss_mask": [1.0, 0.0]}}
    assert rows[2]["loss"] == 2.0 and rows[2]["per_rank"]["loss"] == [2.0, None]


def test_train_time_limit_stops_the_loop_once_the_budget_is_spent(monkeypatch, caplog):
    from sa2va.engine import hooks as hooks_module
    from sa2va.engine.hooks import TrainTimeLimitHook

    clock = iter([100.0, 130.0, 159.0, 161.0, 190.0])
    monkeypatch.setattr(hooks_module.time, "monotonic", lambda: next(clock))
    runner = SimpleNamespace(iter=0, max_iters=1000, train_loop=SimpleNamespace(stop_training=False),
                             logger=logging.getLogger("test_hooks"))
    hook = TrainTimeLimitHook(max_seconds=60)
    hook.before_train(runner)
    stopped_at = None
    with caplog.at_level(logging.INFO, logger="test_hooks"):
        for i in range(5):
            runner.iter = i
            hook.after_train_iter(runner, i)
            if runner.train_loop.stop_training and stopped_at is None:
                stopped_at = i
    assert stopped_at == 3  # 161 - 100 > 60; 159 - 100 is not
    assert caplog.text.count("stopping") == 1 and "iteration 4/1000" in caplog.text
    with pytest.raises(ValueError, match="max_seconds"):
        TrainTimeLimitHook(max_seconds=0)


def test_unwrap_model_only_unwraps_registered_wrappers():
    import torch

    from sa2va.engine import unwrap_model

    class HasModuleAttribute(torch.nn.Module):  # a model whose own attribute is called "module"
        def __init__(self):
            super().__init__()
            self.module = torch.nn.Linear(2, 2)

    model = HasModuleAttribute()
    assert unwrap_model(model) is model
    assert unwrap_model(torch.nn.DataParallel(model)) is model  # a wrapper in mmengine's MODEL_WRAPPERS


def test_unwrap_model_reaches_the_model_inside_mmengine_deepspeed_wrapper():
    import torch
    from mmengine._strategy.deepspeed import MMDeepSpeedEngineWrapper

    from sa2va.engine import unwrap_model

    model = torch.nn.Linear(2, 2)
    engine = SimpleNamespace(module=model)  # a DeepSpeedEngine keeps the model as .module
    assert unwrap_model(MMDeepSpeedEngineWrapper(model=engine)) is model
