"""Tiny random models of the real architectures, written in the real on-disk formats.

* ``make_tiny_internvl(dir)``: a native transformers InternVL directory (``config.json`` + safetensors +
  ``tokenizer.json``) whose tokenizer is a byte-level BPE trained offline on a small corpus and carries
  InternVL's image tokens (``<img>``, ``</img>``, ``<IMG_CONTEXT>``), Qwen's chat tokens and a chat template.
* ``make_tiny_sam2(dir)``: a shrunk Hiera SAM2 built from Meta's ``sam2`` modules, saved as
  ``{'model': state_dict}`` exactly like ``sam2_hiera_large.pt``, plus the YAML config it was built from.

Both load through the same code paths as real checkpoints (``InternVLForConditionalGeneration.from_pretrained``
and :class:`sa2va.models.SAM2TrainRunner`). Everything is deterministic given ``seed``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

# Tokens InternVL tokenizers carry (InternVL2.5 / -hf checkpoints) and Qwen2 chat tokens.
IMG_START_TOKEN = "<img>"
IMG_END_TOKEN = "</img>"
IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"
QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# A Qwen2-style chat template (the format InternVL -hf tokenizers ship).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "gray", "pink", "brown"]
_SHAPES = ["circle", "square", "triangle", "rectangle", "ellipse", "star", "object", "shape", "region"]
_PLACES = ["left", "right", "top", "bottom", "middle", "center", "upper", "lower", "corner", "front", "back"]
_FILLER = (
    "can you segment the in this image please what is respond with segmentation mask output could provide a for "
    "identify and where picture highlight it sure result there are part regions region describe give me short "
    "description of marked by detail detailed about area photo labeled tell indicated shown outlined account "
    "interested learning more like comprehensive analysis thorough elaborate zone emphasized insights denoted "
    "rundown presented important details examine closely share its illustrate represented through explanation "
    "answer question using single word phrase system user assistant you are helpful a an is on at of to and or "
    "big small large tiny one two three first second next beside near above below between"
)


def _tokenizer_corpus() -> list[str]:
    lines = [_FILLER, _FILLER.capitalize() + "."]
    for c in _COLOURS:
        for s in _SHAPES:
            for p in _PLACES:
                lines.append(f"the {c} {s} on the {p}. Please segment the {c} {s} in this image? It is a {c} {s}.")
    lines += ["Sure, it is [SEG].", "0 1 2 3 4 5 6 7 8 9 , . ? ! : ; ' \" ( ) - _ / \n"]
    return lines


def make_tiny_tokenizer(vocab_size: int = 600):
    """Train a byte-level BPE tokenizer offline and wrap it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = QWEN_SPECIAL_TOKENS + [IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "right"
    return fast


def tiny_internvl_config(vocab_size: int, image_token_id: int, eos_token_id: int, pad_token_id: int,
                         image_size: int = 112, vision_hidden: int = 32, vision_layers: int = 2,
                         vision_heads: int = 2, text_hidden: int = 64, text_layers: int = 2, text_heads: int = 4,
                         text_kv_heads: int = 2, text_init_range: float = 0.15, tie_word_embeddings: bool = False):
    """An InternVL config of the real architecture, shrunk. Default: 112-px tiles, patch 14 -> 16 tokens per tile,
    a 2-layer ViT of width 32 and a 2-layer Qwen2 of width 64; the sizes are arguments (the learning-proof model
    is larger). ``tie_word_embeddings``: lm_head shares the input embedding (as the Qwen2.5-0.5B / -3B releases
    do; the InternVL and Sa2VA checkpoints built on them store a head of their own)."""
    from transformers import InternVLConfig, InternVLVisionConfig, Qwen2Config

    vision = InternVLVisionConfig(
        hidden_size=vision_hidden, num_hidden_layers=vision_layers, num_attention_heads=vision_heads,
        intermediate_size=2 * vision_hidden,
        image_size=[image_size, image_size], patch_size=[14, 14], norm_type="layer_norm",
        layer_scale_init_value=0.1, use_qk_norm=False, use_mean_pooling=False,
    )
    text = Qwen2Config(
        hidden_size=text_hidden, intermediate_size=2 * text_hidden, num_hidden_layers=text_layers,
        num_attention_heads=text_heads, num_key_value_heads=text_kv_heads,
        vocab_size=vocab_size, max_position_embeddings=4096, tie_word_embeddings=tie_word_embeddings,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id, bos_token_id=None,
        # a random head with the usual 0.02 init bounds the logits (|h| is fixed by the final RMSNorm), so a
        # frozen-head LoRA model could not fit anything; a wider init lets the tiny model learn like a real one
        # (a fully trained model takes the usual 0.02)
        initializer_range=text_init_range,
    )
    tokens_per_tile = int((image_size // 14) ** 2 * 0.25)
    return InternVLConfig(
        vision_config=vision, text_config=text, image_token_id=image_token_id, image_seq_length=tokens_per_tile,
        downsample_ratio=0.5, projector_hidden_act="gelu", vision_feature_layer=-1,
        vision_feature_select_strategy="default", tie_word_embeddings=tie_word_embeddings,
    )


def sincos_position_grid(grid: int, dim: int) -> torch.Tensor:
    """2-D sine-cosine position codes, ``[grid * grid, dim]`` in raster order: the first half of the channels
    codes the column, the second half the row (``dim / 4`` frequencies each, sine and cosine)."""
    if dim % 4:
        raise ValueError(f"sine-cosine positions need a width divisible by 4, got {dim}")
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # [dim/4]
    coords = torch.arange(grid, dtype=torch.float64)
    angles = coords[:, None] * freqs[None]                                                # [grid, dim/4]
    axis = torch.cat([angles.sin(), angles.cos()], 1)                                     # [grid, dim/2]
    rows, cols = torch.meshgrid(coords.long(), coords.long(), indexing="ij")
    return torch.cat([axis[cols.reshape(-1)], axis[rows.reshape(-1)]], 1).float()         # [grid*grid, dim]


def _init_vision_positions(embeddings, vision_config) -> None:
    """Give the random InternViT informative absolute positions. transformers initialises
    ``position_embeddings`` to zeros (a pretrained checkpoint overwrites them); a ViT trained from zeros starts
    permutation-invariant, so its tokens say nothing about *where* they are until the positions are learned.
    Sine-cosine codes as MAE initialises its ViT (std ~0.5 over the table, about the patch embeddings' std for the
    0.02 conv init on normalised pixels); they stay trainable."""
    grid = vision_config.image_size[0] // vision_config.patch_size[0]
    with torch.no_grad():
        table = embeddings.position_embeddings  # [1, 1 + grid*grid, hidden]; row 0 is the CLS token's
        table.zero_()
        table[0, 1:] = sincos_position_grid(grid, table.shape[-1])


def make_tiny_internvl(save_dir: str | os.PathLike, seed: int = 0, vision_positions: str = "sincos",
                       **sizes) -> Path:
    """Write a tiny native-InternVL checkpoint directory (config, safetensors, tokenizer); ``sizes`` are
    :func:`tiny_internvl_config` arguments (``image_size``, ``vision_hidden``, ``text_layers``, ...).
    ``vision_positions``: "sincos" (default, see :func:`_init_vision_positions`) or "zeros" (transformers' init)."""
    if vision_positions not in ("sincos", "zeros"):
        raise ValueError(f"vision_positions={vision_positions!r}: use 'sincos' or 'zeros'")
    from transformers import InternVLForConditionalGeneration

    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tiny_tokenizer()
    config = tiny_internvl_config(
        vocab_size=len(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **sizes,
    )
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config).eval()
    if vision_positions == "sincos":
        _init_vision_positions(model.model.vision_tower.embeddings, config.vision_config)
    model.save_pretrained(save_dir)
    tokenizer.save_pretrained(save_dir)
    return save_dir


# A shrunk Hiera SAM2 in Meta's config vocabulary. Stages of one/two blocks; the global-attention block is the
# second block of stage 3 (never the first block of a stage). Image size 256 -> 16x16 embedding, 64x64 logits.
TINY_SAM2_YAML = """\
# Tiny SAM2 of the real architecture (Meta sam2 modules), for tests and the demo.
model:
  _target_: sam2.modeling.sam2_base.SAM2Base
  image_encoder:
    _target_: sam2.modeling.backbones.image_encoder.ImageEncoder
    scalp: 1
    trunk:
      _target_: sam2.modeling.backbones.hieradet.Hiera
      embed_dim: {embed_dim}
      num_heads: 1
      stages: [1, 1, 2, 1]
      global_att_blocks: [3]
      window_pos_embed_bkg_spatial_size: [4, 4]
      window_spec: [8, 4, 4, 2]
    neck:
      _target_: sam2.modeling.backbones.image_encoder.FpnNeck
      position_encoding:
        _target_: sam2.modeling.position_encoding.PositionEmbeddingSine
        num_pos_feats: {d_model}
        normalize: true
        scale: null
        temperature: 10000
      d_model: {d_model}
      backbone_channel_list: [{c3}, {c2}, {c1}, {embed_dim}]
      fpn_top_down_levels: [2, 3]
      fpn_interp_model: nearest
  memory_attention:
    _target_: sam2.modeling.memory_attention.MemoryAttention
    d_model: {d_model}
    pos_enc_at_input: true
    layer:
      _target_: sam2.modeling.memory_attention.MemoryAttentionLayer
      activation: relu
      dim_feedforward: {d_ff}
      dropout: 0.1
      pos_enc_at_attn: false
      self_attention:
        _target_: sam2.modeling.sam.transformer.RoPEAttention
        rope_theta: 10000.0
        feat_sizes: [{feat}, {feat}]
        embedding_dim: {d_model}
        num_heads: 1
        downsample_rate: 1
        dropout: 0.1
      d_model: {d_model}
      pos_enc_at_cross_attn_keys: true
      pos_enc_at_cross_attn_queries: false
      cross_attention:
        _target_: sam2.modeling.sam.transformer.RoPEAttention
        rope_theta: 10000.0
        feat_sizes: [{feat}, {feat}]
        rope_k_repeat: true
        embedding_dim: {d_model}
        num_heads: 1
        downsample_rate: 1
        dropout: 0.1
        kv_in_dim: 32
    num_layers: 1
  memory_encoder:
    _target_: sam2.modeling.memory_encoder.MemoryEncoder
    out_dim: 32
    position_encoding:
      _target_: sam2.modeling.position_encoding.PositionEmbeddingSine
      num_pos_feats: 32
      normalize: true
      scale: null
      temperature: 10000
    mask_downsampler:
      _target_: sam2.modeling.memory_encoder.MaskDownSampler
      kernel_size: 3
      stride: 2
      padding: 1
      embed_dim: {d_model}
    fuser:
      _target_: sam2.modeling.memory_encoder.Fuser
      layer:
        _target_: sam2.modeling.memory_encoder.CXBlock
        dim: {d_model}
        kernel_size: 7
        padding: 3
        layer_scale_init_value: 1e-6
        use_dwconv: true
      num_layers: 1
    in_dim: {d_model}
  num_maskmem: 7
  image_size: {image_size}
  sigmoid_scale_for_mem_enc: 20.0
  sigmoid_bias_for_mem_enc: -10.0
  use_mask_input_as_output_without_sam: true
  directly_add_no_mem_embed: true
  use_high_res_features_in_sam: true
  multimask_output_in_sam: true
  iou_prediction_use_sigmoid: true
  use_obj_ptrs_in_encoder: true
  add_tpos_enc_to_obj_ptrs: false
  only_obj_ptrs_in_the_past_for_eval: true
  pred_obj_scores: true
  pred_obj_scores_mlp: true
  fixed_no_obj_ptr: true
  multimask_output_for_tracking: true
  use_multimask_token_for_obj_ptr: true
  multimask_min_pt_num: 0
  multimask_max_pt_num: 1
  use_mlp_for_obj_ptr_proj: true
  compile_image_encoder: false
"""


def tiny_sam2_yaml(image_size: int = 256, embed_dim: int = 8, d_model: int = 64) -> str:
    """The tiny SAM2 config; ``embed_dim`` is Hiera's first-stage width (doubled at every stage), ``d_model`` the
    neck / prompt / mask-decoder width (256 in the released models)."""
    return TINY_SAM2_YAML.format(image_size=image_size, feat=image_size // 16, embed_dim=embed_dim,
                                 c1=2 * embed_dim, c2=4 * embed_dim, c3=8 * embed_dim, d_model=d_model,
                                 d_ff=2 * d_model)


def make_tiny_sam2(save_dir: str | os.PathLike, seed: int = 0, image_size: int = 256,
                   embed_dim: int = 8, d_model: int = 64) -> tuple[Path, Path]:
    """Write ``sam2_tiny.yaml`` and a Meta-format ``sam2_tiny.pt`` (``{'model': state_dict}``)."""
    from .models.sam2_runner import instantiate_sam2

    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = save_dir / "sam2_tiny.yaml"
    cfg_path.write_text(tiny_sam2_yaml(image_size, embed_dim, d_model))
    torch.manual_seed(seed)
    model = instantiate_sam2(str(cfg_path))
    ckpt_path = save_dir / "sam2_tiny.pt"
    torch.save({"model": model.state_dict()}, ckpt_path)
    return cfg_path, ckpt_path


def make_tiny_models(out_dir: str | os.PathLike, seed: int = 0, internvl: dict | None = None,
                     sam2: dict | None = None) -> dict[str, str]:
    """Write both tiny checkpoints under ``out_dir``; returns their paths. ``internvl`` / ``sam2``: size
    arguments of :func:`make_tiny_internvl` / :func:`make_tiny_sam2`."""
    out_dir = Path(out_dir)
    internvl = make_tiny_internvl(out_dir / "tiny_internvl", seed=seed, **(internvl or {}))
    sam2_cfg, sam2_ckpt = make_tiny_sam2(out_dir / "tiny_sam2", seed=seed, **(sam2 or {}))
    return {"internvl": str(internvl), "sam2_cfg": str(sam2_cfg), "sam2_ckpt": str(sam2_ckpt)}
