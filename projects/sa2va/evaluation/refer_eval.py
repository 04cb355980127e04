"""Referring-segmentation evaluation (RefCOCO / RefCOCO+ / RefCOCOg): cIoU, gIoU and the no-``[SEG]`` count.

For every image of the split, every sentence of every ref is asked with :data:`EVAL_PROMPT`; the **first** mask
of the answer is compared with the ref's ground truth; an answer without ``[SEG]`` counts as no prediction (see
:mod:`sa2va.evaluation.metrics` for how that is scored). Images are sharded over processes and the per-sentence
records gathered, so a distributed run gives exactly the numbers of a single process.

:func:`evaluate_refer` is the entry point for ``tools/test.py`` and for evaluation hooks during training.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from mmengine.logging import MMLogger

from ..inference.predictor import Sa2VAPredictor
from .distributed import gather_records, shard, world_info
from .metrics import ReferSegMetric

# The reference's evaluation question ("Please segment {sent} in this image.") after the image, exactly as training
# writes a question after the image (image placeholder, '\n', question). The original eval script had a stray space
# after the '\n' that the training data never has; pass prompt="<image>\n Please segment {sent} in this image." to
# reproduce it.
EVAL_PROMPT = "<image>\nPlease segment {sent} in this image."
# answers to evaluation questions are a few tokens ("Sure, [SEG]."); bounds the cost of a model that rambles
EVAL_MAX_NEW_TOKENS = 64


def predictor_for(model_or_predictor, dataset=None, **kwargs) -> Sa2VAPredictor:
    """A predictor; a bare model gets the template and tiling of ``dataset`` (what it was trained with) and at most
    :data:`EVAL_MAX_NEW_TOKENS` new tokens unless ``kwargs`` say otherwise. Anything with ``predict_many`` (a
    :class:`Sa2VAPredictor` or a stand-in) is used as it is."""
    if hasattr(model_or_predictor, "predict_many"):
        return model_or_predictor
    settings = dict(max_new_tokens=EVAL_MAX_NEW_TOKENS)
    if dataset is not None and hasattr(dataset, "template"):
        tp = dataset.tile_processor
        settings.update(template=dataset.template, max_dynamic_patch=tp.max_tiles, min_dynamic_patch=tp.min_tiles,
                        use_thumbnail=tp.use_thumbnail, resize_backend=tp.resize_backend)
    return Sa2VAPredictor(model_or_predictor, **{**settings, **kwargs})


def _eval_view(dataset):
    return dataset.eval_view() if hasattr(dataset, "eval_view") else dataset


def prepare_eval(model, dataset, max_items, rank, world_size, predictor_kwargs):
    """What every evaluation over a REFER split starts with: the eval view, a predictor, this rank and the image
    indices it evaluates (the first ``max_items`` images, dealt round-robin over ranks)."""
    view = _eval_view(dataset)
    predictor = predictor_for(model, dataset, **predictor_kwargs)
    rank, world_size = world_info(rank, world_size)
    n_images = len(view) if max_items is None else min(int(max_items), len(view))
    return view, predictor, rank, shard(range(n_images), rank, world_size)


def evaluate_refer(model, dataset, max_items: int | None = None, prompt: str = EVAL_PROMPT,
                   return_sentences: bool = False, on_item: Callable | None = None, rank: int | None = None,
                   world_size: int | None = None, **predictor_kwargs) -> dict:
    """Referring segmentation metrics of ``model`` on one split.

    Args:
        model: a :class:`~sa2va.models.VideoLLaVASAMModel` (possibly DDP-wrapped) or a :class:`Sa2VAPredictor`.
        dataset: a :class:`~sa2va.datasets.ReferSegmDataset` of the split (its ``eval_view()`` is used) or such a
            view (items with ``image``, ``image_id``, ``texts``, ``masks``).
        max_items: evaluate only the first ``max_items`` images (a quick check during training).
        prompt: the question; ``{sent}`` is replaced by each sentence.
        return_sentences: add ``'sentences'``: the per-sentence records (image, text, answer, IoU, ...) of all ranks.
        on_item: called as ``on_item(index, item, predictions)`` after each image of this rank (e.g. to draw).
        rank, world_size: shard explicitly; default: the initialised process group, else one process.
        predictor_kwargs: for a bare model, :class:`Sa2VAPredictor` arguments (``max_new_tokens`` default 64, ...).

    Returns:
        ``dict(cIoU, gIoU, cIoU_excl_no_seg, n_sentences, n_no_seg, n_images)`` computed over every rank's
        sentences (identical on all ranks); plus ``sentences`` if asked.
    """
    if "{sent}" not in prompt:
        raise ValueError(f"prompt must contain '{{sent}}', got {prompt!r}")
    view, predictor, rank, mine = prepare_eval(model, dataset, max_items, rank, world_size, predictor_kwargs)
    logger = MMLogger.get_current_instance()

    sentences = []
    for done, index in enumerate(mine):
        item = view[index]
        preds = predictor.predict_many(item["image"], [prompt.format(sent=t) for t in item["texts"]])
        metric = ReferSegMetric()
        for j, (text, pred) in enumerate(zip(item["texts"], preds)):
            mask = pred.masks[0] if pred.masks.shape[0] else None
            rec = metric.add(mask, item["masks"][j], key=(item["image_id"], j))
            sentences.append(dict(
                key=list(rec.key), image_id=item["image_id"], sentence_index=j, text=text,
                ann_id=_get(item, "ann_ids", j), ref_id=_get(item, "ref_ids", j), answer=pred.text,
                num_masks=int(pred.masks.shape[0]), intersection=rec.intersection, union=rec.union,
                gt_area=rec.gt_area, pred_area=rec.pred_area, has_prediction=rec.has_prediction, iou=rec.iou))
        if on_item is not None:
            on_item(index, item, preds)
        if (done + 1) % 50 == 0:
            logger.info(f"refer eval: {done + 1}/{len(mine)} images on rank {rank}")

    sentences = gather_records(sentences)
    fields = ("key", "intersection", "union", "gt_area", "pred_area", "has_prediction")
    merged = ReferSegMetric.from_records({k: s[k] for k in fields} for s in sentences)
    result = merged.compute()
    result["n_images"] = len({s["image_id"] for s in sentences})
    if return_sentences:
        result["sentences"] = sorted(sentences, key=lambda s: tuple(s["key"]))
    return result


def _get(item: dict, key: str, j: int):
    values: Sequence | None = item.get(key)
    return None if values is None else values[j]
