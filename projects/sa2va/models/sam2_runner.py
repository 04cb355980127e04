"""SAM2 grounding encoder: Meta's ``sam2`` modules driven by a language embedding per object.

Sa2VA prompts SAM2's mask decoder with the projected hidden state of a ``[SEG]`` token: the embedding is appended
to the sparse prompt tokens after the two "not-a-point" padding tokens that SAM2's prompt encoder produces when no
point or box is given. Training uses single frames (no memory attention): image encoder -> high-res features
(``conv_s0``/``conv_s1``) -> low-res feature + ``no_mem_embed`` -> mask decoder with 3 multimask outputs -> the
mask with the best predicted IoU (or, with ``multimask_output=False``, the single-mask output), as low-resolution
logits (``image_size / 4``: 256x256 at 1024).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
from mmengine.logging import MMLogger

# ImageNet statistics, used by SAM2's own preprocessing.
SAM2_PIXEL_MEAN = (0.485, 0.456, 0.406)
SAM2_PIXEL_STD = (0.229, 0.224, 0.225)


def resolve_sam2_config(cfg_path: str) -> Path:
    """Find a SAM2 YAML: an existing file, or a Meta config name such as ``sam2_hiera_l.yaml``,
    ``sam2.1_hiera_l.yaml``, ``configs/sam2.1/sam2.1_hiera_l.yaml`` inside the installed ``sam2`` package."""
    p = Path(cfg_path)
    if p.is_file():
        return p
    import sam2

    root = Path(sam2.__file__).parent
    name = p.name if p.suffix else p.name + ".yaml"
    candidates = [root / cfg_path, root / "configs" / cfg_path]
    candidates += sorted((root / "configs").rglob(name))
    for c in candidates:
        if c.is_file():
            return c
    known = sorted(str(c.relative_to(root / "configs")) for c in (root / "configs").rglob("*.yaml"))
    raise FileNotFoundError(f"SAM2 config '{cfg_path}' is neither a file nor a Meta sam2 config; known: {known}")


def instantiate_sam2(cfg_path: str, overrides: list[str] | None = None, image_size: int | None = None) -> nn.Module:
    """Build an (untrained) ``SAM2Base`` from a Meta-style YAML with optional dotlist overrides."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(resolve_sam2_config(cfg_path))
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    if image_size is not None:
        cfg.model.image_size = image_size
        # RoPE attention in the memory modules precomputes its table for the embedding size
        side = image_size // 16
        for key in ("self_attention", "cross_attention"):
            if "feat_sizes" in cfg.model.memory_attention.layer[key]:
                cfg.model.memory_attention.layer[key].feat_sizes = [side, side]
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)


def load_meta_sam2_checkpoint(model: nn.Module, ckpt_path: str | os.PathLike, cfg_name: str = "") -> None:
    """Load a Meta-format checkpoint (``{'model': state_dict}``; or a ``.safetensors`` file of that state dict, as
    in exported directories) strictly, with a readable diff on failure."""
    if str(ckpt_path).endswith(".safetensors"):
        from safetensors.torch import load_file

        ckpt = {"model": load_file(str(ckpt_path))}
    else:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{ckpt_path}: expected a Meta SAM2 checkpoint {{'model': state_dict}}, "
                         f"got keys {list(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt)}")
    state = ckpt["model"]
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        def _fmt(keys, what):
            shown = "\n    ".join(keys[:10]) + (f"\n    ... and {len(keys) - 10} more" if len(keys) > 10 else "")
            return f"  {what} ({len(keys)}):\n    {shown}\n" if keys else ""
        shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched]
        raise RuntimeError(
            f"SAM2 checkpoint {ckpt_path} does not match config '{cfg_name}':\n"
            + _fmt(missing, "missing in checkpoint") + _fmt(unexpected, "unexpected in checkpoint")
            + _fmt(shapes, "shape mismatch")
            + "  (SAM 2.0 checkpoints need sam2_hiera_*.yaml, SAM 2.1 ones sam2.1_hiera_*.yaml)"
        )
    model.load_state_dict(state, strict=True)


class SAM2TrainRunner(nn.Module):
    """SAM2 prompted by language embeddings, for training and single-image inference.

    Args:
        cfg_path: Meta config name (``sam2_hiera_l.yaml``, ``sam2.1_hiera_l.yaml``, ...) or a YAML file.
        ckpt_path: Meta checkpoint (``sam2_hiera_large.pt``); ``None`` keeps random weights (benchmarks).
        hydra_overrides: dotlist overrides applied to the YAML (``model.image_size=512``, ...).
        image_size: input side length; overrides the config's ``image_size``.
        freeze_mask_decoder: keep the mask decoder frozen too (the original trains it).
        freeze_image_encoder: keep the Hiera image encoder frozen (the original does); ``False`` trains it too,
            e.g. a model trained from random init.
        multimask_output: decode SAM2's 3 candidate masks and keep the one its IoU head rates best (the original).
            The IoU head gets no loss, so that choice is only meaningful with pretrained SAM2 weights; ``False``
            always uses the single-mask token, a fixed choice for a decoder trained from random init.
    """

    def __init__(self, cfg_path: str = "sam2_hiera_l.yaml", ckpt_path: str | None = None,
                 hydra_overrides: list[str] | None = None, image_size: int | None = None,
                 freeze_mask_decoder: bool = False, freeze_image_encoder: bool = True,
                 multimask_output: bool = True):
        super().__init__()
        self.multimask_output = multimask_output
        self.sam2_model = instantiate_sam2(cfg_path, hydra_overrides, image_size)
        if ckpt_path is not None:
            load_meta_sam2_checkpoint(self.sam2_model, ckpt_path, cfg_path)
        else:
            MMLogger.get_current_instance().warning(f"SAM2 ({cfg_path}) built without a checkpoint: random weights")
        self.sam2_model.requires_grad_(False)
        if not freeze_mask_decoder:
            self.sam2_model.sam_mask_decoder.requires_grad_(True)
        if not freeze_image_encoder:
            self.sam2_model.image_encoder.requires_grad_(True)
            self.sam2_model.no_mem_embed.requires_grad_(True)
        self.freeze_image_encoder = freeze_image_encoder
        self.register_buffer("pixel_mean", torch.tensor(SAM2_PIXEL_MEAN).view(3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(SAM2_PIXEL_STD).view(3, 1, 1) * 255, persistent=False)

    @property
    def image_size(self) -> int:
        return self.sam2_model.image_size

    @property
    def hidden_dim(self) -> int:
        return self.sam2_model.hidden_dim

    def preprocess_image(self, images: torch.Tensor) -> torch.Tensor:
        """uint8/float [B,3,S,S] in 0..255 -> normalised float32 (no padding: inputs are square-resized)."""
        return (images.float() - self.pixel_mean.float()) / self.pixel_std.float()

    def encode_images(self, images: torch.Tensor) -> dict:
        """Run the image encoder once per image (under ``no_grad`` when frozen). images: [F,3,S,S] 0..255.

        Returns ``{'low_res': [F,C,S/16,S/16], 'high_res': [[F,C/8,S/4,S/4], [F,C/4,S/8,S/8]]}``; the
        high-res projections (``conv_s0``/``conv_s1``) belong to the mask decoder and keep their gradients.
        """
        sam = self.sam2_model
        encoder_dtype = next(sam.image_encoder.parameters()).dtype  # bf16 under DeepSpeed, else as loaded
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_image_encoder):
            backbone_out = sam.image_encoder(self.preprocess_image(images).to(encoder_dtype))
        fpn = backbone_out["backbone_fpn"]  # 3 levels: S/4, S/8, S/16
        dtype = sam.sam_mask_decoder.conv_s0.weight.dtype
        high_res = [sam.sam_mask_decoder.conv_s0(fpn[0].to(dtype)), sam.sam_mask_decoder.conv_s1(fpn[1].to(dtype))]
        low_res = fpn[-1] + sam.no_mem_embed.view(1, -1, 1, 1)  # "directly add no-memory embedding" path
        return {"low_res": low_res, "high_res": high_res}

    def zero_features(self, batch: int, device) -> dict:
        """Features of the shapes :meth:`encode_images` returns, all zero, without running the image encoder.
        The high-res projections still run (on a 1x1 zero map, broadcast) so they stay in the autograd graph."""
        sam = self.sam2_model
        side = sam.sam_image_embedding_size  # S/16
        dec = sam.sam_mask_decoder
        c = dec.conv_s0.in_channels
        dtype = dec.conv_s0.weight.dtype
        zero = torch.zeros(batch, c, 1, 1, device=device, dtype=dtype)
        high_res = [dec.conv_s0(zero).expand(-1, -1, 4 * side, 4 * side),
                    dec.conv_s1(zero).expand(-1, -1, 2 * side, 2 * side)]
        low_res = torch.zeros(batch, sam.hidden_dim, side, side, device=device, dtype=dtype)
        return {"low_res": low_res + sam.no_mem_embed.view(1, -1, 1, 1).to(dtype), "high_res": high_res}

    def decode(self, features: dict, language_embeds: torch.Tensor, image_index: torch.Tensor) -> dict:
        """Decode one mask per language embedding.

        Args:
            features: output of :meth:`encode_images` for F images.
            language_embeds: [N, C] one prompt per object.
            image_index: [N] long, which of the F images each object belongs to (features are repeated per
                object only here, after the encoder).
        Returns ``{'masks': [N,S/4,S/4] fp32 logits of the best-IoU candidate (or the single-mask output),
        'ious': [N,K] predicted IoUs, 'aux': scalar 0 that touches the IoU and object-score heads (so every trainable
        parameter receives a gradient)}``.
        """
        sam = self.sam2_model
        n = language_embeds.shape[0]
        image_embeds = features["low_res"].index_select(0, image_index)
        high_res = [f.index_select(0, image_index) for f in features["high_res"]]
        device = language_embeds.device
        dtype = sam.sam_mask_decoder.conv_s0.weight.dtype
        # SAM2's prompt encoder builds float32 padding points; with half-precision weights (DeepSpeed casts the
        # module) it runs under autocast, as Sa2VA ran SAM2
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            coords = torch.zeros(n, 1, 2, device=device)
            labels = -torch.ones(n, 1, dtype=torch.int32, device=device)
            sparse, dense = sam.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)  # [N,2,C]
            sparse = torch.cat([sparse, language_embeds[:, None].to(sparse.dtype)], dim=1)  # [N,3,C]
            low_res_multimasks, ious, _, object_score_logits = sam.sam_mask_decoder(
                image_embeddings=image_embeds.to(dtype),
                image_pe=sam.sam_prompt_encoder.get_dense_pe().to(dtype),
                sparse_prompt_embeddings=sparse.to(dtype),
                dense_prompt_embeddings=dense.to(dtype),
                multimask_output=self.multimask_output,
                repeat_image=False,
                high_res_features=[f.to(dtype) for f in high_res],
            )  # [N,K,S/4,S/4], [N,K], [N,1] with K = 3 candidates, or 1 without multimask_output
        best = ious.argmax(dim=-1)
        masks = low_res_multimasks[torch.arange(n, device=device), best].float()
        aux = (ious.sum() + object_score_logits.sum()).float() * 0.0
        return {"masks": masks, "ious": ious, "aux": aux}

    def forward(self, images: torch.Tensor, language_embeds: torch.Tensor, image_index: torch.Tensor) -> dict:
        return self.decode(self.encode_images(images), language_embeds, image_index)
