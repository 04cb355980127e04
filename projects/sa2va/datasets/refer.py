"""RefCOCO / RefCOCO+ / RefCOCOg in the REFER format.

On disk (``data_root`` = ``data/ref_seg/refcoco``, ...)::

    instances.json     COCO: images[*].{id, file_name, height, width}, annotations[*].{id, image_id, segmentation}
    refs(unc).p        pickle list of refs: ref_id, ann_id, image_id, split, sentences[*].{raw, sent}
                       (refs(umd).p for RefCOCOg, refs(unc).p for RefCOCO and RefCOCO+)
    <data_prefix.img_path>/<file_name>   the COCO train2014 images (relative to data_root unless absolute)

One item per image that has refs in ``split``. Per ``__getitem__`` (not frozen at load time, unlike the
original): up to ``num_classes_per_sample`` refs of the image **without replacement** (all of them when the image
has fewer), and for each ref one of its sentences at random. The original drew exactly 5 refs *with* replacement,
so an image with 2 refs repeated the same object (and, frozen, the same sentence) up to 4 times in one sample;
we never duplicate an object within a sample and let epochs bring the variety.

* :class:`ReferSegmDataset`: text -> mask. One turn per ref: ``SEG_QUESTIONS`` question about the normalised
  ``raw`` sentence, ``ANSWER_LIST`` answer with one ``[SEG]``; ``<image>`` (the image tokens) + ``'\\n'`` before the
  first question; ``masks`` [N,H,W] in [SEG] order. :meth:`ReferSegmDataset.eval_view` is the evaluation view.
* :class:`ReferRegionCaptionDataset`: mask -> text. The refs' masks are the regions of the Osprey header; one
  turn per region: ``REGION_CAPTION_QUESTION`` (``...marked by region{i}.``) -> the ref's expression.
"""
from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..registry import BUILDER
from .base import DEFAULT_SAM2_PROCESSOR, ImageDatasetBase, load_image
from .errors import BadRecordError
from .masks import decode_segmentation
from .text import REGION_CAPTION_QUESTION, clean_text, normalize_phrase

__all__ = ["ReferSegmDataset", "ReferRegionCaptionDataset", "ReferEvalView"]



class _ReferBase(ImageDatasetBase):
    """Reads the REFER files into one record per image (shared by the two REFER datasets)."""

    def __init__(self, data_root: str, ann_file: str = "instances.json", split_file: str = "refs(unc).p",
                 data_prefix: Mapping = dict(img_path="coco2014/train2014/"), split: str = "train",
                 num_classes_per_sample: int = 5, **kwargs):
        super().__init__(**kwargs)
        if num_classes_per_sample < 1:
            raise ValueError(f"num_classes_per_sample must be >= 1, got {num_classes_per_sample}")
        self.data_root = os.fspath(data_root)
        self.ann_path = os.path.join(self.data_root, ann_file)
        self.split_path = os.path.join(self.data_root, split_file)
        self.image_dir = os.path.join(self.data_root, data_prefix["img_path"])  # absolute img_path stays absolute
        self.split = split
        self.num_classes_per_sample = int(num_classes_per_sample)
        self._load()

    # ---------------------------------------------------------------------------------------------- loading
    def _load(self) -> None:
        for path in (self.split_path, self.ann_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{self.name}: {path} not found (data_root={self.data_root!r})")
        with open(self.split_path, "rb") as f:
            refs = pickle.load(f)
        with open(self.ann_path) as f:
            instances = json.load(f)
        if not isinstance(refs, list):
            raise ValueError(f"{self.split_path}: expected a pickled list of refs, got {type(refs).__name__}")
        images = {img["id"]: img for img in instances.get("images", [])}
        anns = {ann["id"]: ann for ann in instances.get("annotations", [])}

        by_image: dict[int, dict[int, dict]] = {}  # image_id -> ann_id -> ref record
        self.segmentations: dict[int, object] = {}  # ann_id -> segmentation, only for the refs of this split
        splits_seen = set()
        for k, ref in enumerate(refs):
            splits_seen.add(ref.get("split"))
            if ref.get("split") != self.split:
                continue
            try:
                rec = self._read_ref(k, ref, images, anns)
            except BadRecordError as e:
                self.skip_or_raise(e)
                continue
            image_refs = by_image.setdefault(rec["image_id"], {})
            if rec["ann_id"] in image_refs:  # two refs of one object: one object, all sentences
                merged = image_refs[rec["ann_id"]]
                for key in ("sentences", "eval_sentences", "captions"):
                    merged[key] += rec[key]
            else:
                image_refs[rec["ann_id"]] = rec
                self.segmentations[rec["ann_id"]] = anns[rec["ann_id"]]["segmentation"]
        if not by_image:
            raise ValueError(f"{self.name}: no usable refs with split={self.split!r} in {self.split_path} "
                             f"(splits present: {sorted(map(str, splits_seen))}; skipped: {dict(self.skip_counts)})")
        self.records = []
        for image_id in sorted(by_image):
            img = images[image_id]
            self.records.append(dict(image_id=image_id, file_name=img["file_name"], width=int(img["width"]),
                                     height=int(img["height"]), refs=list(by_image[image_id].values())))
        self.logger.info(f"{self.name}: {len(self.records)} images, "
                         f"{sum(len(r['refs']) for r in self.records)} refs in split {self.split!r} "
                         f"of {self.split_path}")

    def _read_ref(self, k: int, ref: dict, images: dict, anns: dict) -> dict:
        rid = f"ref_id={ref.get('ref_id', f'#{k}')}"

        def bad(field, problem, reason):
            return BadRecordError(self.split_path, rid, field, problem, reason=reason)

        ann_id = ref.get("ann_id")
        if ann_id not in anns:
            raise bad("ann_id", f"ann_id {ann_id!r} is not in {self.ann_path}", "unknown_ann")
        image_id = ref.get("image_id", anns[ann_id].get("image_id"))
        if image_id not in images:
            raise bad("image_id", f"image_id {image_id!r} is not in {self.ann_path}", "unknown_image")
        if anns[ann_id].get("image_id", image_id) != image_id:
            raise bad("image_id", f"image_id {image_id} but its ann {ann_id} belongs to image "
                                  f"{anns[ann_id].get('image_id')}", "image_mismatch")
        img = images[image_id]
        if not all(isinstance(img.get(key), int) and img[key] > 0 for key in ("height", "width")):
            raise BadRecordError(self.ann_path, f"image_id={image_id}", "height/width",
                                 f"need positive integers, got {img.get('height')!r}/{img.get('width')!r}",
                                 reason="bad_image_size")
        sentences = ref.get("sentences") or []
        train, evals, captions = [], [], []
        for j, s in enumerate(sentences):
            raw = s.get("raw", s.get("sent")) if isinstance(s, Mapping) else None
            phrase = normalize_phrase(raw) if isinstance(raw, str) else ""
            if not phrase:
                self.skip_or_raise(bad(f"sentences[{j}]", f"empty or missing sentence {raw!r}", "empty_sentence"))
                continue
            train.append(phrase)                                  # segmentation phrase: lower case, no final '.'
            evals.append(normalize_phrase(s.get("sent") or raw))  # REFER's normalised form, as the original eval
            captions.append(clean_text(raw))                      # caption: case and punctuation kept
        if not train:
            raise bad("sentences", "no usable sentence", "no_sentences")
        return dict(ref_id=ref.get("ref_id", k), ann_id=ann_id, image_id=image_id, sentences=train,
                    eval_sentences=evals, captions=captions, area=float(anns[ann_id].get("area") or 0.0))

    # ---------------------------------------------------------------------------------------------- per item
    def _image(self, rec: dict):
        return load_image(os.path.join(self.image_dir, rec["file_name"]), file=self.ann_path,
                          record_id=f"image_id={rec['image_id']}", expected_size=(rec["width"], rec["height"]))

    def _decode(self, rec: dict, ref: dict) -> np.ndarray:
        return decode_segmentation(self.segmentations[ref["ann_id"]], rec["height"], rec["width"],
                                   file=self.ann_path, record_id=f"ann_id={ref['ann_id']} (ref_id={ref['ref_id']})")

    def _sample_refs(self, rec: dict, rng: np.random.Generator, accept=None) -> list[tuple[dict, np.ndarray, object]]:
        """Up to ``num_classes_per_sample`` distinct refs whose mask decodes and which ``accept`` (``accept(ref,
        mask) -> value`` or BadRecordError); see :meth:`ImageDatasetBase.choose_parts`.
        Returns ``[(ref, mask [H, W], value), ...]``; none usable -> BadRecordError."""
        refs = {ref["ref_id"]: ref for ref in rec["refs"]}

        def load(ref_id):
            mask = self._decode(rec, refs[ref_id])  # [H, W] uint8
            return mask, (accept(refs[ref_id], mask) if accept is not None else None)

        chosen = self.choose_parts(list(refs), self.num_classes_per_sample, rng, load)
        if not chosen:
            raise BadRecordError(self.split_path, self._record_id(rec), "refs",
                                 "none of the image's refs is usable", reason="no_usable_refs")
        return [(refs[ref_id], mask, value) for ref_id, (mask, value) in chosen]

    def _record_id(self, rec: dict) -> str:
        return f"image_id={rec['image_id']}"

    def eval_view(self) -> "ReferEvalView":
        """Per image, every sentence of every ref with its ref's mask (no randomness); see :class:`ReferEvalView`.
        The same for segmentation and for region captions (each ref's mask is the region, its sentences the
        references)."""
        return ReferEvalView(self)


@BUILDER.register_module()
class ReferSegmDataset(_ReferBase):
    """Referring segmentation on RefCOCO / RefCOCO+ / RefCOCOg (REFER format); see the module docstring.

    Args:
        data_root: the dataset directory (``data/ref_seg/refcoco``).
        ann_file, split_file: relative to ``data_root``.
        data_prefix: ``dict(img_path=...)``, the image folder relative to ``data_root`` (or absolute).
        split: ``train`` / ``val`` / ``testA`` / ``testB`` / ``test``.
        num_classes_per_sample: refs per item (without replacement; all when the image has fewer).
        extra_image_processor: SAM2 image processor, default ``DirectResize(1024)``; required.
        other args: :class:`~sa2va.datasets.base.ImageDatasetBase`.
    """

    def __init__(self, data_root: str, ann_file: str = "instances.json", split_file: str = "refs(unc).p",
                 data_prefix: Mapping = dict(img_path="coco2014/train2014/"), tokenizer=None,
                 template="qwen_chat", max_length: int = 8192, num_classes_per_sample: int = 5,
                 extra_image_processor=DEFAULT_SAM2_PROCESSOR, tile_size: int = 448, max_dynamic_patch: int = 12,
                 split: str = "train", skip_bad_records: bool = False, seed: int | None = None, repeats: int = 1,
                 name: str | None = None, **kwargs):
        if extra_image_processor is None:
            raise ValueError("ReferSegmDataset needs extra_image_processor (the SAM2 input, e.g. "
                             "dict(type=DirectResize, target_length=1024)); segmentation items carry g_pixel_values")
        super().__init__(data_root=data_root, ann_file=ann_file, split_file=split_file, data_prefix=data_prefix,
                         split=split, num_classes_per_sample=num_classes_per_sample, tokenizer=tokenizer,
                         template=template, max_length=max_length, extra_image_processor=extra_image_processor,
                         tile_size=tile_size, max_dynamic_patch=max_dynamic_patch,
                         skip_bad_records=skip_bad_records, seed=seed, repeats=repeats, name=name, **kwargs)

    def prepare(self, record_index: int, rng: np.random.Generator) -> dict:
        rec = self.records[record_index]
        chosen = self._sample_refs(rec, rng)
        phrases = [ref["sentences"][rng.integers(len(ref["sentences"]))] for ref, _, _ in chosen]
        masks = np.stack([mask for _, mask, _ in chosen])  # [N, H, W] uint8, in [SEG] order
        return self.builder.referring_segmentation(self._image(rec), phrases, masks, rng,
                                                   file=self.ann_path, record_id=self._record_id(rec))

    def estimate_length(self, record_index: int) -> int:
        rec = self.records[record_index]
        n = min(self.num_classes_per_sample, len(rec["refs"]))
        mean_sentence = np.mean([np.mean([len(s) for s in r["sentences"]]) for r in rec["refs"]])
        return self.builder.estimate_referring_segmentation(rec["width"], rec["height"], n, mean_sentence)

class ReferEvalView(Sequence):
    """Evaluation view of a REFER split (:class:`ReferSegmDataset` or :class:`ReferRegionCaptionDataset`): one
    entry per image, in image-id order.

    ``view[i]`` is ``dict(image=PIL RGB, image_path, image_id, record_id, texts=list[str], ann_ids=list[int],
    ref_ids=list[int], masks=uint8 [n_texts, H, W])``: every sentence of every ref of the image (REFER's
    normalised ``sent`` form, as the original evaluation), each with its ref's ground-truth mask (0/1 union of the
    annotation's parts; the original summed them).
    """

    def __init__(self, dataset: _ReferBase):
        self.dataset = dataset

    def __len__(self) -> int:
        return self.dataset.num_records

    def __getitem__(self, index: int) -> dict:
        ds = self.dataset
        rec = ds.records[index]
        texts, ann_ids, ref_ids, masks = [], [], [], []
        for ref in rec["refs"]:
            mask = ds._decode(rec, ref)  # [H, W]; a bad annotation raises (evaluation must be complete)
            for sentence in ref["eval_sentences"]:
                texts.append(sentence)
                ann_ids.append(ref["ann_id"])
                ref_ids.append(ref["ref_id"])
                masks.append(mask)
        return dict(image=ds._image(rec), image_path=os.path.join(ds.image_dir, rec["file_name"]),
                    image_id=rec["image_id"], record_id=f"{ds.ann_path}: record {ds._record_id(rec)}",
                    texts=texts, ann_ids=ann_ids, ref_ids=ref_ids,
                    masks=torch.from_numpy(np.stack(masks)))  # [n_texts, H, W] uint8


@BUILDER.register_module()
class ReferRegionCaptionDataset(_ReferBase):
    """Region (mask) captioning from REFER data (e.g. RefCOCOg): a ref's expression is the caption of its mask.

    Per item: up to ``num_classes_per_sample`` refs of the image as regions 1..R of the region header; turn r asks
    ``"Please give me a short description of the region in the picture marked by region{r}."`` and is answered by
    one of the ref's sentences (``raw``, whitespace/unicode-cleaned, case kept). A ref whose mask is empty on the
    thumbnail's token grid is left out (counted under ``empty_region_mask`` when skipping, else an error).
    No SAM2 input (``extra_image_processor`` defaults to None).
    """

    def __init__(self, data_root: str, ann_file: str = "instances.json", split_file: str = "refs(umd).p",
                 data_prefix: Mapping = dict(img_path="coco2014/train2014/"), tokenizer=None,
                 template="qwen_chat", max_length: int = 8192, num_classes_per_sample: int = 5,
                 extra_image_processor=None, tile_size: int = 448, max_dynamic_patch: int = 12,
                 split: str = "train", skip_bad_records: bool = False, seed: int | None = None, repeats: int = 1,
                 name: str | None = None, **kwargs):
        super().__init__(data_root=data_root, ann_file=ann_file, split_file=split_file, data_prefix=data_prefix,
                         split=split, num_classes_per_sample=num_classes_per_sample, tokenizer=tokenizer,
                         template=template, max_length=max_length, extra_image_processor=extra_image_processor,
                         tile_size=tile_size, max_dynamic_patch=max_dynamic_patch,
                         skip_bad_records=skip_bad_records, seed=seed, repeats=repeats, name=name, **kwargs)

    def _region_grid(self, ref: dict, mask: np.ndarray) -> torch.Tensor:
        """The ref's mask on the prompt grid, ``uint8 [g, g]``; empty -> BadRecordError."""
        return self.builder.prompt_masks(mask[None], file=self.ann_path, fields=["segmentation"],
                                         record_id=f"ann_id={ref['ann_id']} (ref_id={ref['ref_id']})")[0]

    def prepare(self, record_index: int, rng: np.random.Generator) -> dict:
        rec = self.records[record_index]
        chosen = self._sample_refs(rec, rng, accept=self._region_grid)
        turns = [dict(input=REGION_CAPTION_QUESTION.format(index=r + 1),
                      output=ref["captions"][rng.integers(len(ref["captions"]))])
                 for r, (ref, _, _) in enumerate(chosen)]
        prompt_masks = torch.stack([grid for _, _, grid in chosen])  # [R, g, g]
        return self.builder.region_conversation(self._image(rec), prompt_masks, turns,
                                                file=self.ann_path, record_id=self._record_id(rec))

    def estimate_length(self, record_index: int) -> int:
        rec = self.records[record_index]
        refs = rec["refs"][: self.num_classes_per_sample]
        g2 = self.builder.grid ** 2
        cells = sum(max(1, round(r["area"] / (rec["width"] * rec["height"]) * g2)) for r in refs)
        chars = sum(np.mean([len(s) for s in r["captions"]]) + len(REGION_CAPTION_QUESTION) for r in refs)
        return self.builder.estimate_region_conversation(rec["width"], rec["height"], int(chars), len(refs),
                                                         cells, len(refs))
