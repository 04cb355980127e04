"""Run variants of the learning proof (configs/sa2va_learning_proof.py) side by side on one GPU and score them.

    python benchmarks/learning_proof_sweep.py --out OUT \
        "tile224:ncls=1,iters=2500" "tile448:ncls=1,tile=448,iters=2500"

(on the device tool's GPU machine, with the wheels and a time limit: ``benchmarks/gpu_learning_proof_sweep.sh``)

A run is ``NAME:key=value,...``. Keys:
  ncls=N    num_classes_per_sample of every dataset (questions / regions per training sample)
  tile=S    InternVL tile size (also the thumbnail that region prompts are gridded on: S/28 cells a side);
            its own asset directory, since the tiny InternVL is made for that size
  iters=N   training iterations (the cosine schedule ends there; at or below the warm-up's length the warm-up
            becomes a tenth of N)
  mask_weight=W      multiply both mask-loss weights (sigmoid-CE and Dice)
  decoder_lr_mult=M  learning-rate multiplier of the SAM2 mask decoder (mmengine paramwise_cfg custom_keys)
  train_seconds=S    the training time limit (the config's TrainTimeLimitHook; a dotted max_train_seconds=S would
            not reach the hook, whose value the config has already read)
  llm_seg_from=N     the mask losses train the LLM only from iteration N on (SegGradToLLMHook; before it they
            train text_hidden_fcs and SAM2 on detached [SEG] states)
  lr_mult.KEY=M      learning-rate multiplier of the parameters whose name contains KEY (e.g. text_hidden_fcs)
  images=N  synthetic images in the asset set (its own asset directory; the refcocog splits keep their fractions)
  vit_pos=zeros|sincos  the tiny InternViT's initial position embeddings (own asset directory)
  internvl.KEY=V     a size or option of the tiny InternVL (``make_tiny_models``' internvl dict, e.g.
            internvl.text_hidden=768, internvl.text_init_range=0.035, internvl.tie_word_embeddings=True: lm_head
            tied to the input embedding); its own asset directory
  sam2.KEY=V         a size of the tiny SAM2 (``make_tiny_sam2``: sam2.d_model=128, the decoder width, whose mask
            embedding has d_model/8 channels; sam2.embed_dim); its own asset directory
  seed=N    training seed (data order, new-token rows, text_hidden_fcs); the tiny models and data keep seed 0
  batch=N   per-GPU batch size (the length-grouped sampler's too)
  tasks=both|seg|caption  what to train on (and evaluate at the end): both halves of the proof (default), only
            referring segmentation, or only region captions (a fast CPU check of the caption path)
  sampler=random     plain shuffling (EpochDefaultSampler) instead of length-grouped batches, so batches mix
            segmentation and caption samples
  caption_first=N    iterations of region captions alone before both tasks (the config's TaskCurriculumSampler;
            0: both tasks from the start)
  eval_items=N       images (and regions) of the end-of-training generation evaluation
  tf_every=N         every N iterations, held-out cIoU with the answer teacher-forced (no generation, ~1 s):
            the [SEG] path's learning curve, logged as "teacher-forced val" lines and OUT/<name>/tf_eval.jsonl,
            with the share of objects segmented right / over-segmented / wrong / empty and the mean pixel
            precision and recall (which plateau a run sits on), per named colour and shape, how well the [SEG]
            states tell the named colours (and shapes, places) apart, and whether they follow the question or
            the image (TeacherForcedSegEval)
  anything else is a dotted config key (``optim_wrapper.optimizer.lr=1e-3``), as ``--cfg-options``.
The runs train concurrently (one process each; the small model leaves the GPU mostly idle, so they share it; with
several visible GPUs the runs are dealt round-robin, one GPU each), each
evaluates the held-out refcocog val split at its end (ReferEvalHook), and the summary adds per-attribute caption
accuracy (colour / shape / horizontal / vertical position words), which says which part of a caption fails.
Writes OUT/<name>/{train.log, losses.jsonl, *.png, captions.json} and OUT/summary.json. Stopped by SIGTERM (e.g.
``timeout``), it stops the runs and still writes the summary of what they logged (teacher-forced curves, the last
iteration), marked ``"stopped": true``. Each run gets a share of the host's cores as OMP_NUM_THREADS unless set.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "projects"))

from sa2va.datasets.synthetic import COLOURS, HPOS, SHAPES, VPOS  # noqa: E402
CONFIG = os.path.join(REPO, "configs", "sa2va_learning_proof.py")


# ----------------------------------------------------------------------------------------------- config variants
def _raw_items(node: dict):
    """Items without building the config's lazy objects (writing built objects back would break dumping)."""
    return list(dict.items(node))


def _set_key(node, key: str, value) -> None:
    """Set ``key`` in every dict of a config tree that has it."""
    if isinstance(node, dict):
        for k, v in _raw_items(node):
            if k == key:
                node[k] = value
            else:
                _set_key(v, key, value)
    elif isinstance(node, (list, tuple)):
        for v in node:
            _set_key(v, key, value)


def _replace_prefix(node, old: str, new: str) -> None:
    """Replace a string prefix (an asset root) everywhere in a config tree."""
    items = _raw_items(node) if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for k, v in items:
        if isinstance(v, str) and v.startswith(old):
            node[k] = new + v[len(old):]
        else:
            _replace_prefix(v, old, new)


def _lazy(cls, module: str = "sa2va.datasets"):
    """``cls`` as the config's own imports are held (a LazyObject), so the config stays dumpable: mmengine writes
    a class object in a ``type=`` field as ``<class ...>``, which the dumped config cannot parse."""
    from mmengine.config.lazy import LazyObject

    return LazyObject(module, cls.__name__)


def parse_spec(spec: str) -> tuple[str, dict]:
    name, _, body = spec.partition(":")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SystemExit(f"run name {name!r}: use letters, digits, _ . -")
    options = {}
    for item in filter(None, body.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"run {name!r}: {item!r} is not key=value")
        options[key.strip()] = value.strip()
    return name, options


def variant_config(options: dict):
    """The learning-proof config with a run's options applied."""
    from mmengine.config import Config, ConfigDict, DictAction

    from sa2va.datasets import EpochDefaultSampler
    from sa2va.engine import SegGradToLLMHook

    cfg = Config.fromfile(CONFIG)
    options = dict(options)
    if "tile" in options:
        tile = int(options.pop("tile"))
        root = cfg.prepare.root
        cfg.prepare.internvl.image_size = tile
        _replace_prefix(cfg._cfg_dict, root, f"{root}_{tile}")
        _set_key(cfg._cfg_dict, "tile_size", tile)
    if "images" in options:
        images = int(options.pop("images"))
        root = cfg.prepare.root
        cfg.prepare.num_images = images
        _replace_prefix(cfg._cfg_dict, root, f"{root}_n{images}")
    if "vit_pos" in options:
        pos = options.pop("vit_pos")
        root = cfg.prepare.root
        cfg.prepare.internvl.vision_positions = pos
        _replace_prefix(cfg._cfg_dict, root, f"{root}_pos{pos}")
    for model in ("internvl", "sam2"):  # sizes of a tiny model, e.g. internvl.text_hidden=768, sam2.d_model=128
        sizes = {k[len(model) + 1:]: options.pop(k) for k in [k for k in options if k.startswith(model + ".")]}
        if sizes:
            root = cfg.prepare.root
            for key, value in sizes.items():
                cfg.prepare[model][key] = DictAction._parse_iterable(value)  # '768' -> 768, '1e-3' -> 0.001
            suffix = "_".join(f"{k}{v}" for k, v in sorted(sizes.items()))
            _replace_prefix(cfg._cfg_dict, root, f"{root}_{'' if model == 'internvl' else model + '_'}{suffix}")
    if "seed" in options:
        cfg.randomness.seed = int(options.pop("seed"))
    if "ncls" in options:
        _set_key(cfg._cfg_dict, "num_classes_per_sample", int(options.pop("ncls")))
    if "iters" in options:
        iters = int(options.pop("iters"))
        cfg.train_cfg.max_iters = iters
        cfg.param_scheduler[-1].end = iters
        warmup = cfg.param_scheduler[0].end
        if iters <= warmup:  # a short check run: warm up for a tenth of it, so the cosine still has a span
            cfg.param_scheduler[0].end = cfg.param_scheduler[-1].begin = max(1, iters // 10)
    if "mask_weight" in options:
        w = float(options.pop("mask_weight"))
        cfg.model.loss_mask.loss_weight *= w
        cfg.model.loss_dice.loss_weight *= w
    custom_keys = dict(cfg.optim_wrapper.get("paramwise_cfg", {}).get("custom_keys", {}))
    if "decoder_lr_mult" in options:
        custom_keys["sam_mask_decoder"] = dict(lr_mult=float(options.pop("decoder_lr_mult")))
    for key in [k for k in options if k.startswith("lr_mult.")]:
        custom_keys[key[len("lr_mult."):]] = dict(lr_mult=float(options.pop(key)))
    cfg.optim_wrapper.paramwise_cfg = dict(custom_keys=custom_keys)
    # the config's sampler is a TaskCurriculumSampler (captions first) around a LengthGroupedSampler
    loader = cfg._cfg_dict.train_dataloader  # unbuilt, so the config stays dumpable
    if "batch" in options:
        batch = int(options.pop("batch"))
        loader.batch_size = loader.sampler.batch_size = loader.sampler.sampler.per_device_batch_size = batch
    tasks = options.pop("tasks", "both")
    if tasks not in ("both", "seg", "caption"):
        raise SystemExit(f"tasks={tasks!r}: use both, seg or caption")
    if "caption_first" in options:
        if tasks != "both":
            raise SystemExit("caption_first=N needs tasks=both")
        loader.sampler.first_iters = int(options.pop("caption_first"))
    if tasks != "both":  # one dataset: nothing to stage
        seg, caption = cfg.train_dataloader.dataset.datasets
        cfg.train_dataloader.dataset = seg if tasks == "seg" else caption
        cfg.custom_hooks[0][("caption_datasets" if tasks == "seg" else "datasets")] = {}
        loader.sampler = loader.sampler.sampler
    sampler = options.pop("sampler", "grouped")
    if sampler not in ("grouped", "random"):
        raise SystemExit(f"sampler={sampler!r}: use grouped or random")
    if sampler == "random":
        shuffled = dict(type=_lazy(EpochDefaultSampler), shuffle=True)
        if tasks == "both":
            loader.sampler.sampler = shuffled
        else:
            loader.sampler = shuffled
    if "eval_items" in options:
        cfg.custom_hooks[0].max_items = int(options.pop("eval_items"))
    if "train_seconds" in options:
        limits = [h for h in cfg.custom_hooks if getattr(h.type, "__name__", h.type) == "TrainTimeLimitHook"]
        if len(limits) != 1:
            raise SystemExit(f"train_seconds: the config has {len(limits)} TrainTimeLimitHooks, expected 1")
        limits[0].max_seconds = float(options.pop("train_seconds"))
    if "llm_seg_from" in options:
        cfg.custom_hooks.append(ConfigDict(type=_lazy(SegGradToLLMHook, "sa2va.engine"),
                                           start_iter=int(options.pop("llm_seg_from"))))
    if "tf_every" in options:
        cfg.custom_hooks.append(ConfigDict(type="TeacherForcedSegEval", interval=int(options.pop("tf_every")),
                                           dataset=cfg.custom_hooks[0].datasets.refcocog_val))
    if options:
        cfg.merge_from_dict({k: DictAction._parse_iterable(v) for k, v in options.items()})
    return cfg


# ----------------------------------------------------------------------------------------------- quick eval
MASK_OUTCOMES = ("right", "over", "wrong", "empty")


def mask_outcome(result) -> tuple[str, float, float]:
    """One object's :class:`~sa2va.evaluation.metrics.SentenceResult` (what ``ReferSegMetric.add`` returns for a
    predicted mask against its target) -> (kind, pixel precision, pixel recall).

    kind: ``right`` (IoU >= 0.5), ``over`` (the target plus more: recall >= 0.5, precision < 0.5), ``wrong`` (a
    wrong object, a part, a rough outline or a miss) or ``empty`` (no pixel predicted; precision counts as 0).
    """
    inter = result.intersection
    precision = inter / result.pred_area if result.pred_area else 0.0
    recall = inter / result.gt_area if result.gt_area else 0.0
    if not result.pred_area:
        return "empty", precision, recall
    if result.iou >= 0.5:
        return "right", precision, recall
    return ("over" if recall >= 0.5 and precision < 0.5 else "wrong"), precision, recall


def colour_separability(vectors: torch.Tensor, labels: list) -> tuple[float, dict]:
    """How well ``vectors`` [N, D] tell their ``labels`` apart: leave-one-out nearest-centroid accuracy, by cosine
    after removing the mean vector (a large shared component would otherwise hide what differs). Returns (overall
    accuracy, {label: accuracy}); labels seen once are left out (no centroid without them)."""
    x = vectors.float() - vectors.float().mean(0)
    names = sorted({lab for lab in labels if lab is not None}, key=str)
    y = torch.tensor([names.index(lab) if lab in names else -1 for lab in labels])
    counts = torch.bincount(y[y >= 0], minlength=len(names)).float()
    sums = torch.zeros(len(names), x.shape[1]).index_add_(0, y[y >= 0], x[y >= 0])
    means = sums / counts[:, None]  # every name has at least one vector
    hits, tried = Counter(), Counter()
    for i in range(len(labels)):
        c = int(y[i])
        if c < 0 or counts[c] < 2:
            continue
        centroids = means.clone()
        centroids[c] = (sums[c] - x[i]) / (counts[c] - 1)  # its own class without it
        guess = int(F.cosine_similarity(x[i][None], centroids, dim=1).argmax())
        tried[names[c]] += 1
        hits[names[c]] += guess == c
    total = sum(tried.values())
    return (round(sum(hits.values()) / total, 3) if total else float("nan"),
            {str(n): round(hits[n] / tried[n], 2) for n in names if tried[n]})


def question_share(first: torch.Tensor, second: torch.Tensor) -> float:
    """How much the question, rather than the image, moves a [SEG] state. ``first`` / ``second`` [K, D]: the states
    of K images, each asked two different questions. Returns the mean cosine distance (mean vector removed) between
    an image's two states, over that between states of different images: ~0 when the state ignores the question
    (it follows the image), ~1 when a new question moves it as far as a new image does; NaN for constant states."""
    k = len(first)
    if k < 2:
        return float("nan")
    x = torch.cat([first, second]).float()
    x = F.normalize(x - x.mean(0), dim=1)
    a, b = x[:k], x[k:]
    distance = 1 - a @ b.T  # [K, K]: same image on the diagonal, different images off it
    between = (distance.sum() - distance.diagonal().sum()) / (k * (k - 1))
    if float(between) < 1e-6:
        return float("nan")
    return round(float(distance.diagonal().mean() / between), 3)


@HOOKS.register_module()
class TeacherForcedSegEval(Hook):
    """Held-out cIoU with the answer teacher-forced: the dataset's own "...[SEG]." target is the input, the model
    predicts one mask per [SEG] (``predict_masks``), scored at the SAM2 input resolution. No text generation, so it
    is cheap enough to run every few hundred iterations; the final ReferEvalHook numbers are the real ones.

    Each record also says what kind of mistakes the masks make (:func:`mask_outcome`): the share of objects
    segmented right, over-segmented (the target plus other shapes), wrong or missed, and empty, with the mean pixel
    precision and recall, which tell the "segment every shape" and "target plus one more" plateaus apart; and the
    same per colour and shape named in the question (``by_colour`` / ``by_shape``: [objects, share right, share
    over]), and per number of objects in the image with the named shape (``by_shape_count``: "1" / "2" / "3+",
    from the dataset's instances file, all objects counted, referred to or not): a prompt that carries the shape
    but not the colour is right where the shape is unique and over-segments where it repeats.
    ``seg_state_colour`` / ``prompt_colour`` say how well the [SEG] hidden states and their projections (the SAM2
    prompts) tell the named colours apart (:func:`colour_separability`; chance ~0.2): a run whose masks
    merge some colours shows whether the merge is already in the LLM's states or only after the projection.
    ``seg_state_shape`` / ``seg_state_position`` do the same for the shape and the place (vertical + horizontal
    word; chance ~0.2 / ~0.11) that the question names, where it names them: which words a state carries.
    ``seg_state_question_share`` (:func:`question_share`) says whether the [SEG] states follow the question or the
    image: the first ``question_pairs`` images (within ``max_items``) whose draws find a second ref are asked two
    of their different refs (the dataset's items of epochs 0 and 1-7, which draw refs anew), when the dataset takes
    an ``EpochIndex``."""

    priority = "LOW"

    def __init__(self, dataset: dict, interval: int, max_items: int = 200, batch_size: int = 32,
                 question_pairs: int = 64):
        self.dataset_cfg, self.interval, self.max_items, self.batch_size = dataset, interval, max_items, batch_size
        self.question_pairs = question_pairs
        self.dataset = None
        self._categories = None  # image_id -> the category name of each object, read once
        self._pairs = None  # [(item, item of the same image with another question)], drawn once

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if (runner.iter + 1) % self.interval == 0:
            self.evaluate(runner)

    @staticmethod
    def _predict(model, items: list) -> tuple[dict, dict]:
        """Collated + preprocessed ``items`` and ``model.predict_masks`` of them."""
        from sa2va.datasets.collate import sa2va_collate_fn

        data = model.data_preprocessor(sa2va_collate_fn(items, model.tokenizer.pad_token_id or 0), False)["data"]
        return data, model.predict_masks(data)

    @staticmethod
    def _first_seg_state(model, data: dict, predicted: dict, i: int):
        """Item ``i``'s first [SEG] hidden state [D] (float), None without a [SEG]."""
        is_seg = data["input_ids"][i] == model.seg_token_idx
        return predicted["hidden_states"][i][is_seg][0].float() if bool(is_seg.any()) else None

    def _image_categories(self) -> dict:
        """image_id -> the category name of every annotated object in the image (referred to or not), from the
        dataset's COCO instances file; {} for a dataset without one."""
        path = getattr(self.dataset, "ann_path", None)
        if path is None or not os.path.isfile(path):
            return {}
        with open(path) as f:
            instances = json.load(f)
        names = {c["id"]: c["name"] for c in instances.get("categories", [])}
        by_image = {}
        for ann in instances.get("annotations", []):
            by_image.setdefault(ann["image_id"], []).append(names.get(ann.get("category_id")))
        return by_image

    def _objects_like(self, index: int, shape: str | None) -> int:
        """How many objects in item ``index``'s image are of category ``shape``; 0 when that is not known."""
        records = getattr(self.dataset, "records", None)
        if not records or shape is None:
            return 0
        image_id = records[index % len(records)]["image_id"]
        return self._categories.get(image_id, []).count(shape)

    def _question_pairs(self) -> list:
        """Up to ``question_pairs`` (item, item of the same image asking about another ref): the second is the
        first of the epochs 1-7 whose draw picks another mask. Empty if the dataset takes no ``EpochIndex``."""
        from sa2va.datasets import EpochIndex

        if not getattr(self.dataset, "accepts_epoch_index", False):
            return []
        pairs = []
        for index in range(min(len(self.dataset), self.max_items)):
            if len(pairs) == self.question_pairs:
                break
            first = self.dataset[EpochIndex(0, index)]
            for epoch in range(1, 8):
                other = self.dataset[EpochIndex(epoch, index)]
                if not torch.equal(torch.as_tensor(first["masks"]), torch.as_tensor(other["masks"])):
                    pairs.append((first, other))
                    break
        return pairs

    def _question_share(self, model) -> dict:
        if self._pairs is None:
            self._pairs = self._question_pairs()
        states = ([], [])  # the first and the second question's [SEG] state, per image
        for start in range(0, len(self._pairs), self.batch_size):
            chunk = self._pairs[start:start + self.batch_size]
            found = []
            for j in range(2):
                data, predicted = self._predict(model, [pair[j] for pair in chunk])
                found.append([self._first_seg_state(model, data, predicted, i) for i in range(len(chunk))])
            for a, b in zip(*found):
                if a is not None and b is not None:
                    states[0].append(a)
                    states[1].append(b)
        if len(states[0]) < 2:
            return {}
        return dict(seg_state_question_share=question_share(torch.stack(states[0]).cpu(),
                                                            torch.stack(states[1]).cpu()),
                    question_pairs=len(states[0]))

    @torch.no_grad()
    def evaluate(self, runner) -> None:
        from sa2va import BUILDER
        from sa2va.engine import unwrap_model
        from sa2va.evaluation import ReferSegMetric

        if self.dataset is None:
            self.dataset = BUILDER.build(self.dataset_cfg)
        if self._categories is None:
            self._categories = self._image_categories()
        model = unwrap_model(runner.model)
        model.eval()
        metric = ReferSegMetric()
        outcomes, precision, recall = Counter(), [], []
        by_attribute = {attr: {} for attr in ("colour", "shape", "shape_count")}  # attr -> value -> outcome Counter
        seg_states, named_per_state = [], []  # the first [SEG] state of each item, what its question names
        n = min(self.max_items, len(self.dataset))
        for start in range(0, n, self.batch_size):
            items = [self.dataset[i] for i in range(start, min(start + self.batch_size, n))]
            data, predicted = self._predict(model, items)
            for i, (pred, gt) in enumerate(zip(predicted["pred_masks"], data["masks"])):
                pred = F.interpolate(pred[:, None].float(), size=gt.shape[-2:], mode="bilinear")[:, 0] > 0
                # one question per item: the colour and shape it names (every refcocog sentence names both)
                question = model.tokenizer.decode(data["input_ids"][i], skip_special_tokens=True).lower()
                named = {attr: first_word(ATTRIBUTES[attr], question) for attr in ATTRIBUTES}
                groups = dict(colour=named["colour"], shape=named["shape"])  # the groups this item's objects count in
                same_shape = self._objects_like(start + i, named["shape"])
                if same_shape:  # 0: the shape is not among the image's categories (or they are unknown)
                    groups["shape_count"] = str(same_shape) if same_shape < 3 else "3+"
                state = self._first_seg_state(model, data, predicted, i)
                if state is not None:
                    seg_states.append(state)
                    named_per_state.append(named)
                for k in range(gt.shape[0]):  # one [SEG] per object
                    kind, p, r = mask_outcome(metric.add(pred[k], gt[k], key=(start + i, k)))
                    outcomes[kind] += 1
                    precision.append(p)
                    recall.append(r)
                    for attr, value in groups.items():
                        by_attribute[attr].setdefault(value, Counter())[kind] += 1
        separability = {}
        if len(seg_states) > 1:
            states = torch.stack(seg_states)
            prompts = model.text_hidden_fcs(states.to(next(model.text_hidden_fcs.parameters()).dtype))
            colours = [named["colour"] for named in named_per_state]
            for key, vectors in (("seg_state_colour", states), ("prompt_colour", prompts)):
                overall, per_colour = colour_separability(vectors.cpu(), colours)
                separability[key] = overall
                separability[key + "_by_colour"] = per_colour
            # the question's other words: does a state that misses the colour carry the shape or the place?
            others = dict(shape=[named["shape"] for named in named_per_state],
                          position=[None if None in (named["vpos"], named["hpos"]) else
                                    f"{named['vpos']} {named['hpos']}" for named in named_per_state])
            for attr, labels in others.items():
                overall, _ = colour_separability(states.cpu(), labels)
                if not math.isnan(overall):  # NaN: no label asked twice
                    separability[f"seg_state_{attr}"] = overall
        separability.update(self._question_share(model))
        model.train()
        objects = max(1, len(recall))
        record = dict(iter=runner.iter + 1, cIoU=round(metric.compute()["cIoU"], 4), items=n,
                      outcomes={k: round(outcomes[k] / objects, 3) for k in MASK_OUTCOMES},
                      precision=round(sum(precision) / objects, 3), recall=round(sum(recall) / objects, 3),
                      # per colour / shape named in the question and per number of objects of that shape in the
                      # image: [objects, share right, share over-segmented]
                      **{f"by_{attr}": {str(v): [sum(c.values()), round(c["right"] / sum(c.values()), 2),
                                                 round(c["over"] / sum(c.values()), 2)]
                                        for v, c in sorted(values.items(), key=lambda kv: str(kv[0]))}
                         for attr, values in by_attribute.items() if values}, **separability)
        runner.logger.info(f"teacher-forced val {json.dumps(record)}")
        with open(os.path.join(runner.work_dir, "tf_eval.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------------------------- running
def _prepare(options: dict) -> str:
    from sa2va import BUILDER

    cfg = variant_config(options)
    BUILDER.build(cfg.prepare)
    return cfg.prepare.root


def _train_child(spec: str, work_dir: str) -> None:
    """In a child process: train one variant (what tools/train.py does, with the variant's config)."""
    from sa2va.engine import build_runner, prepare_config

    cfg = variant_config(parse_spec(spec)[1])
    cfg, flexible = prepare_config(cfg, work_dir=work_dir, config_path=CONFIG)
    build_runner(cfg, flexible).train()
    # Everything is written once train() returns (evaluation, losses, curve). On the GPU hosts the process then
    # took ~50 s more to exit (cause not diagnosed; the DataLoader's ten persistent workers are the suspect), which
    # the sweep's callers pay in device time: leave at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# the words the synthetic data's sentences and captions use
ATTRIBUTES = dict(colour=tuple(COLOURS), shape=SHAPES, hpos=HPOS, vpos=VPOS)


def first_word(words, text: str) -> str | None:
    """The first of ``words`` (whole words) in ``text``, or None."""
    found = [(text.find(w), w) for w in words if re.search(rf"\b{w}\b", text)]
    return min(found)[1] if found else None


def attribute_accuracy(records: list[dict]) -> dict:
    """Share of captions naming the right colour / shape / positions (the first such word; references agree)."""
    def truth(words, refs):
        return first_word(words, refs[0].lower())

    out = {}
    for attr, words in ATTRIBUTES.items():
        hits = [first_word(words, r["prediction"].lower()) == truth(words, r["references"]) for r in records]
        out[attr] = round(sum(hits) / max(len(hits), 1), 3)
    return out


def work_dir_of(run_dir: str, name: str) -> str:
    """The run's mmengine work dir; named after the run, which titles its loss-curve plot."""
    return os.path.join(run_dir, f"work_{name}")


def summarise(name: str, run_dir: str, log: str) -> dict:
    text = open(log, errors="replace").read() if os.path.exists(log) else ""
    out = dict(name=name)
    evals = re.findall(r"evaluation at iter (\d+): (.*)", text)
    if evals:
        out["iter"] = int(evals[-1][0])
        out.update({k: float(v) for k, v in re.findall(r"(\S+) ([0-9.]+)(?:,|$)", evals[-1][1])})
    trained = re.findall(r"Iter\(train\) \[ *(\d+)/", text)
    if trained:
        out["last_logged_iter"] = int(trained[-1])
    times = [float(t) for t in re.findall(r"Iter\(train\).*?\btime: ([0-9.]+)", text)]
    if times:
        steady = times[1:] or times  # the first log line includes the start-up
        out["s_per_iter"] = round(sum(steady) / len(steady), 4)
    tf = os.path.join(run_dir, "tf_eval.jsonl")
    if os.path.exists(tf):
        out["teacher_forced_cIoU"] = [json.loads(line) for line in open(tf)]
    captions = glob.glob(os.path.join(work_dir_of(run_dir, name), "eval", "*_captions_iter*.json"))
    if captions:
        latest = max(captions, key=lambda p: int(re.search(r"_iter(\d+)", p).group(1)))  # iter1000 after iter893
        records = json.load(open(latest))
        shutil.copy(latest, os.path.join(run_dir, "captions.json"))
        out["caption_attribute_accuracy"] = attribute_accuracy(records)
    return out


class Stopped(Exception):
    """SIGTERM reached the sweep."""


def _raise_stopped(signum, frame):
    raise Stopped()


def child_env(index: int, n_runs: int, gpus: int, environ=None, loader_workers: int = 0) -> dict:
    """Environment of run ``index``: its GPU (round-robin when several are visible) and, unless the caller set
    OMP_NUM_THREADS, a share of the host's cores for torch's intra-op threads. Without it every run (a single
    process, which mmengine leaves at torch's default) uses all cores: four runs on the 64-core 4-GPU host then
    took 90-120 s for a generation evaluation that takes ~15 s alone.

    On CPU (``gpus == 0``) the runs compute with their threads: half the cores for them, half for the loaders.
    With GPUs a run's threads matter little and its ``loader_workers`` (one core each) are what keeps the GPU fed:
    the runs share what the workers leave (tenth session: 2 runs x 14 workers on 32 cores -> 2 threads each);
    half, as on CPU, when the worker count is not given.
    """
    env = dict(os.environ if environ is None else environ)
    if gpus > 1:
        env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    if "OMP_NUM_THREADS" not in env:
        cores = os.cpu_count() or 1
        spare = cores - n_runs * loader_workers if gpus and loader_workers else cores // 2
        env["OMP_NUM_THREADS"] = str(max(1, spare // n_runs))
    return env


def stop_children(procs: list, grace_s: float = 15.0) -> None:
    """Terminate the runs still alive; kill those that have not exited after ``grace_s``."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.time() + grace_s
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="NAME:key=value,...")
    p.add_argument("--out", default="learning_proof_sweep")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _train_child(args.child, args.work_dir)
        return
    if not args.runs:
        p.error("give at least one run")

    specs = [parse_spec(s) for s in args.runs]
    t0 = time.time()
    roots = {}
    for name, opts in specs:  # one asset directory per distinct prepare (made in parallel)
        roots.setdefault(json.dumps(variant_config(opts).prepare.to_dict(), sort_keys=True, default=str), opts)
    # spawn: the parent has imported torch/mmengine (the hook), and CUDA must not be inherited through fork
    with ProcessPoolExecutor(len(roots), mp_context=multiprocessing.get_context("spawn")) as pool:
        made = list(pool.map(_prepare, roots.values()))
    print(f"assets {made} ready after {time.time() - t0:.0f} s", flush=True)

    procs, gpus = {}, torch.cuda.device_count()
    workers = [variant_config(opts).train_dataloader.num_workers for _, opts in specs]
    for k, (spec, (name, _)) in enumerate(zip(args.runs, specs)):
        run_dir = os.path.join(args.out, name)
        shutil.rmtree(work_dir_of(run_dir, name), ignore_errors=True)
        os.makedirs(run_dir, exist_ok=True)
        log = open(os.path.join(run_dir, "train.log"), "w")
        procs[name] = (subprocess.Popen([sys.executable, __file__, "--child", spec, "--work-dir",
                                         work_dir_of(run_dir, name)], stdout=log, stderr=subprocess.STDOUT,
                                        env=child_env(k, len(specs), gpus, loader_workers=workers[k])),
                       run_dir, log)
    signal.signal(signal.SIGTERM, _raise_stopped)  # e.g. `timeout`: stop the runs, keep what they logged
    stopped = False
    try:
        for proc, _, _ in procs.values():
            proc.wait()
    except (Stopped, KeyboardInterrupt):
        # `timeout` signals the sweep and then its whole process group: the second SIGTERM must not cut this short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stopped = True
        stop_children([proc for proc, _, _ in procs.values()])
    results = []
    for name, (proc, run_dir, log) in procs.items():
        log.close()
        for f in ("losses.jsonl", "tf_eval.jsonl", "*.png"):
            for path in glob.glob(os.path.join(work_dir_of(run_dir, name), f)):
                shutil.copy(path, run_dir)
        r = summarise(name, run_dir, os.path.join(run_dir, "train.log"))
        r.update(rc=proc.returncode, wall_s=round(time.time() - t0))
        results.append(r)
        print(json.dumps(r), flush=True)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(dict(runs=args.runs, results=results, stopped=stopped), f, indent=1)
    if stopped:
        raise SystemExit(143)


if __name__ == "__main__":
    main()
