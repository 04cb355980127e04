"""Evaluation metrics: referring segmentation (cIoU / gIoU) and region captions (COCO caption metrics).

Referring segmentation (:class:`ReferSegMetric`)
-----------------------------------------------
Every evaluated sentence contributes one record: its intersection ``I`` and union ``U`` (foreground pixels of the
predicted and ground-truth masks, both binary, same size) and whether the model produced a mask at all.

* ``cIoU = sum I / sum U`` over **all** sentences;
* ``gIoU = mean over sentences of IoU``, where IoU = ``I / U``, and ``1`` when prediction and ground truth are both
  empty (``U == 0``);
* a sentence whose answer has no ``[SEG]`` (no prediction) counts **IoU 0** in gIoU and contributes its ground truth
  area to the cIoU union (``I = 0``, ``U = |GT|``), exactly as an empty predicted mask would. The number of such
  sentences is reported as ``n_no_seg``.

The original Sa2VA evaluation left no-``[SEG]`` sentences out of both cIoU sums. That rewards a model for declining
hard cases: a model that answers only the easy half of a split scores the cIoU of the easy half. Failing to answer
is failing to segment, so we count it like an empty mask. For comparison with published numbers the original
convention is also reported as ``cIoU_excl_no_seg``. (The original also added ``1e-5`` to each union and ``1e-10``
to the cIoU denominator; we use exact ratios.)

Mergeable for distributed runs: a metric is a list of per-sentence records with a stable key; shards are merged
by concatenation (:meth:`ReferSegMetric.merge`, :meth:`ReferSegMetric.from_records`) and the final numbers are
computed with exact integer sums and ``math.fsum`` over the records sorted by key, so any sharding of the same
sentences gives bit-identical results.

Region captions (:func:`caption_metrics`)
----------------------------------------
BLEU-1..4, METEOR, ROUGE-L and CIDEr from ``pycocoevalcap`` (optional dependency ``pip install
sa2va-train[eval]``; METEOR and the PTB tokenizer run Java). Predictions and references go through the standard
PTB tokenizer only (lower-casing, punctuation removed), nothing else: the original deleted every "is" substring
and several phrases before scoring.
"""
from __future__ import annotations

import math
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch


# ------------------------------------------------------------------------------------------------ segmentation
def _as_bool_mask(mask, what: str) -> torch.Tensor:
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if m.ndim != 2:
        raise ValueError(f"{what}: expected a [H, W] mask, got shape {tuple(m.shape)}")
    return m.bool() if m.dtype == torch.bool else m != 0


def intersection_union(pred, gt, key: object = "") -> tuple[int, int]:
    """Foreground intersection and union of two binary ``[H, W]`` masks (any non-zero value is foreground)."""
    p, g = _as_bool_mask(pred, f"{key} prediction"), _as_bool_mask(gt, f"{key} ground truth")
    if p.shape != g.shape:
        raise ValueError(f"{key}: prediction {tuple(p.shape)} and ground truth {tuple(g.shape)} differ in size "
                         f"(predictions must be at the original image size)")
    g = g.to(p.device)
    return int((p & g).sum()), int((p | g).sum())


@dataclass(frozen=True)
class SentenceResult:
    """One evaluated sentence. ``key`` orders records deterministically (e.g. ``(image_id, sentence_index)``)."""

    key: tuple
    intersection: int
    union: int
    gt_area: int
    pred_area: int  # 0 when there is no prediction
    has_prediction: bool

    @property
    def iou(self) -> float:
        """Per-sentence IoU as gIoU uses it: 0 without prediction, 1 for empty-vs-empty."""
        if not self.has_prediction:
            return 0.0
        return 1.0 if self.union == 0 else self.intersection / self.union


class ReferSegMetric:
    """Accumulates :class:`SentenceResult` records and computes cIoU / gIoU (see the module docstring)."""

    def __init__(self, records: Iterable[SentenceResult] = ()):
        self.records: list[SentenceResult] = list(records)

    def add(self, pred, gt, key: Sequence | object) -> SentenceResult:
        """Record one sentence. ``pred`` is a binary ``[H, W]`` mask, or ``None`` when the answer had no ``[SEG]``."""
        key = tuple(key) if isinstance(key, (tuple, list)) else (key,)
        g = _as_bool_mask(gt, f"{key} ground truth")
        gt_area = int(g.sum())
        if pred is None:
            rec = SentenceResult(key, 0, gt_area, gt_area, 0, False)
        else:
            inter, union = intersection_union(pred, g, key)
            rec = SentenceResult(key, inter, union, gt_area, union - gt_area + inter, True)
        self.records.append(rec)
        return rec

    def merge(self, other: "ReferSegMetric | Iterable[SentenceResult]") -> "ReferSegMetric":
        """Add the records of another shard (in place); returns self."""
        self.records += list(other.records if isinstance(other, ReferSegMetric) else other)
        return self

    def to_records(self) -> list[dict]:
        """Plain dicts (picklable, JSON-able) for gathering across processes or writing to disk."""
        return [asdict(r) for r in self.records]

    @classmethod
    def from_records(cls, records: Iterable[Mapping]) -> "ReferSegMetric":
        return cls(SentenceResult(**{**r, "key": tuple(r["key"])}) for r in records)

    def compute(self) -> dict:
        """``dict(cIoU, gIoU, cIoU_excl_no_seg, n_sentences, n_no_seg)``; metrics are ``nan`` for no sentences."""
        recs = sorted(self.records, key=lambda r: r.key)
        keys = [r.key for r in recs]
        dup = next((a for a, b in zip(keys, keys[1:]) if a == b), None)
        if dup is not None:
            raise ValueError(f"sentence key {dup} was recorded twice (overlapping shards?)")
        n = len(recs)
        inter = sum(r.intersection for r in recs)
        union = sum(r.union for r in recs)
        inter_p = sum(r.intersection for r in recs if r.has_prediction)
        union_p = sum(r.union for r in recs if r.has_prediction)
        nan = float("nan")
        return dict(
            cIoU=inter / union if union else (nan if n == 0 else 1.0),
            gIoU=math.fsum(r.iou for r in recs) / n if n else nan,
            cIoU_excl_no_seg=inter_p / union_p if union_p else nan,
            n_sentences=n,
            n_no_seg=sum(not r.has_prediction for r in recs),
        )


# ------------------------------------------------------------------------------------------------ captions
CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


def _require_caption_tools(metrics: Sequence[str]) -> None:
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError as e:
        raise ImportError("region caption metrics need pycocoevalcap: pip install 'sa2va-train[eval]' "
                          "(or pip install pycocoevalcap)") from e
    if shutil.which("java") is None:
        raise RuntimeError("region caption metrics need Java on PATH (the PTB tokenizer and METEOR run a jar); "
                           "install a JRE, e.g. apt-get install default-jre-headless")


_METEOR = None  # one METEOR Java process per Python process: it takes many seconds to load its tables


def _scorer(name: str):
    global _METEOR
    if name == "METEOR":
        from pycocoevalcap.meteor.meteor import Meteor

        if _METEOR is None:
            _METEOR = Meteor()
        return _METEOR
    if name == "ROUGE_L":
        from pycocoevalcap.rouge.rouge import Rouge

        return Rouge()
    from pycocoevalcap.cider.cider import Cider

    return Cider()


def caption_metrics(predictions: Mapping[object, str], references: Mapping[object, Sequence[str]],
                    metrics: Sequence[str] = CAPTION_METRICS, per_item: bool = False) -> dict:
    """COCO caption metrics of one predicted caption per item against its reference captions.

    Args:
        predictions: item id -> predicted caption.
        references: item id -> one or more reference captions; must have exactly the ids of ``predictions``.
        metrics: subset of :data:`CAPTION_METRICS`.
        per_item: also return ``'per_item': {metric: {item id: score}}``.

    Returns ``{metric: corpus score}`` plus ``n_items``. Captions are PTB-tokenized (lower case, punctuation
    removed); an empty prediction scores as an empty caption.
    """
    unknown = sorted(set(metrics) - set(CAPTION_METRICS))
    if unknown:
        raise ValueError(f"unknown caption metrics {unknown}; known: {list(CAPTION_METRICS)}")
    if set(predictions) != set(references):
        missing = sorted(map(str, set(references) - set(predictions)))[:5]
        extra = sorted(map(str, set(predictions) - set(references)))[:5]
        raise ValueError(f"predictions and references cover different items: without prediction {missing}, "
                         f"without reference {extra}")
    empty_refs = [k for k, v in references.items() if not v]
    if empty_refs:
        raise ValueError(f"item {empty_refs[0]!r} has no reference caption")
    if not predictions:
        raise ValueError("no captions to score")
    if not metrics:  # captions only (e.g. scored by the caller)
        return {"n_items": len(predictions)}
    _require_caption_tools(metrics)
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    items = list(predictions)
    ids = {k: str(i) for i, k in enumerate(items)}  # string ids keep the Java tokenizer's bookkeeping simple
    # one tokenizer run for references and predictions: "r<i>" / "p<i>"
    tokenized = PTBTokenizer().tokenize({**{"r" + ids[k]: [{"caption": c} for c in references[k]] for k in items},
                                         **{"p" + ids[k]: [{"caption": predictions[k]}] for k in items}})
    # the tokenizer drops trailing empty lines: an empty caption may come back missing
    gts = {ids[k]: tokenized.get("r" + ids[k], [""]) for k in items}
    res = {ids[k]: tokenized.get("p" + ids[k], [""]) for k in items}
    order = list(gts)  # the scorers iterate over gts' keys
    out, detail = {}, {}
    wanted = [m for m in CAPTION_METRICS if m in set(metrics)]
    if any(m.startswith("Bleu") for m in wanted):
        from pycocoevalcap.bleu.bleu import Bleu

        scores, item_scores = Bleu(4).compute_score(gts, res, verbose=0)
        for n in range(4):
            if f"Bleu_{n + 1}" in wanted:
                out[f"Bleu_{n + 1}"] = float(scores[n])
                detail[f"Bleu_{n + 1}"] = item_scores[n]
    for name in ("METEOR", "ROUGE_L", "CIDEr"):
        if name in wanted:
            score, item_scores = _scorer(name).compute_score(gts, res)
            out[name] = float(score)
            detail[name] = item_scores
    out["n_items"] = len(items)
    if per_item:
        by_id = dict(zip(order, items))
        out["per_item"] = {m: {by_id[i]: float(v) for i, v in zip(order, scores)} for m, scores in detail.items()}
    return out
