"""Evaluation: cIoU / gIoU for referring segmentation, COCO caption metrics for region captions, and the loops
that run a model over a split (sharded over processes, merged exactly)."""
from .caption_eval import evaluate_region_captions
from .metrics import CAPTION_METRICS, ReferSegMetric, SentenceResult, caption_metrics, intersection_union
from .refer_eval import EVAL_PROMPT, evaluate_refer

__all__ = ["CAPTION_METRICS", "EVAL_PROMPT", "ReferSegMetric", "SentenceResult", "caption_metrics",
           "evaluate_refer", "evaluate_region_captions", "intersection_union"]
