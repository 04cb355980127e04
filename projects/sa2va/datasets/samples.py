"""(image, texts, masks) -> one dataset item of docs/batch_layout.md.

:class:`SampleBuilder` is what every image dataset shares once its records are read: tile the image, write the
image / region placeholders into the first user turn, encode the conversation (``encoding.encode_conversation``),
keep the masks whose ``[SEG]`` survived truncation, add the SAM2 image, and check the contract's invariant
(``<IMG_CONTEXT>`` count and ``[SEG]`` count). The datasets only read their formats and choose the texts.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..tokenizer import IMG_CONTEXT_TOKEN, SEG_TOKEN
from .encoding import encode_conversation, image_token_string, region_token_string
from .errors import BadRecordError
from .image_processing import TileProcessor, prompt_grid_size, tokens_per_tile
from .masks import to_prompt_grid
from .text import ANSWER_LIST, SEG_QUESTIONS

__all__ = ["SampleBuilder"]

CHARS_PER_TOKEN = 4  # English text in byte-level BPE vocabularies: ~4 characters per token (length estimates only)
# mean characters a segmentation question + answer add around the phrase (length estimates only)
SEG_TURN_CHARS = (sum(len(q) - len("{class_name}") for q in SEG_QUESTIONS) / len(SEG_QUESTIONS)
                  + sum(len(a) for a in ANSWER_LIST) / len(ANSWER_LIST))


class SampleBuilder:
    """Builds contract items; shared by the REFER, Osprey and custom-json datasets.

    Args:
        tokenizer: the run's tokenizer (with Sa2VA's special tokens).
        template: template name or dict (:func:`~sa2va.datasets.templates.get_template`).
        max_length: longest ``input_ids``; whole trailing turns are dropped beyond it.
        tile_processor: InternVL tiling.
        sam2_processor: an object with ``apply_image(uint8 [H,W,3]) -> uint8 [S,S,3]`` (``DirectResize``), or None
            for items without SAM2 input (mask captioning).
        truncations: counter the builder updates: ``samples`` (items that lost turns), ``turns``, ``masks``.
    """

    def __init__(self, tokenizer, template, max_length: int, tile_processor: TileProcessor,
                 sam2_processor=None, truncations: Counter | None = None):
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = int(max_length)
        self.tile_processor = tile_processor
        self.sam2_processor = sam2_processor
        self.tokens_per_tile = tokens_per_tile(tile_processor.tile_size)
        self.grid = prompt_grid_size(tile_processor.tile_size)
        self.truncations = truncations if truncations is not None else Counter()
        self.img_context_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
        self.seg_id = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
        self._turn_overhead: int | None = None

    # ------------------------------------------------------------------------------------------------ pieces
    def image_inputs(self, image: Image.Image) -> tuple[torch.Tensor, str]:
        """Tiles ``[T, 3, s, s]`` and the image placeholder string for them."""
        pixel_values = self.tile_processor(image)  # [T, 3, s, s]
        return pixel_values, image_token_string(pixel_values.shape[0], self.tokens_per_tile)

    def sam2_image(self, image: Image.Image) -> torch.Tensor:
        """SAM2 input, ``uint8 [3, S, S]``."""
        if hasattr(self.sam2_processor, "chw_tensor"):  # DirectResize: straight to the channels-first layout
            return self.sam2_processor.chw_tensor(np.asarray(image))
        resized = self.sam2_processor.apply_image(np.asarray(image))  # [S, S, 3] uint8
        return torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).contiguous()

    def prompt_masks(self, region_masks: np.ndarray | torch.Tensor, *, file: str | os.PathLike, record_id: object,
                     fields: Sequence[str]) -> torch.Tensor:
        """Region masks ``[R, H, W]`` -> ``uint8 [R, g, g]`` on the thumbnail's token grid.

        A region with no cell on the grid (an object too small for it) would get no token: BadRecordError naming
        ``fields[r]``, reason ``empty_region_mask`` (the original let it through with zero tokens).
        """
        grids = to_prompt_grid(region_masks, self.grid)  # [R, g, g]
        empty = torch.nonzero(grids.flatten(1).sum(1) == 0).flatten().tolist()
        if empty:
            r = empty[0]
            raise BadRecordError(file, record_id, fields[r],
                                 f"region {r + 1} is empty on the {self.grid}x{self.grid} prompt grid of the "
                                 f"thumbnail (object too small)", reason="empty_region_mask")
        return grids

    def encode(self, turns: list[dict], *, file: str | os.PathLike, record_id: object) -> dict:
        """Encode; a first turn that alone exceeds ``max_length`` becomes a :class:`BadRecordError`."""
        try:
            enc = encode_conversation(turns, self.tokenizer, self.template, self.max_length,
                                      record_id=f"{os.fspath(file)}: record {record_id}")
        except ValueError as e:
            raise BadRecordError(file, record_id, "text", f"cannot encode: {e}", reason="too_long") from e
        if enc["truncated"]:
            self.truncations["samples"] += 1
            self.truncations["turns"] += len(turns) - enc["turns_kept"]
        return enc

    def _check_counts(self, enc: dict, num_tiles: int, region_cells: int, num_masks: int, *, file, record_id):
        ids = enc["input_ids"]
        n_ctx = int((ids == self.img_context_id).sum())
        n_seg = int((ids == self.seg_id).sum())
        want_ctx = num_tiles * self.tokens_per_tile + region_cells
        if n_ctx != want_ctx or n_seg != num_masks:
            raise BadRecordError(
                file, record_id, "text",
                f"the text contains special tokens: {n_ctx} {IMG_CONTEXT_TOKEN} (expected {want_ctx}) and "
                f"{n_seg} {SEG_TOKEN} (expected {num_masks})", reason="special_tokens_in_text")

    # ------------------------------------------------------------------------------------------------ items
    def referring_segmentation(self, image: Image.Image, phrases: Sequence[str], masks: np.ndarray,
                               rng: np.random.Generator, *, file: str | os.PathLike, record_id: object) -> dict:
        """One turn per phrase: a random ``SEG_QUESTIONS`` question, a random ``ANSWER_LIST`` answer (one [SEG]).

        ``masks`` is ``uint8 [N, H, W]`` with ``N == len(phrases)``; masks of turns dropped by truncation are dropped.
        """
        if self.sam2_processor is None:
            raise ValueError("referring segmentation needs a SAM2 image processor (extra_image_processor)")
        pixel_values, image_str = self.image_inputs(image)
        turns = [dict(input=SEG_QUESTIONS[rng.integers(len(SEG_QUESTIONS))].format(class_name=phrase),
                      output=ANSWER_LIST[rng.integers(len(ANSWER_LIST))]) for phrase in phrases]
        turns[0]["input"] = image_str + "\n" + turns[0]["input"]
        enc = self.encode(turns, file=file, record_id=record_id)
        kept = enc["turns_kept"]  # every answer holds exactly one [SEG]
        self.truncations["masks"] += len(phrases) - kept
        self._check_counts(enc, pixel_values.shape[0], 0, kept, file=file, record_id=record_id)
        return dict(
            input_ids=enc["input_ids"],                       # [L]
            labels=enc["labels"],                             # [L]
            length=int(enc["input_ids"].numel()),
            pixel_values=pixel_values,                        # [T, 3, s, s]
            g_pixel_values=self.sam2_image(image),            # [3, S, S] uint8
            masks=torch.from_numpy(np.ascontiguousarray(masks[:kept], dtype=np.uint8)),  # [N, H, W]
            frames_per_batch=1,
            record_id=f"{os.fspath(file)}: record {record_id}",
        )

    def region_conversation(self, image: Image.Image, prompt_masks: torch.Tensor, turns: list[dict], *,
                            file: str | os.PathLike, record_id: object) -> dict:
        """Mask captioning / region QA: the region header (one ``<vp>`` group per region, as many
        ``<IMG_CONTEXT>`` as the region's non-zero grid cells) goes after the image, before the first question.

        ``prompt_masks``: ``uint8 [R, g, g]`` from :meth:`prompt_masks`, none of them empty.
        """
        pixel_values, image_str = self.image_inputs(image)
        cells = [int(c) for c in prompt_masks.flatten(1).sum(1)]  # [R] region token counts
        turns = [dict(t) for t in turns]
        turns[0]["input"] = image_str + "\n" + region_token_string(cells) + turns[0]["input"]
        enc = self.encode(turns, file=file, record_id=record_id)
        self._check_counts(enc, pixel_values.shape[0], sum(cells), 0, file=file, record_id=record_id)
        return dict(
            input_ids=enc["input_ids"],                       # [L]
            labels=enc["labels"],                             # [L]
            length=int(enc["input_ids"].numel()),
            pixel_values=pixel_values,                        # [T, 3, s, s]
            prompt_masks=prompt_masks.to(torch.uint8),        # [R, g, g]
            frames_per_batch=1,
            record_id=f"{os.fspath(file)}: record {record_id}",
        )

    # ------------------------------------------------------------------------------------------------ lengths
    def estimate_length(self, width: int | None, height: int | None, text_chars: int, num_turns: int,
                        region_cells: int = 0) -> int:
        """Token count of an item estimated without its image or tokenizer pass (for the length sampler).

        = image tokens (exact tile count from the stored size; the maximum tile count when the size is unknown)
        + region tokens + ``text_chars / 4`` + the template's per-turn tokens.
        """
        if width and height:
            num_tiles = self.tile_processor.num_tiles(int(width), int(height))
        else:
            tp = self.tile_processor
            num_tiles = tp.max_tiles + (1 if tp.use_thumbnail and tp.max_tiles > 1 else 0)
        image_tokens = num_tiles * self.tokens_per_tile + 2  # + <img> </img>
        return image_tokens + region_cells + math.ceil(text_chars / CHARS_PER_TOKEN) \
            + num_turns * self.turn_overhead()

    def estimate_referring_segmentation(self, width: int | None, height: int | None, num_turns: int,
                                        mean_phrase_chars: float) -> int:
        """:meth:`estimate_length` of a :meth:`referring_segmentation` item with ``num_turns`` phrases."""
        chars = num_turns * (mean_phrase_chars + SEG_TURN_CHARS)
        return self.estimate_length(width, height, int(chars), num_turns)

    def estimate_region_conversation(self, width: int | None, height: int | None, text_chars: int, num_turns: int,
                                     region_cells: int, num_regions: int) -> int:
        """:meth:`estimate_length` of a :meth:`region_conversation` item (``text_chars``: questions + answers)."""
        header = 10 + 5 * num_regions  # "There are N part regions in the picture: " + "regionK<vp></vp>, " each
        return self.estimate_length(width, height, text_chars, num_turns, region_cells=region_cells + header)

    def turn_overhead(self) -> int:
        """Tokens the template adds per turn (INSTRUCTION + SUFFIX + SEP around empty texts), computed once."""
        if self._turn_overhead is None:
            enc = encode_conversation([dict(input="", output="")], self.tokenizer, self.template, 1 << 30)
            self._turn_overhead = int(enc["input_ids"].numel())
        return self._turn_overhead
