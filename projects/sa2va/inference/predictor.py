"""Sa2VA inference: image + text -> answer + one mask per ``[SEG]``; image + region masks -> region captions.

Prompts are built exactly as the training data builds them (:mod:`sa2va.datasets`): the image placeholder
(``<img>`` + ``<IMG_CONTEXT>`` x tokens per tile x tiles + ``</img>``) first, then ``'\\n'``, then for region
prompts the region header (``There are N part regions in the picture: region1<vp>...</vp>.\\n``), then the user
text; the whole is wrapped by the template's INSTRUCTION and tokenized by the same encoder as training.

Masks: the final-layer hidden state at each generated ``[SEG]`` input position -> ``text_hidden_fcs`` -> SAM2
mask decoder (image encoded once per image) -> low-res logits, upsampled bilinearly (``align_corners=False``) to
the original image size, foreground where logit > 0.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from PIL import Image

from ..datasets.encoding import IGNORE_INDEX, encode_conversation, image_token_string, region_token_string
from ..datasets.image_processing import TileProcessor, sam2_image_tensor
from ..datasets.masks import to_prompt_grid
from ..datasets.templates import get_template
from ..datasets.text import REGION_CAPTION_QUESTION, remove_image_placeholder
from ..tokenizer import SEG_TOKEN
from .generation import StopCondition, greedy_generate


@dataclass
class Prediction:
    """One answer.

    Attributes:
        text: the generated answer (stop word removed; special tokens such as ``[SEG]`` kept).
        token_ids: the generated token ids (stop token removed).
        masks: ``bool [N, H, W]``, one per ``[SEG]`` in ``text``, in order, at the original image size.
        phrases: per mask the ``<p> phrase </p>`` right before its ``[SEG]``, or None.
        stopped: False when ``max_new_tokens`` ended the answer.
    """

    text: str
    token_ids: list[int]
    masks: torch.Tensor
    phrases: list[str | None] = field(default_factory=list)
    stopped: bool = True


_PHRASE_BEFORE_SEG = re.compile(r"<p>\s*(.*?)\s*</p>\s*$", re.DOTALL)


def seg_phrases(text: str) -> list[str | None]:
    """For each ``[SEG]`` in ``text``: the ``<p>...</p>`` phrase right before it (grounded captions), else None."""
    chunks = text.split(SEG_TOKEN)[:-1]
    return [(m.group(1) if (m := _PHRASE_BEFORE_SEG.search(c)) else None) for c in chunks]


def as_pil_image(image) -> Image.Image:
    """PIL image, path, or ``uint8 [H, W, 3]`` array -> RGB PIL image."""
    if isinstance(image, (str, os.PathLike)):
        if not os.path.isfile(image):
            raise FileNotFoundError(f"image not found: {image}")
        with Image.open(image) as im:
            return im.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"expected a uint8 [H, W(, 3)] array, got {image.dtype} {image.shape}")
        return Image.fromarray(image).convert("RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    raise TypeError(f"image must be a PIL image, a path or a uint8 array, got {type(image).__name__}")


@contextlib.contextmanager
def eval_mode(model):
    """Put ``model`` in eval mode and restore its previous mode afterwards (for evaluation during training)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class Sa2VAPredictor:
    """Runs a :class:`~sa2va.models.VideoLLaVASAMModel` on single images.

    Args:
        model: the model (a DDP / DeepSpeed wrapper is unwrapped).
        template: chat template name or dict, the one the model was trained with (``qwen_chat``, ...).
        max_new_tokens: longest answer.
        max_dynamic_patch, min_dynamic_patch, use_thumbnail: InternVL tiling, as in training.
        batch_size: prompts decoded together (same image); 1 disables batching.
        system: optional system text.
        logits_processor: optional ``f(input_ids, scores) -> scores`` applied at every decoding step.
        resize_backend: ``'pil'`` or ``'torch'``, the image resizes of tiles and SAM2 input, as in training
            (:class:`~sa2va.datasets.TileProcessor`).
    """

    def __init__(self, model, template="qwen_chat", max_new_tokens: int = 512, max_dynamic_patch: int = 12,
                 min_dynamic_patch: int = 1, use_thumbnail: bool = True, batch_size: int = 8, system: str = "",
                 logits_processor: Callable | None = None, resize_backend: str = "pil"):
        # DDP / DeepSpeed wrapper -> the model: sa2va.engine.unwrap_model's check, imported here because sa2va.engine
        # loads DeepSpeed and mmengine.model adds ~4 s to this module's import; a VideoLLaVASAMModel is an mmengine
        # BaseModel, so mmengine.model is loaded by the time a model reaches this line
        from mmengine.model import is_model_wrapper

        self.model = model.module if is_model_wrapper(model) else model
        self.tokenizer = self.model.tokenizer
        self.template = get_template(template, tokenizer=self.tokenizer)
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = max(1, int(batch_size))
        self.system = system
        self.logits_processor = logits_processor
        mllm = self.model.mllm
        # uint8 tiles: the model normalises them on its device (as in training with uint8_tiles)
        self.tile_processor = TileProcessor(mllm.tile_size, max_dynamic_patch, min_dynamic_patch, use_thumbnail,
                                            normalize=False, resize_backend=resize_backend)
        self.seg_token_id = self.model.seg_token_idx
        self.stop = StopCondition(self.tokenizer, self.template["STOP_WORDS"])
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.tokenizer.eos_token_id

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, export_dir: str | os.PathLike, device=None, dtype=None, **kwargs) -> "Sa2VAPredictor":
        """Load an exported model directory (:func:`sa2va.hf.load_pretrained_sa2va`); its saved template and
        tiling are used unless given in ``kwargs``."""
        from .loading import load_exported_model

        model, settings = load_exported_model(export_dir, device=device, dtype=dtype)
        return cls(model, **{**settings, **kwargs})

    @classmethod
    def from_config(cls, config_path, checkpoint: str | os.PathLike | None = None, device=None,
                    dtype=None, cfg_options: dict | None = None, **kwargs) -> "Sa2VAPredictor":
        """Build the model from a training config (path or Config) and load a training checkpoint (file or
        DeepSpeed directory); the template and tiling of the config's training data are used unless given in
        ``kwargs``."""
        from .loading import load_model_from_config

        model, settings = load_model_from_config(config_path, checkpoint, device=device, dtype=dtype,
                                                 cfg_options=cfg_options)
        return cls(model, **{**settings, **kwargs})

    @property
    def device(self) -> torch.device:
        return self.model.mllm.lm_head.weight.device

    # ------------------------------------------------------------------------------------------ prompts
    def prompt_ids(self, user_text: str) -> torch.Tensor:
        """Token ids of one user turn (image / region placeholders already in ``user_text``), encoded exactly as
        training encodes a prompt, ending where the answer would begin."""
        enc = encode_conversation([dict(input=user_text, output="")], self.tokenizer, self.template,
                                  max_length=1 << 30, system=self.system)
        supervised = torch.nonzero(enc["labels"] != IGNORE_INDEX).flatten()
        if supervised.numel() == 0:
            raise ValueError(f"template {self.template.get('NAME')!r} ends an answer with neither SUFFIX nor EOS: "
                             f"cannot tell where the prompt ends")
        return enc["input_ids"][: int(supervised[0])]

    def region_grids(self, masks) -> torch.Tensor:
        """Region masks ``[R, H, W]`` -> ``uint8 [R, g, g]`` on the thumbnail's token grid, as in training.

        A region too small to cover any sampled cell (training would drop it) falls back to every cell it
        touches, so each region gets at least one token; an all-empty mask is an error.
        """
        masks = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
        if masks.ndim == 2:
            masks = masks[None]
        masks = (masks != 0).to(torch.uint8)
        empty = [r for r in range(masks.shape[0]) if not bool(masks[r].any())]
        if empty:
            raise ValueError(f"region mask {empty[0]} is empty")
        grid = self.model.mllm.prompt_grid
        grids = to_prompt_grid(masks, grid)  # [R, g, g]
        for r in range(grids.shape[0]):
            if not bool(grids[r].any()):
                touched = F.adaptive_max_pool2d(masks[r][None, None].float(), grid)[0, 0]
                grids[r] = (touched > 0).to(torch.uint8)
                MMLogger.get_current_instance().warning(
                    f"region {r} is too small for the {grid}x{grid} prompt grid; using the {int(grids[r].sum())} "
                    f"cell(s) it touches")
        return grids

    def _user_text(self, text: str, num_tiles: int, grid: torch.Tensor | None) -> str:
        image_str = image_token_string(num_tiles, self.model.mllm.tokens_per_tile)
        header = region_token_string([int(grid.sum())]) if grid is not None else ""
        return image_str + "\n" + header + remove_image_placeholder(text)

    # ------------------------------------------------------------------------------------------ inference
    def predict(self, image, text: str) -> Prediction:
        """One question about one image -> :class:`Prediction` with a mask per generated ``[SEG]``."""
        return self.predict_many(image, [text])[0]

    @torch.inference_mode()
    def predict_many(self, image, texts: Sequence[str], region_masks=None) -> list[Prediction]:
        """Several questions about one image (tiles and SAM2 features computed once, prompts decoded in batches).

        Args:
            image: PIL image, path, or uint8 array.
            texts: questions; an ``<image>`` placeholder is optional (the image always comes first).
            region_masks: optional, one region mask ``[H, W]`` per text (a visual prompt, ``region1`` in the
                text), e.g. for region captioning.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings; use predict() for one text")
        image = as_pil_image(image)
        if region_masks is not None and len(region_masks) != len(texts):
            raise ValueError(f"{len(region_masks)} region masks for {len(texts)} texts")
        model = self.model
        with eval_mode(model):
            tiles = self.tile_processor(image).to(self.device)  # [T, 3, s, s] uint8
            grids = self.region_grids(torch.stack([torch.as_tensor(np.asarray(m)) for m in region_masks])) \
                if region_masks is not None else None
            prompts = [self.prompt_ids(self._user_text(t, tiles.shape[0], None if grids is None else grids[k]))
                       for k, t in enumerate(texts)]
            outputs = []
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start:start + self.batch_size]
                n = len(chunk)
                pm = None if grids is None else [g[None].to(self.device) for g in grids[start:start + n]]
                outputs.append(greedy_generate(
                    model.mllm, chunk, tiles.repeat(n, 1, 1, 1), [tiles.shape[0]] * n, pm, self.seg_token_id,
                    self.stop, self.max_new_tokens, self.pad_token_id, self.logits_processor))
            token_ids = [ids for o in outputs for ids in o.token_ids]
            seg_hidden = [h for o in outputs for h in o.seg_hidden]
            stopped = [s for o in outputs for s in o.stopped]
            masks = self.masks_from_hidden(image, seg_hidden)
        results = []
        for ids, m, s in zip(token_ids, masks, stopped):
            text = self.tokenizer.decode(ids, skip_special_tokens=False)
            results.append(Prediction(text=text, token_ids=ids, masks=m, phrases=seg_phrases(text), stopped=s))
        return results

    @torch.inference_mode()
    def masks_from_hidden(self, image: Image.Image, seg_hidden: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``[SEG]`` hidden states (per prompt ``[n_i, D]``) of one image -> per prompt ``bool [n_i, H, W]``."""
        width, height = image.size
        counts = [h.shape[0] for h in seg_hidden]
        if sum(counts) == 0:
            return [torch.zeros(0, height, width, dtype=torch.bool) for _ in counts]
        model = self.model
        runner = model.grounding_encoder
        g = sam2_image_tensor(image, runner.image_size, self.tile_processor.resize_backend)[None].to(self.device)
        features = runner.encode_images(g)
        fcs_dtype = model.text_hidden_fcs[0].weight.dtype  # may differ from the LLM's (bf16 LLM, fp32 head)
        prompts = model.text_hidden_fcs(torch.cat(list(seg_hidden)).to(fcs_dtype))  # [N, C]
        index = torch.zeros(prompts.shape[0], dtype=torch.long, device=self.device)
        logits = runner.decode(features, prompts, index)["masks"]  # [N, h, w] fp32
        full = F.interpolate(logits[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
        masks = (full > 0).cpu()  # [N, H, W]
        return list(masks.split(counts))

    def caption(self, image, masks, question: str | None = None) -> list[str]:
        """A short description of each region.

        Args:
            image: PIL image, path, or uint8 array.
            masks: region masks ``[R, H, W]`` (or a list of ``[H, W]``) at the image's size.
            question: the question asked about ``region1``; default: the RefCOCOg region-caption prompt
                ``"Please give me a short description of the region in the picture marked by region1."``.

        Each region is asked about separately, as the only region of its prompt (``region1``), so its caption does
        not depend on which other regions are passed. Returns one caption per region (special tokens removed).
        """
        image = as_pil_image(image)
        masks = [torch.as_tensor(np.asarray(m)) if not isinstance(m, torch.Tensor) else m for m in masks]
        for r, m in enumerate(masks):
            if tuple(m.shape) != (image.size[1], image.size[0]):
                raise ValueError(f"region mask {r} is {tuple(m.shape)} but the image is "
                                 f"{image.size[1]}x{image.size[0]} (H x W)")
        question = question if question is not None else REGION_CAPTION_QUESTION.format(index=1)
        preds = self.predict_many(image, [question] * len(masks), region_masks=masks)
        return [self.tokenizer.decode(p.token_ids, skip_special_tokens=True).strip() for p in preds]
