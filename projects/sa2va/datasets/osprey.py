"""Osprey-724K-style region data: region QA, detailed and short region descriptions.

JSON (``data_path``): a list of entries ``{"file_name", "height", "width", "annotation": [{"segmentation": polygons |
RLE, ...}, ...], "conversations": [{"from": "human"|"gpt", "value": str}, ...]}`` or, for the description files,
``"description": [str, one per annotation]``. ``image_folder``: one folder or a list of folders; an image is taken
from the first folder that has it (Osprey mixes COCO train2014/val2014/train2017/val2017).

Every annotation is a region: its mask, nearest-downsampled to the thumbnail's g x g token grid, becomes
``prompt_masks[r]`` and the region header ``There are N part regions in the picture: region1<vp>...</vp>, ...\\n``
goes after the image, before the first question. Region r gets exactly ``prompt_masks[r].sum()`` tokens, so a region
that is empty on the grid is a bad record (reason ``empty_region_mask``; the original gave it zero tokens).

Text: ``<regionN>`` markers lose their brackets (``region3``, the name the header uses) and ``<image>`` placeholders
are removed (the dataset places the image itself); all other text is kept as is. The original deleted **every**
``<`` and ``>`` character, which also mangled answers such as ``a < b`` or HTML-like text.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from ..registry import BUILDER
from .base import ImageDatasetBase, find_image, load_image
from .errors import BadRecordError
from .masks import decode_segmentation
from .text import DETAILED_QUESTIONS, SHORT_ANSWER_LIMIT, remove_image_placeholder, strip_region_markers

__all__ = ["OspreyDataset", "OspreyDescriptionDataset", "OspreyShortDescriptionDataset"]

_REGION_REF = re.compile(r"<\s*region(\d+)\s*>", re.IGNORECASE)


@BUILDER.register_module()
class OspreyDataset(ImageDatasetBase):
    """Region conversations (``osprey_conversation.json``, ``osprey_part_level.json``,
    ``osprey_lvis_positive_negative.json``).

    Args:
        data_path: the json file.
        image_folder: a folder or a list of folders to look for ``file_name`` in (first hit wins).
        other args: :class:`~sa2va.datasets.base.ImageDatasetBase` (``extra_image_processor`` is unused: mask
        captioning items carry no SAM2 input).
    """

    #: appended to every user turn (the short-form dataset asks for one word or phrase)
    limit = ""

    def __init__(self, data_path: str, image_folder: str | list[str], tokenizer=None, template="qwen_chat",
                 max_length: int = 8192, tile_size: int = 448, max_dynamic_patch: int = 12,
                 skip_bad_records: bool = False, seed: int | None = None, repeats: int = 1, name: str | None = None,
                 **kwargs):
        super().__init__(tokenizer=tokenizer, template=template, max_length=max_length, tile_size=tile_size,
                         max_dynamic_patch=max_dynamic_patch, skip_bad_records=skip_bad_records, seed=seed,
                         repeats=repeats, name=name, **kwargs)
        self.data_path = os.fspath(data_path)
        self.image_folders = [os.fspath(image_folder)] if isinstance(image_folder, (str, os.PathLike)) \
            else [os.fspath(f) for f in image_folder]
        if not self.image_folders:
            raise ValueError(f"{self.name}: image_folder is empty")
        if not os.path.isfile(self.data_path):
            raise FileNotFoundError(f"{self.name}: {self.data_path} not found")
        with open(self.data_path) as f:
            self.records = json.load(f)
        if not isinstance(self.records, list):
            raise ValueError(f"{self.data_path}: expected a json list of entries, got {type(self.records).__name__}")
        if not self.records:
            raise ValueError(f"{self.name}: {self.data_path} has no entries")
        self.logger.info(f"{self.name}: {len(self.records)} entries in {self.data_path}")

    # ---------------------------------------------------------------------------------------------- per item
    def _record_id(self, index: int) -> str:
        entry = self.records[index]
        return f"#{index}" + (f" (id={entry['id']})" if isinstance(entry, dict) and "id" in entry else "")

    def _bad(self, index: int, field: str, problem: str, reason: str = "bad_record") -> BadRecordError:
        return BadRecordError(self.data_path, self._record_id(index), field, problem, reason=reason)

    def _entry(self, index: int) -> dict:
        entry = self.records[index]
        if not isinstance(entry, dict):
            raise self._bad(index, "entry", f"expected an object, got {type(entry).__name__}")
        if not isinstance(entry.get("file_name"), str) or not entry["file_name"]:
            raise self._bad(index, "file_name", f"missing or not a string: {entry.get('file_name')!r}")
        annotation = entry.get("annotation")
        if not isinstance(annotation, list) or not annotation:
            raise self._bad(index, "annotation", "missing or empty: an entry needs at least one region")
        return entry

    def prepare(self, record_index: int, rng: np.random.Generator) -> dict:
        entry = self._entry(record_index)
        rid = self._record_id(record_index)
        turns = self.make_turns(record_index, entry, rng)  # text problems surface before the image is read
        stored = (entry.get("width"), entry.get("height"))
        has_size = all(isinstance(v, int) and v > 0 for v in stored)
        image = load_image(find_image(self.image_folders, entry["file_name"]), file=self.data_path, record_id=rid,
                           expected_size=stored if has_size else None)
        width, height = image.size
        masks = np.stack([decode_segmentation(ann.get("segmentation") if isinstance(ann, dict) else None,
                                              height, width, file=self.data_path, record_id=rid,
                                              field=f"annotation[{k}].segmentation")
                          for k, ann in enumerate(entry["annotation"])])  # [R, H, W]
        fields = [f"annotation[{k}].segmentation" for k in range(len(masks))]
        prompt_masks = self.builder.prompt_masks(masks, file=self.data_path, record_id=rid, fields=fields)
        return self.builder.region_conversation(image, prompt_masks, turns, file=self.data_path, record_id=rid)

    def make_turns(self, index: int, entry: dict, rng: np.random.Generator) -> list[dict]:
        """``conversations`` -> ``[{input, output}]``: consecutive human values are joined, each answered by gpt."""
        conversations = entry.get("conversations")
        if not isinstance(conversations, list) or not conversations:
            raise self._bad(index, "conversations", "missing or empty")
        turns, pending = [], []
        for k, msg in enumerate(conversations):
            role = msg.get("from") if isinstance(msg, dict) else None
            value = msg.get("value") if isinstance(msg, dict) else None
            if role not in ("human", "gpt") or not isinstance(value, str):
                raise self._bad(index, f"conversations[{k}]", "need {'from': 'human'|'gpt', 'value': str}")
            value = strip_region_markers(remove_image_placeholder(value)).strip()
            if role == "human":
                pending.append(value)
            elif not pending:
                raise self._bad(index, f"conversations[{k}]", "a gpt message without a question before it")
            else:
                turns.append(dict(input="\n".join(pending) + self.limit, output=value))
                pending = []
        if not turns:
            raise self._bad(index, "conversations", "no question/answer pair")
        self._check_region_refs(index, entry, " ".join(m.get("value", "") for m in conversations), "conversations")
        return turns

    def _check_region_refs(self, index: int, entry: dict, text: str, field: str) -> None:
        n = len(entry["annotation"])
        refs = {int(m) for m in _REGION_REF.findall(text)}
        out = sorted(r for r in refs if not 1 <= r <= n)
        if out:
            raise self._bad(index, field, f"mentions region(s) {out} but the entry has {n} annotation(s)",
                            reason="unknown_region")

    # ---------------------------------------------------------------------------------------------- lengths
    def _text_chars(self, entry: dict) -> tuple[int, int]:
        conv = entry.get("conversations") or []
        chars = sum(len(m.get("value", "")) for m in conv if isinstance(m, dict))
        return chars + len(self.limit) * len(conv) // 2, max(1, len(conv) // 2)

    def estimate_length(self, record_index: int) -> int:
        entry = self.records[record_index]
        if not isinstance(entry, dict):
            return 1
        width, height = entry.get("width"), entry.get("height")
        anns = entry.get("annotation") or []
        g2 = self.builder.grid ** 2
        cells = 0
        for ann in anns:
            area = ann.get("area") if isinstance(ann, dict) else None
            if area and width and height:
                cells += max(1, min(g2, round(area / (width * height) * g2)))
            else:
                cells += g2 // 8  # no area stored: a typical region
        chars, n_turns = self._text_chars(entry)
        return self.builder.estimate_region_conversation(width, height, chars, n_turns, cells, len(anns))


@BUILDER.register_module()
class OspreyShortDescriptionDataset(OspreyDataset):
    """``osprey_short_form.json``: region conversations whose questions ask for a single word or phrase
    (``" Answer the question using a single word or phrase."`` appended to every question)."""

    limit = SHORT_ANSWER_LIMIT


@BUILDER.register_module()
class OspreyDescriptionDataset(OspreyDataset):
    """``osprey_detail_description.json``: one turn per region, in order: a random ``DETAILED_QUESTIONS``
    question with ``<region>`` -> ``region{r}``, answered by the entry's ``description[r]``."""

    def make_turns(self, index: int, entry: dict, rng: np.random.Generator) -> list[dict]:
        descriptions = entry.get("description")
        n = len(entry["annotation"])
        if not isinstance(descriptions, list) or len(descriptions) != n \
                or not all(isinstance(d, str) and d.strip() for d in descriptions):
            raise self._bad(index, "description", f"need one non-empty string per annotation ({n}), got "
                                                  f"{descriptions!r:.120}")
        self._check_region_refs(index, entry, " ".join(descriptions), "description")
        return [dict(input=DETAILED_QUESTIONS[rng.integers(len(DETAILED_QUESTIONS))].replace("<region>",
                                                                                             f"region{r + 1}"),
                     output=strip_region_markers(d).strip())
                for r, d in enumerate(descriptions)]

    def _text_chars(self, entry: dict) -> tuple[int, int]:
        descriptions = entry.get("description") or []
        mean_q = sum(len(q) for q in DETAILED_QUESTIONS) / len(DETAILED_QUESTIONS)
        return int(sum(len(d) for d in descriptions if isinstance(d, str)) + mean_q * len(descriptions)), \
            max(1, len(descriptions))
