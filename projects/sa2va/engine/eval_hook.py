"""Evaluation during training: referring-segmentation cIoU/gIoU (and optionally region-caption accuracy) on a
small held-out subset every ``interval`` iterations and at the end, logged like any other scalar. The region
captions are also written to ``{work_dir}/eval/{name}_captions_iter{N}.json`` (prediction + references per region)."""
from __future__ import annotations

import json
import os.path as osp
import re

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.utils import mkdir_or_exist

from ..registry import BUILDER
from .hooks import unwrap_model


def _norm(text: str) -> str:
    """Lower case, punctuation dropped, words single-spaced: REFER's tokenised ``sent`` ("on the left , near the
    top") and a generated sentence ("on the left, near the top.") compare equal."""
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


def caption_exact_match(records: list[dict]) -> float:
    """Share of regions whose caption equals one of its references (lower case, punctuation removed)."""
    if not records:
        return 0.0
    hits = sum(_norm(r["prediction"]) in {_norm(t) for t in r["references"]} for r in records)
    return hits / len(records)


@BUILDER.register_module()
class ReferEvalHook(Hook):
    """Args:
        datasets: ``{name: dataset config}`` of referring-segmentation splits (``ReferSegmDataset(split='val')``).
        caption_datasets: ``{name: dataset config}`` of region-caption splits (scored by exact match; the COCO
            caption metrics are in ``tools/test.py``).
        interval: evaluate every ``interval`` iterations (0: only at the end of training).
        max_items: images per split (a quick check; ``None`` = whole split).
    """

    priority = "LOW"

    def __init__(self, datasets: dict | None = None, caption_datasets: dict | None = None, interval: int = 0,
                 max_items: int | None = 20, max_new_tokens: int = 32):
        self.dataset_cfgs = dict(datasets or {})
        self.caption_cfgs = dict(caption_datasets or {})
        self.interval = interval
        self.max_items = max_items
        self.max_new_tokens = max_new_tokens
        self._built: dict = {}

    def _dataset(self, kind: str, name: str, cfg):
        """The built dataset of ``(kind, name)``: a segmentation and a caption split may share a name."""
        if (kind, name) not in self._built:
            self._built[kind, name] = BUILDER.build(cfg) if isinstance(cfg, dict) else cfg
        return self._built[kind, name]

    def evaluate(self, runner) -> dict:
        from ..evaluation.caption_eval import evaluate_region_captions
        from ..evaluation.refer_eval import evaluate_refer

        model = unwrap_model(runner.model)
        was_training = model.training
        model.eval()
        results = {}
        try:
            for name, cfg in self.dataset_cfgs.items():
                r = evaluate_refer(model, self._dataset("seg", name, cfg), max_items=self.max_items,
                                   max_new_tokens=self.max_new_tokens)
                results.update({f"{name}/cIoU": r["cIoU"], f"{name}/gIoU": r["gIoU"],
                                f"{name}/no_seg": r["n_no_seg"] / max(r["n_sentences"], 1)})
            for name, cfg in self.caption_cfgs.items():
                r = evaluate_region_captions(model, self._dataset("caption", name, cfg), max_items=self.max_items,
                                             metrics=(), return_captions=True, max_new_tokens=self.max_new_tokens)
                results[f"{name}/caption_exact_match"] = caption_exact_match(r["captions"])
                self._write_captions(runner, name, r["captions"])
        finally:
            model.train(was_training)
        for k, v in results.items():
            runner.message_hub.update_scalar(f"val/{k}", v)
        runner.logger.info("evaluation at iter %d: %s", runner.iter,
                           ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
        return results

    def _write_captions(self, runner, name: str, records: list[dict]) -> None:
        if not is_main_process():
            return
        out_dir = osp.join(runner.work_dir, "eval")
        mkdir_or_exist(out_dir)
        keep = ("image_id", "ref_id", "prediction", "references")
        with open(osp.join(out_dir, f"{name}_captions_iter{runner.iter}.json"), "w") as f:
            json.dump([{k: r[k] for k in keep} for r in records], f, indent=1)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self.interval and (runner.iter + 1) % self.interval == 0 and runner.iter + 1 < runner.max_iters:
            self.evaluate(runner)

    def after_train(self, runner):
        self.evaluate(runner)
