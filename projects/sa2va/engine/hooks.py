"""Training hooks for what users expect to see: throughput, loss curves, dataset and data-issue summaries."""
from __future__ import annotations

import json
import os.path as osp
import time
from collections import Counter

import torch
from mmengine.dist import all_gather_object, all_reduce, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..registry import BUILDER


def unwrap_model(model):
    """The model inside an mmengine model wrapper (DDP, FSDP, the DeepSpeed engine wrapper), else ``model``."""
    return model.module if is_model_wrapper(model) else model


def _unwrap_dataset(dataset):
    """The datasets inside a ConcatDataset (ours exposes ``datasets``), else [dataset]."""
    return list(getattr(dataset, "datasets", [dataset]))


@BUILDER.register_module()
class ThroughputHook(Hook):
    """Logs ``train/samples_per_s`` and ``train/tokens_per_s`` (all ranks together, real tokens only)."""

    priority = "NORMAL"

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._t0 = time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        data = data_batch["data"] if isinstance(data_batch, dict) and "data" in data_batch else data_batch
        if not isinstance(data, dict) or "input_ids" not in data:
            return
        dt = time.perf_counter() - self._t0
        world = get_world_size()
        samples = data["input_ids"].shape[0] * world
        mask = data.get("attention_mask")
        tokens = int(mask.sum()) if mask is not None else data["input_ids"].numel()
        if world > 1:  # token counts differ per rank
            t = torch.tensor([tokens], dtype=torch.float64, device=data["input_ids"].device)
            all_reduce(t)
            tokens = int(t.item())
        runner.message_hub.update_scalar("train/samples_per_s", samples / dt)
        runner.message_hub.update_scalar("train/tokens_per_s", tokens / dt)


def mean_over_ranks(rows: list[dict]) -> dict:
    """One iteration's loss terms of every rank -> their mean per term (the loss of the global batch, as the
    averaged gradient sees it: a rank without masks contributes its 0.0) plus ``per_rank``: {term: [value per rank]}
    (None where a rank lacks the term; the mean is over the ranks that have it)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    out = {}
    for k in keys:
        values = [r[k] for r in rows if k in r]
        out[k] = sum(values) / len(values)
    out["per_rank"] = {k: [r.get(k) for r in rows] for k in keys}
    return out


@BUILDER.register_module()
class TrainTimeLimitHook(Hook):
    """Ends training after ``max_seconds`` of training (counted from the first iteration, so asset writing and
    model building are not in it); the end-of-training hooks (evaluation, last checkpoint) still run. Every rank
    stops at the same iteration: rank 0's clock decides. The schedule is not shortened: a run stopped early
    ends at the learning rate it had reached."""

    priority = "VERY_LOW"

    def __init__(self, max_seconds: float):
        if max_seconds <= 0:
            raise ValueError(f"TrainTimeLimitHook: max_seconds must be > 0, got {max_seconds}")
        self.max_seconds = float(max_seconds)
        self._start = None

    def before_train(self, runner):
        self._start = None

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        now = time.monotonic()
        if self._start is None:
            self._start = now
        over = now - self._start > self.max_seconds
        if get_world_size() > 1:
            flag = torch.tensor([float(over)], device=next(runner.model.parameters()).device)
            torch.distributed.broadcast(flag, src=0)
            over = bool(flag.item())
        if over and not runner.train_loop.stop_training:
            runner.logger.info(f"TrainTimeLimitHook: {self.max_seconds:.0f} s of training reached at iteration "
                               f"{runner.iter + 1}/{runner.max_iters}; stopping")
            runner.train_loop.stop_training = True


@BUILDER.register_module()
class LossCurveHook(Hook):
    """Writes ``loss_curve.png`` (every loss term and the total, per iteration) to the work dir at each
    checkpoint and at the end, plus ``losses.jsonl`` with the raw per-iteration values.

    With several ranks every rank sends its loss terms to rank 0 (one small ``all_gather_object`` per iteration):
    ``losses.jsonl`` and the curve hold the mean over ranks, i.e. the loss of the whole global batch, and each
    row adds ``per_rank`` (each rank's values; see :func:`mean_over_ranks`). The mmengine log lines show rank 0's
    values only."""

    priority = "LOW"

    def __init__(self, filename: str = "loss_curve.png"):
        self.filename = filename
        self.history: list[dict] = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        terms = {k: float(v.detach()) if torch.is_tensor(v) else float(v)
                 for k, v in (outputs or {}).items() if "loss" in k}
        per_rank = None
        if get_world_size() > 1:  # a collective: every rank gets here every iteration, with or without outputs
            terms = mean_over_ranks(all_gather_object(terms))
            per_rank = terms.pop("per_rank")
        if not terms:
            return
        row = {"iter": runner.iter + 1, **terms}
        self.history.append(row)
        if is_main_process():
            with open(osp.join(runner.work_dir, "losses.jsonl"), "a") as f:
                f.write(json.dumps(row if per_rank is None else dict(row, per_rank=per_rank)) + "\n")

    def after_save_checkpoint(self, runner, checkpoint):
        self.plot(runner)

    def after_train(self, runner):
        self.plot(runner)

    def plot(self, runner) -> None:
        if not is_main_process() or not self.history:
            return
        try:
            import matplotlib
        except ImportError:
            runner.logger.warning("matplotlib is not installed: no loss_curve.png (losses.jsonl has the values)")
            return
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = [k for k in self.history[0] if k != "iter"]
        its = [r["iter"] for r in self.history]
        fig, ax = plt.subplots(figsize=(8, 4.5))
        window = max(1, min(20, len(its) // 20))
        for k in keys:
            values = [r.get(k, float("nan")) for r in self.history]
            line, = ax.plot(its, values, linewidth=0.6, alpha=0.3)
            # mask terms are exactly 0 on batches without masks: average only the batches that had masks
            skip_zero = k in ("loss_mask", "loss_dice")
            smooth = []
            for i in range(len(values)):
                win = [v for v in values[max(0, i - window + 1):i + 1] if not (skip_zero and v == 0.0)]
                smooth.append(sum(win) / len(win) if win else float("nan"))
            ax.plot(its, smooth, color=line.get_color(), linewidth=1.6, label=f"{k} (mean of {window})")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(osp.basename(runner.work_dir))
        fig.tight_layout()
        fig.savefig(osp.join(runner.work_dir, self.filename), dpi=110)
        plt.close(fig)


@BUILDER.register_module()
class DatasetSummaryHook(Hook):
    """At the start: per dataset samples, repeats and share of the epoch. At the end: records skipped or
    truncated, per dataset and reason, summed over ranks and dataloader workers (the counts travel with the
    batches as ``data_issues``)."""

    priority = "VERY_LOW"

    def __init__(self):
        self.issues: Counter = Counter()

    def before_train(self, runner):
        dataset = runner.train_dataloader.dataset
        rows = dataset.summary() if hasattr(dataset, "summary") else [
            {"name": type(d).__name__, "samples": len(d), "repeats": getattr(d, "repeats", 1)}
            for d in _unwrap_dataset(dataset)]
        total = sum(r["samples"] for r in rows) or 1
        lines = [f"{'dataset':<36}{'samples':>10}{'repeats':>9}{'share':>8}"]
        for r in rows:
            share = r.get("share", r["samples"] / total)
            lines.append(f"{str(r['name'])[:35]:<36}{r['samples']:>10}{r.get('repeats', 1):>9}{share:>8.1%}")
        lines.append(f"{'total':<36}{total:>10}")
        runner.logger.info("training data:\n" + "\n".join(lines))

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        data = data_batch.get("data") if isinstance(data_batch, dict) else None
        if isinstance(data, dict):
            self.issues.update(data.get("data_issues") or {})

    def after_train(self, runner):
        from mmengine.dist import all_gather_object

        counts: Counter = Counter()
        for rank_counts in all_gather_object(dict(self.issues)):  # every rank's batches
            counts.update(rank_counts)
        model = unwrap_model(runner.model)
        if getattr(model, "num_skipped_mismatch", 0):
            counts["model: [SEG]/mask count mismatch: skipped"] += model.num_skipped_mismatch
        if not counts:
            runner.logger.info("data issues: no record was skipped or truncated")
            return
        lines = [f"{k}: {n}" for k, n in sorted(counts.items())]
        runner.logger.warning("data issues during training (all ranks and workers):\n  " + "\n  ".join(lines))
