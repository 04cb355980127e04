"""VideoLLaVASAMModel: InternVL + SAM2 joined by the ``[SEG]`` token, trained with LM + mask losses.

One forward pass (``mode='loss'``) returns ``{'llm_loss', 'loss_mask', 'loss_dice'}`` (mmengine sums every key
containing "loss"):
1. the MLLM embeds tokens, scatters image (and region) features, runs the LLM -> final-layer hidden states [B,L,D]
   and the next-token loss;
2. hidden states at each ``[SEG]`` *input* position (no shift) -> ``text_hidden_fcs`` -> SAM2 prompt [N,C];
3. SAM2 encodes each image once; its features are repeated per object; the decoder predicts low-res logits [N,h,w];
4. GT masks are resized (nearest) to [N,h,w]; sigmoid-CE and Dice on uncertainty-sampled points (or full maps).
Batches without masks give exact-zero mask losses while still touching every trainable parameter, without running
the SAM2 image encoder.
"""
from __future__ import annotations

import itertools
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MMLogger
from mmengine.model import BaseModel

from ..registry import BUILDER
from ..tokenizer import SEG_TOKEN
from .point_sampling import point_sample, uncertain_point_coords_with_randomness


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` unchanged, with the gradient that flows back through it multiplied by ``scale`` (0: detached)."""
    if scale == 1.0:
        return x
    if scale == 0.0:
        return x.detach()
    return _ScaleGrad.apply(x, float(scale))


def _build(cfg_or_module):
    return BUILDER.build(cfg_or_module) if isinstance(cfg_or_module, dict) else cfg_or_module


class VideoLLaVASAMModel(BaseModel):
    """Sa2VA training model.

    Args:
        mllm: :class:`InternVLMLLM` (or its config dict); it owns the tokenizer.
        grounding_encoder: :class:`SAM2TrainRunner` (or its config dict).
        loss_mask: ``CrossEntropyLoss(use_sigmoid=True, loss_weight=2.0)`` config.
        loss_dice: ``DiceLoss(naive_dice=True, eps=1.0, loss_weight=0.5)`` config.
        pretrained_pth: a checkpoint of this model's trainable weights (``{'state_dict': ...}`` or a bare dict),
            loaded after building.
        loss_sample_points: compute mask losses on ``num_points`` uncertainty-sampled points (else full maps).
        num_objects_per_frame: if set, every frame is trimmed/repeated to exactly this many (prompt, mask) pairs
            (the original's fixed 5); ``None`` uses all objects as given.
        skip_seg_mask_mismatch: a sample whose ``[SEG]`` count differs from its mask count raises by default;
            with this flag its masks are skipped and counted in ``self.num_skipped_mismatch`` with a warning.
        frozen_sam2_decoder: also freeze SAM2's mask decoder.
        uniform_module_calls: every step calls every module on every rank (the SAM2 image encoder on one black
            image when a batch has no masks, the vision tower on one black tile when it has no image), as DeepSpeed
            ZeRO-3 requires; ``tools/train.py --deepspeed zero3`` turns it on.
        prompt_init_gain: multiply the initial weights of ``text_hidden_fcs``' last layer. With PyTorch's default
            init the prompts start with a norm of ~2, against ~8 for SAM2's own decoder tokens (N(0, 1)
            embeddings); a *randomly initialised* mask decoder then barely reacts to them (measured on the tiny
            learning-proof model: 5 % of the mask logits' spread depends on the prompt at gain 1, 25 % at 4,
            60 % at 16). 1.0 (the original) for pretrained SAM2 weights.
        seg_grad_to_llm: multiply the gradient that the mask losses send into the LLM through the ``[SEG]``
            hidden states (``text_hidden_fcs`` and SAM2 get theirs unscaled; the LM loss is untouched). 1.0 is
            the original; 0.0 reads the states detached, so ``text_hidden_fcs`` and SAM2 learn on the LLM's
            states as they are. An attribute, so a hook can change it during training
            (:class:`~sa2va.engine.SegGradToLLMHook`).
    """

    def __init__(self, mllm, grounding_encoder, loss_mask=None, loss_dice=None, pretrained_pth=None,
                 loss_sample_points: bool = True, num_points: int = 12544, oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75, num_objects_per_frame: int | None = None,
                 skip_seg_mask_mismatch: bool = False, frozen_sam2_decoder: bool = False,
                 uniform_module_calls: bool = False, prompt_init_gain: float = 1.0, seg_grad_to_llm: float = 1.0,
                 data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.mllm = _build(mllm)
        self.grounding_encoder = _build(grounding_encoder)
        if frozen_sam2_decoder:
            self.grounding_encoder.sam2_model.sam_mask_decoder.requires_grad_(False)
        self.tokenizer = self.mllm.tokenizer
        self.seg_token_idx = self.tokenizer.convert_tokens_to_ids(SEG_TOKEN)
        if self.seg_token_idx is None or self.seg_token_idx == self.tokenizer.unk_token_id:
            raise ValueError(f"'{SEG_TOKEN}' is not in the tokenizer: add it to mllm.special_tokens")

        d_llm, d_sam = self.mllm.hidden_size, self.grounding_encoder.hidden_dim
        self.text_hidden_fcs = nn.Sequential(
            nn.Linear(d_llm, d_llm), nn.ReLU(inplace=True), nn.Linear(d_llm, d_sam), nn.Dropout(0.0))
        if prompt_init_gain != 1.0:  # larger initial prompts: see the class docstring
            with torch.no_grad():
                self.text_hidden_fcs[2].weight.mul_(prompt_init_gain)
                self.text_hidden_fcs[2].bias.mul_(prompt_init_gain)
        self.loss_mask = _build(loss_mask) if loss_mask is not None else None
        self.loss_dice = _build(loss_dice) if loss_dice is not None else None
        self.loss_sample_points = loss_sample_points
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.num_objects_per_frame = num_objects_per_frame
        self.skip_seg_mask_mismatch = skip_seg_mask_mismatch
        self.num_skipped_mismatch = 0
        self.uniform_module_calls = uniform_module_calls
        if seg_grad_to_llm < 0:
            raise ValueError(f"seg_grad_to_llm must be >= 0 (0: no mask gradient into the LLM), got {seg_grad_to_llm}")
        self.seg_grad_to_llm = seg_grad_to_llm
        self.mllm.uniform_module_calls = uniform_module_calls
        if pretrained_pth is not None:
            self.load_pretrained(pretrained_pth)

    # -- checkpoints: trainable weights only ----------------------------------------------------------------
    def trainable_keys(self, prefix: str = "") -> set[str]:
        return {prefix + n for n, p in self.named_parameters() if p.requires_grad}

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        """Only trainable weights (LoRA, new-token rows, projector, SAM2 decoder, text_hidden_fcs)."""
        if args:  # legacy positional form (destination, prefix, keep_vars)
            destination, prefix, keep_vars = (list(args) + [destination, prefix, keep_vars][len(args):])[:3]
        sd = super().state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        keep = self.trainable_keys(prefix)
        for k in [k for k in sd if k.startswith(prefix) and k not in keep]:
            del sd[k]
        return sd

    def full_state_dict(self) -> dict:
        """Every weight (frozen included), for export."""
        return super().state_dict()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load a trainable-weights dict. ``strict`` checks that no key is unknown and no trainable weight is
        missing (frozen weights come from the pretrained checkpoints)."""
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        if strict:
            missing = sorted(set(result.missing_keys) & self.trainable_keys())
            if missing or result.unexpected_keys:
                raise RuntimeError(f"checkpoint does not match the model: missing trainable {missing[:10]}"
                                   f"{' ...' if len(missing) > 10 else ''}, unexpected "
                                   f"{sorted(result.unexpected_keys)[:10]}")
        return result

    def load_pretrained(self, path: str | os.PathLike) -> None:
        """A trainable-weights checkpoint file, or a released Sa2VA HF directory (``Sa2VAChatModel`` layout)."""
        if os.path.isdir(path):
            from ..hf import load_sa2va_hf

            load_sa2va_hf(self, path)
            return
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        result = self.load_state_dict(state, strict=False)
        n_loaded = len(state) - len(result.unexpected_keys)
        if n_loaded == 0:
            raise RuntimeError(f"pretrained_pth {path}: none of its {len(state)} keys match this model "
                               f"(first: {list(state)[:3]})")
        MMLogger.get_current_instance().info(
            f"loaded {n_loaded} tensors from pretrained_pth {path}; "
            f"{len(result.unexpected_keys)} unexpected keys ignored")

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, dtype=None) -> "VideoLLaVASAMModel":
        """Load a directory exported by ``tools/convert_to_hf.py`` (see :func:`sa2va.hf.load_pretrained_sa2va`)."""
        from ..hf import load_pretrained_sa2va

        return load_pretrained_sa2va(model_dir, dtype=dtype)

    # -- forward ----------------------------------------------------------------------------------------------
    def forward(self, data: dict, data_samples=None, mode: str = "loss"):
        if mode == "loss":
            return self.compute_loss(data)
        if mode in ("tensor", "predict"):
            return self.predict_masks(data)
        raise ValueError(f"unknown mode '{mode}'")

    def _seg_embeddings(self, data, hidden):
        """Prompts for SAM2 and the per-object bookkeeping, for the whole batch at once.

        Returns (prompts [N,C], image_index [N] into frames, gt [N,h,w] 0/1 float at the mask decoder's
        resolution, frames [F,3,S,S]) or None when the batch has nothing to segment. The loop over samples only
        checks and collects indices on the host; each tensor is then gathered with one op
        (``benchmarks/step_ops.py``). A sample with no object (0 masks, 0 [SEG]) contributes no frame.
        """
        input_ids = data["input_ids"]
        masks = data.get("masks") or [None] * input_ids.shape[0]
        g_pixels = data.get("g_pixel_values") or [None] * input_ids.shape[0]
        is_seg = input_ids == self.seg_token_idx  # [B,L]
        seg_counts = is_seg.sum(1).tolist()
        seg_start = [0, *itertools.accumulate(seg_counts)]  # row of each sample's first [SEG] in hidden[is_seg]
        prompt_rows, image_index, frames, gt_parts = [], [], [], []  # gt_parts: (mask stack, its rows to use)
        for i, (m, g, n_seg) in enumerate(zip(masks, g_pixels, seg_counts)):
            if m is None or g is None:
                if n_seg and m is None and g is not None:
                    raise ValueError(f"batch index {i}: {n_seg} [SEG] tokens but no masks")
                continue
            n_frames = g.shape[0] if g.dim() == 4 else 1
            if m.shape[0] % n_frames:
                raise ValueError(f"batch index {i}: {m.shape[0]} masks is not a multiple of {n_frames} frames")
            n_obj = m.shape[0] // n_frames
            if n_obj != n_seg:
                msg = (f"batch index {i}: {n_seg} [SEG] tokens but {n_obj} masks per frame; [SEG] i must pair "
                       f"with mask i (was the text truncated?)")
                if not self.skip_seg_mask_mismatch:
                    raise ValueError(msg)
                self.num_skipped_mismatch += 1
                MMLogger.get_current_instance().warning(msg + f" -> skipped ({self.num_skipped_mismatch} so far)")
                continue
            if n_obj == 0:
                continue
            rows = []
            for f in range(n_frames):  # masks are object-major: object o of frame f is row o * n_frames + f
                objects = self._object_choice(n_obj) if self.num_objects_per_frame else range(n_obj)
                prompt_rows += [seg_start[i] + o for o in objects]
                rows += [o * n_frames + f for o in objects]
                image_index += [len(frames)] * len(objects)
                frames.append(g if g.dim() == 3 else g[f])
            gt_parts.append((m, rows))
        if not prompt_rows:
            return None
        device = hidden.device
        prompts = self.text_hidden_fcs(scale_grad(hidden[is_seg], self.seg_grad_to_llm))  # [n_seg,C], row-major
        if prompt_rows != list(range(prompts.shape[0])):  # skipped samples, or a fixed object number
            prompts = prompts.index_select(0, torch.tensor(prompt_rows, device=device))
        side = self.grounding_encoder.image_size // 4  # the mask decoder's low-res logits
        gt = self._gather_masks(gt_parts, (side, side))
        return prompts, torch.tensor(image_index, device=device), gt, torch.stack(frames)

    @staticmethod
    def _gather_masks(parts, size) -> torch.Tensor:
        """(mask stack [M_i,H_i,W_i], rows) per sample -> the rows in order, resized (nearest) to ``size``:
        [N,h,w] float. One resize per distinct mask size."""
        by_shape: dict[tuple, list[int]] = {}
        for k, (m, _) in enumerate(parts):
            by_shape.setdefault(tuple(m.shape[-2:]), []).append(k)
        start = [0, *itertools.accumulate(len(rows) for _, rows in parts)]  # output row of each part's first mask
        resized, order = [], []
        for ks in by_shape.values():
            stack = torch.cat([parts[k][0] for k in ks]) if len(ks) > 1 else parts[ks[0]][0]
            offset = [0, *itertools.accumulate(parts[k][0].shape[0] for k in ks)]
            rows = [offset[j] + r for j, k in enumerate(ks) for r in parts[k][1]]
            if rows != list(range(stack.shape[0])):
                stack = stack.index_select(0, torch.tensor(rows, device=stack.device))
            resized.append(F.interpolate(stack[:, None].float(), size=size, mode="nearest")[:, 0])
            order += [start[k] + r for k in ks for r in range(len(parts[k][1]))]
        gt = torch.cat(resized) if len(resized) > 1 else resized[0]
        if order != sorted(order):  # back to sample order
            gt = gt.index_select(0, torch.tensor(order, device=gt.device).argsort())
        return gt

    def _object_choice(self, n_obj: int) -> list[int]:
        """Exactly ``num_objects_per_frame`` of a frame's objects: a random subset if more, repeated if fewer."""
        k = self.num_objects_per_frame
        if n_obj > k:
            return torch.randperm(n_obj)[:k].tolist()
        return [j % n_obj for j in range(k)]

    def compute_loss(self, data: dict) -> dict:
        out = self.mllm(**{k: data.get(k) for k in ("input_ids", "attention_mask", "position_ids", "pixel_values",
                                                   "num_tiles", "prompt_masks", "labels")})
        hidden = out["hidden_states"]
        seg = self._seg_embeddings(data, hidden)
        if seg is None:
            zero = self._zero_mask_term(hidden)
            return {"llm_loss": out["loss"], "loss_mask": zero, "loss_dice": zero.clone()}
        prompts, image_index, gt, frames = seg
        sam_out = self.grounding_encoder(frames, prompts, image_index)
        pred = sam_out["masks"]  # [N,h,w] logits
        if pred.shape != gt.shape:
            raise RuntimeError(f"SAM2 decoded masks {tuple(pred.shape)} but the targets are {tuple(gt.shape)}")
        loss_mask, loss_dice = self.mask_losses(pred, gt)
        return {"llm_loss": out["loss"], "loss_mask": loss_mask + sam_out["aux"], "loss_dice": loss_dice}

    def mask_losses(self, pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pred logits [N,h,w], gt 0/1 [N,h,w] -> (sigmoid-CE, Dice) with the original's avg factors."""
        n = pred.shape[0]
        pred = pred.float()
        if self.loss_sample_points:
            with torch.no_grad():
                coords = uncertain_point_coords_with_randomness(
                    pred[:, None], self.num_points, self.oversample_ratio, self.importance_sample_ratio)
                gt_pts = point_sample(gt[:, None].float(), coords)[:, 0]  # [N,P] soft targets
            pred_pts = point_sample(pred[:, None], coords)[:, 0]  # [N,P]
            loss_dice = self.loss_dice(pred_pts, gt_pts, avg_factor=n + 1e-4)
            loss_mask = self.loss_mask(pred_pts.reshape(-1), gt_pts.reshape(-1),
                                       avg_factor=pred_pts.numel() + 1e-4)
        else:
            loss_dice = self.loss_dice(pred.flatten(1), gt.flatten(1))
            loss_mask = self.loss_mask(pred.flatten(), gt.flatten())
        return loss_mask, loss_dice

    def _zero_mask_term(self, hidden: torch.Tensor) -> torch.Tensor:
        """Exact 0.0 that still routes a (zero) gradient to text_hidden_fcs and the SAM2 decoder, so DDP and
        ZeRO never wait for gradients that a mask-free batch did not produce. No image encoder run."""
        runner = self.grounding_encoder
        prompt = self.text_hidden_fcs(hidden[:1, 0])  # [1,C]
        if self.uniform_module_calls:  # ZeRO-3 gathers parameters collectively: every rank runs the encoder
            side = runner.image_size
            features = runner.encode_images(torch.zeros(1, 3, side, side, device=hidden.device))
        else:
            features = runner.zero_features(batch=1, device=hidden.device)
        out = runner.decode(features, prompt, torch.zeros(1, dtype=torch.long, device=hidden.device))
        return out["masks"].sum() * 0.0 + out["aux"]

    @torch.no_grad()
    def predict_masks(self, data: dict) -> dict:
        """Teacher-forced prediction: one low-res mask logit map per ``[SEG]`` of every sample that has a SAM2
        image. Returns ``{'hidden_states', 'pred_masks': list per sample of [n_seg,h,w] or None}``."""
        out = self.mllm(**{k: data.get(k) for k in ("input_ids", "attention_mask", "position_ids", "pixel_values",
                                                   "num_tiles", "prompt_masks")})
        hidden, input_ids = out["hidden_states"], data["input_ids"]
        g_pixels = data.get("g_pixel_values") or [None] * input_ids.shape[0]
        preds = []
        for i, g in enumerate(g_pixels):
            is_seg = input_ids[i] == self.seg_token_idx
            if g is None or not bool(is_seg.any()):
                preds.append(None)
                continue
            prompts = self.text_hidden_fcs(hidden[i][is_seg])  # [n,C]
            index = torch.zeros(prompts.shape[0], dtype=torch.long, device=prompts.device)
            preds.append(self.grounding_encoder(g[None] if g.dim() == 3 else g[:1], prompts, index)["masks"])
        return {"hidden_states": hidden, "pred_masks": preds}
