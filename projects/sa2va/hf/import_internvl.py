"""Original InternVL checkpoints (remote-code layout, ``model_type: internvl_chat``) -> native transformers InternVL.

InternVL2.5 / InternVL3 directories as published (``InternVL2_5-1B``, ``-4B``, ``-8B``, ``InternVL3-*``) ship their
own modeling code; we never run it. :func:`load_original_internvl` reads their ``config.json`` and weights, renames
and splits the tensors (table in docs/checkpoints.md) and returns an ``InternVLForConditionalGeneration``.
:class:`sa2va.models.InternVLMLLM` calls it automatically when ``model_path`` is such a directory, and
:func:`sa2va.tokenizer.build_tokenizer` reads the tokenizer with :func:`load_original_tokenizer`.

The mapping is shared with the Sa2VA HF importer (a Sa2VA directory stores its InternVL part in the same layout).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .common import ConversionReport, check_state_dict, read_json, read_state_dict

ORIGINAL_MODEL_TYPES = ("internvl_chat", "sa2va_chat")
SA2VA_EXTRA_PREFIXES = ("grounding_encoder.", "text_hidden_fcs.")

# llm_config.architectures[0] -> native text architecture (InternLM2 becomes Llama: same maths, fused weights split)
_TEXT_ARCHS = {"Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama", "InternLM2ForCausalLM": "internlm2"}

# remote-code / bookkeeping keys of the original configs that the native configs must not receive
_DROP_KEYS = {"architectures", "auto_map", "model_type", "_name_or_path", "attn_implementation",
              "_attn_implementation", "_attn_implementation_autoset", "use_flash_attn", "torch_dtype", "dtype",
              "transformers_version", "use_bfloat16", "drop_path_rate", "_commit_hash"}

# -- key renames: (regex on the original name, replacement) applied in order -----------------------------------
_VISION_RENAMES = [
    (r"^vision_model\.", "model.vision_tower."),
    (r"\.embeddings\.class_embedding$", ".embeddings.cls_token"),
    (r"\.embeddings\.patch_embedding\.", ".embeddings.patch_embeddings.projection."),
    (r"\.embeddings\.position_embedding$", ".embeddings.position_embeddings"),
    (r"\.encoder\.layers\.(\d+)\.", r".encoder.layer.\1."),
    (r"\.attn\.proj\.", ".attention.projection_layer."),
    (r"\.attn\.(q_norm|k_norm)\.", r".attention.\1."),
    (r"\.attn\.qkv\.", ".attention.qkv."),  # split below
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
    (r"\.ls([12])$", r".lambda_\1"),
]
_PROJECTOR_RENAMES = [
    (r"^mlp1\.0\.", "model.multi_modal_projector.layer_norm."),
    (r"^mlp1\.1\.", "model.multi_modal_projector.linear_1."),
    (r"^mlp1\.3\.", "model.multi_modal_projector.linear_2."),
]
_QWEN_LLAMA_RENAMES = [
    (r"^language_model\.model\.", "model.language_model."),
    (r"^language_model\.lm_head\.", "lm_head."),
]
_INTERNLM2_RENAMES = [
    (r"^language_model\.model\.tok_embeddings\.", "model.language_model.embed_tokens."),
    (r"^language_model\.model\.", "model.language_model."),
    (r"^language_model\.output\.", "lm_head."),
    (r"\.attention\.wqkv\.", ".self_attn.wqkv."),  # split below
    (r"\.attention\.wo\.", ".self_attn.o_proj."),
    (r"\.feed_forward\.w1\.", ".mlp.gate_proj."),
    (r"\.feed_forward\.w3\.", ".mlp.up_proj."),
    (r"\.feed_forward\.w2\.", ".mlp.down_proj."),
    (r"\.attention_norm\.", ".input_layernorm."),
    (r"\.ffn_norm\.", ".post_attention_layernorm."),
]


def is_original_internvl(path: str | os.PathLike) -> bool:
    """True for a directory whose ``config.json`` has ``model_type`` ``internvl_chat`` (or ``sa2va_chat``)."""
    cfg = Path(path) / "config.json"
    return cfg.is_file() and read_json(cfg).get("model_type") in ORIGINAL_MODEL_TYPES


def text_arch(original_config: dict, source: str = "") -> str:
    archs = original_config.get("llm_config", {}).get("architectures") or [None]
    if archs[0] not in _TEXT_ARCHS:
        raise ValueError(f"{source}: llm_config.architectures={archs} is not supported "
                         f"(known: {sorted(_TEXT_ARCHS)})")
    return _TEXT_ARCHS[archs[0]]


# -- config -------------------------------------------------------------------------------------------------------
def native_config(original: dict, image_token_id: int, source: str = ""):
    """``InternVLConfig`` equivalent to an original ``config.json`` (dict)."""
    from transformers import InternVLConfig, InternVLVisionConfig, LlamaConfig, Qwen2Config

    if original.get("ps_version", "v2") != "v2":
        raise ValueError(f"{source}: ps_version={original['ps_version']!r}; only 'v2' pixel shuffle (InternVL2 and "
                         f"later) matches the native model")
    v = {k: val for k, val in original["vision_config"].items() if k not in _DROP_KEYS}
    renamed = {"qkv_bias": "attention_bias", "qk_normalization": "use_qk_norm"}
    v = {renamed.get(k, k): val for k, val in v.items()}
    if "dropout" in v:  # the original's single dropout rate
        v["hidden_dropout_prob"] = v.pop("dropout")
    if "attention_dropout" in v:
        v["projection_dropout"] = v["attention_dropout"]
    if original.get("force_image_size"):
        v["image_size"] = original["force_image_size"]
    # InternViT has no final norm: the native tower's last norm is an Identity only with use_mean_pooling
    vision = InternVLVisionConfig(**v, use_mean_pooling=True, use_absolute_position_embeddings=True)

    arch = text_arch(original, source)
    t = {k: val for k, val in original["llm_config"].items() if k not in _DROP_KEYS}
    if arch == "internlm2":
        t["attention_bias"] = bool(t.pop("bias", False))
        t.pop("pretraining_tp", None)
    text = (Qwen2Config if arch == "qwen2" else LlamaConfig)(**t)
    patch = vision.patch_size[0]
    tile = vision.image_size[0]
    ratio = original.get("downsample_ratio", 0.5)
    return InternVLConfig(
        vision_config=vision, text_config=text, image_token_id=image_token_id,
        image_seq_length=int((tile // patch) ** 2 * ratio ** 2), downsample_ratio=ratio,
        projector_hidden_act="gelu", vision_feature_layer=original.get("select_layer", -1),
        vision_feature_select_strategy="default", tie_word_embeddings=text.tie_word_embeddings,
    )


# -- weights ------------------------------------------------------------------------------------------------------
def _rename(key: str, rules) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def split_vision_qkv(qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """InternViT ``attn.qkv`` (weight [3C, C] or bias [3C]) -> q, k, v: consecutive row blocks in that order."""
    if qkv.shape[0] % 3:
        raise ValueError(f"fused qkv has {qkv.shape[0]} rows, not a multiple of 3")
    return tuple(t.contiguous() for t in qkv.chunk(3, dim=0))


def split_internlm2_wqkv(wqkv: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int):
    """InternLM2 ``attention.wqkv`` [(H + 2*KV) * d, D] -> q [H*d, D], k [KV*d, D], v [KV*d, D].

    Rows are grouped per key/value head: for each of the KV groups, its ``H/KV`` query heads, then its key head,
    then its value head (``(kv, H/KV + 2, d)``). Query head ``g * H/KV + j`` uses kv head ``g``, as in Llama GQA.
    """
    groups = num_heads // num_kv_heads
    rows = (num_heads + 2 * num_kv_heads) * head_dim
    if wqkv.shape[0] != rows:
        raise ValueError(f"wqkv has {wqkv.shape[0]} rows, expected (heads {num_heads} + 2 x kv {num_kv_heads}) x "
                         f"head_dim {head_dim} = {rows}")
    w = wqkv.reshape(num_kv_heads, groups + 2, head_dim, *wqkv.shape[1:])
    q = w[:, :groups].reshape(num_heads * head_dim, *wqkv.shape[1:])
    k = w[:, groups].reshape(num_kv_heads * head_dim, *wqkv.shape[1:])
    v = w[:, groups + 1].reshape(num_kv_heads * head_dim, *wqkv.shape[1:])
    return q.contiguous(), k.contiguous(), v.contiguous()


def convert_state_dict(state: dict[str, torch.Tensor], arch: str, text_config) -> tuple[dict, dict, list]:
    """Original InternVL tensors (``vision_model.*``, ``mlp1.*``, ``language_model.*``) -> native names.

    Returns ``(converted, renamed_from, other)``: ``renamed_from`` maps each native key to its original key (for
    error messages) and ``other`` lists keys outside these three prefixes (left for the caller: Sa2VA's SAM2 and
    ``text_hidden_fcs``)."""
    llm_rules = _INTERNLM2_RENAMES if arch == "internlm2" else _QWEN_LLAMA_RENAMES
    out, renamed_from, other = {}, {}, []
    for key, tensor in state.items():
        if key.startswith("vision_model."):
            new = _rename(key, _VISION_RENAMES)
        elif key.startswith("mlp1."):
            new = _rename(key, _PROJECTOR_RENAMES)
        elif key.startswith("language_model."):
            new = _rename(key, llm_rules)
        else:
            other.append(key)
            continue
        if ".attention.qkv." in new:
            parts = split_vision_qkv(tensor)
            names = [new.replace(".qkv.", f".{p}_proj.") for p in "qkv"]
        elif ".self_attn.wqkv." in new:
            heads, kv_heads = text_config.num_attention_heads, text_config.num_key_value_heads
            head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
            parts = split_internlm2_wqkv(tensor, heads, kv_heads, head_dim)
            names = [new.replace(".wqkv.", f".{p}_proj.") for p in "qkv"]
        else:
            parts, names = (tensor,), [new]
        for n, p in zip(names, parts):
            if n in out:
                raise ValueError(f"two checkpoint keys map to '{n}': {renamed_from[n]} and {key}")
            out[n] = p
            renamed_from[n] = key
    return out, renamed_from, other


def expected_native_shapes(config) -> dict[str, torch.Size]:
    """Names and shapes of every weight of an ``InternVLForConditionalGeneration`` built from ``config`` (meta
    device: nothing is allocated). A tied ``lm_head`` is left out: it is the embedding."""
    from transformers import InternVLForConditionalGeneration

    with torch.device("meta"):
        model = InternVLForConditionalGeneration(config)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def load_original_tokenizer(path: str | os.PathLike, **kwargs):
    """The tokenizer of an original InternVL directory, without running its remote code (and without
    ``AutoTokenizer``, which would consult the remote-code ``config.json``). Qwen2 / Llama-3 tokenizers load through
    their transformers class; a remote-code class (InternLM2) loads from its ``tokenizer.json`` if there is one."""
    import transformers

    path = Path(path)
    name = read_json(path / "tokenizer_config.json").get("tokenizer_class") or "PreTrainedTokenizerFast"
    cls = getattr(transformers, name.removesuffix("Fast"), None) or getattr(transformers, name, None)
    if cls is None:
        if not (path / "tokenizer.json").is_file():
            raise ValueError(
                f"{path / 'tokenizer_config.json'}: tokenizer_class '{name}' is remote code and there is no "
                f"tokenizer.json; write one once with AutoTokenizer.from_pretrained(dir, trust_remote_code=True)"
                f".save_pretrained(dir) (a fast tokenizer) and load again")
        cls = transformers.PreTrainedTokenizerFast
    return cls.from_pretrained(str(path), **kwargs)


def load_original_internvl(path: str | os.PathLike, image_token_id: int, dtype=None,
                           attn_implementation: str | None = None):
    """Read an original InternVL directory into a native ``InternVLForConditionalGeneration``.

    Args:
        path: directory with ``config.json`` (``model_type: internvl_chat``) and safetensors / .bin weights.
        image_token_id: id of ``<IMG_CONTEXT>`` in the directory's tokenizer (the original config does not store it).
        dtype: torch dtype of the result (default: the checkpoint's).
    Every checkpoint tensor must map onto exactly one native weight and every native weight must be covered;
    otherwise a ``KeyError`` names the file and the keys.
    """
    from transformers import InternVLForConditionalGeneration

    path = Path(path)
    original = read_json(path / "config.json")
    config = native_config(original, image_token_id, source=str(path / "config.json"))
    state, origin = read_state_dict(path)
    converted, renamed_from, other = convert_state_dict(state, text_arch(original, str(path)), config.text_config)
    report = ConversionReport(source=f"InternVL (original layout) {path}")
    if original["model_type"] == "sa2va_chat":  # its SAM2 and text_hidden_fcs load through sa2va.hf.import_sa2va
        report.ignored = [k for k in other if k.startswith(SA2VA_EXTRA_PREFIXES)]
        other = [k for k in other if not k.startswith(SA2VA_EXTRA_PREFIXES)]
    if other:
        raise KeyError(f"{origin[other[0]]}: {len(other)} keys outside vision_model./mlp1./language_model. "
                       f"(first: {other[:5]}); is this an InternVL checkpoint?")
    if "lm_head.weight" in converted and config.tie_word_embeddings:
        config.tie_word_embeddings = config.text_config.tie_word_embeddings = False  # the file has its own head
    check_state_dict(converted, expected_native_shapes(config), str(path), "the native InternVL model", renamed_from)
    for k in converted:
        report.count(k.split(".")[1] if k.startswith("model.") else "lm_head")
    model = InternVLForConditionalGeneration.from_pretrained(
        None, config=config, state_dict=converted, dtype=dtype if dtype is not None else "auto",
        attn_implementation=attn_implementation)
    report.log()
    return model
