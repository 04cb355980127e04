"""Region-caption evaluation (RefCOCOg region captions): METEOR, CIDEr, BLEU, ROUGE-L.

Every ref of the split is one region: its mask is the visual prompt (``region1``, asked alone), its sentences are
the reference captions. Predictions are scored with :func:`sa2va.evaluation.metrics.caption_metrics` (PTB
tokenization only; no other text clean-up). Images are sharded over processes; every rank gets the same scores.
"""
from __future__ import annotations

from collections.abc import Callable

from mmengine.logging import MMLogger

from ..datasets.text import REGION_CAPTION_QUESTION
from .distributed import gather_records
from .metrics import CAPTION_METRICS, caption_metrics
from .refer_eval import prepare_eval

CAPTION_QUESTION = REGION_CAPTION_QUESTION.format(index=1)


def regions_of(item: dict) -> list[dict]:
    """Group an eval-view item's sentences by ref: ``[{ref_id, ann_id, mask, references}]`` in first-seen order."""
    regions: dict = {}
    ref_ids = item.get("ref_ids") or item.get("ann_ids")
    if ref_ids is None:
        raise ValueError(f"{item.get('record_id', item.get('image_id'))}: eval item without ref_ids/ann_ids")
    for j, ref_id in enumerate(ref_ids):
        region = regions.setdefault(ref_id, dict(ref_id=ref_id, ann_id=(item.get("ann_ids") or ref_ids)[j],
                                                 mask=item["masks"][j], references=[]))
        region["references"].append(item["texts"][j])
    return list(regions.values())


def evaluate_region_captions(model, dataset, max_items: int | None = None, question: str = CAPTION_QUESTION,
                             metrics=CAPTION_METRICS, return_captions: bool = False,
                             on_item: Callable | None = None, rank: int | None = None,
                             world_size: int | None = None, **predictor_kwargs) -> dict:
    """Caption every region of the split and score the captions.

    Args:
        model: a model or :class:`~sa2va.inference.Sa2VAPredictor`.
        dataset: a REFER dataset of the split with ``eval_view()`` (:class:`~sa2va.datasets.ReferSegmDataset`)
            or such a view.
        max_items: only the first ``max_items`` images.
        question: asked about ``region1`` (the region alone in its prompt).
        metrics: names from :data:`~sa2va.evaluation.metrics.CAPTION_METRICS`.
        return_captions: add ``'captions'``: per region ``{image_id, ref_id, prediction, references}``.
        on_item: ``on_item(index, item, regions, captions)`` after each image of this rank.
        rank, world_size, predictor_kwargs: as in :func:`~sa2va.evaluation.refer_eval.evaluate_refer`.

    Returns ``{metric: score, ..., 'n_items': regions}``, identical on every rank.
    """
    view, predictor, rank, mine = prepare_eval(model, dataset, max_items, rank, world_size, predictor_kwargs)
    logger = MMLogger.get_current_instance()

    records = []
    for done, index in enumerate(mine):
        item = view[index]
        regions = regions_of(item)
        captions = predictor.caption(item["image"], [r["mask"] for r in regions], question=question)
        for r, cap in zip(regions, captions):
            records.append(dict(key=[item["image_id"], r["ref_id"]], image_id=item["image_id"], ref_id=r["ref_id"],
                                ann_id=r["ann_id"], prediction=cap, references=r["references"]))
        if on_item is not None:
            on_item(index, item, regions, captions)
        if (done + 1) % 50 == 0:
            logger.info(f"caption eval: {done + 1}/{len(mine)} images on rank {rank}")

    records = sorted(gather_records(records), key=lambda r: tuple(r["key"]))
    keys = [tuple(r["key"]) for r in records]
    result = caption_metrics({k: r["prediction"] for k, r in zip(keys, records)},
                             {k: r["references"] for k, r in zip(keys, records)}, metrics=metrics)
    if return_captions:
        result["captions"] = records
    return result
