"""Writers of tiny checkpoints in the *published* layouts, independent of the library's converters.

Each writer takes a native ``InternVLForConditionalGeneration`` (the reference) and writes the same weights under the
names and fused tensors of the public checkpoints (facts and sources in docs/checkpoints.md):

* original InternVL (``InternVLChatModel`` remote code): ``vision_model.*`` with ``attn.qkv`` = cat(q, k, v) rows,
  ``ls1/ls2``, ``norm1/norm2``; ``mlp1.{0,1,3}``; ``language_model.model.*`` + ``language_model.lm_head`` (Qwen2 /
  Llama) or InternLM2's ``tok_embeddings`` / ``attention.wqkv`` (rows grouped per kv head: its query heads, its key
  head, its value head) / ``wo`` / ``feed_forward.w1,w3,w2`` / ``attention_norm`` / ``ffn_norm`` / ``output``;
* Sa2VA HF (``Sa2VAChatModel``): the same InternVL part plus ``grounding_encoder.sam2_model.*`` (``.gamma`` stored
  as ``.g_weight``) and ``text_hidden_fcs.*``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def tiny_native_internvl(tokenizer, text_arch: str = "qwen2", qk_norm: bool = False, seed: int = 0):
    """A tiny native InternVL that the original layout can express: no final vision norm (InternViT has none),
    q/k/v biases (``qkv_bias``), optional InternViT-6B style q/k RMS norms."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig, LlamaConfig
    from transformers import Qwen2Config

    vision = InternVLVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=[112, 112],
        patch_size=[14, 14], attention_bias=True, use_qk_norm=qk_norm,
        norm_type="rms_norm" if qk_norm else "layer_norm",
        layer_scale_init_value=0.1, use_mean_pooling=True)
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=512,
                  tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, bos_token_id=None, initializer_range=0.15)
    text = Qwen2Config(**common) if text_arch == "qwen2" else LlamaConfig(**common, rms_norm_eps=1e-5)
    config = InternVLConfig(vision_config=vision, text_config=text,
                            image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=16,
                            downsample_ratio=0.5, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config).eval()
    with torch.no_grad():  # layer scales and norms away from their constant init, so a wrong mapping shows
        for name, p in model.named_parameters():
            if "lambda_" in name or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def original_vision_config(model) -> dict:
    v = model.config.vision_config
    return {"architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", "hidden_size": v.hidden_size,
            "num_hidden_layers": v.num_hidden_layers, "num_attention_heads": v.num_attention_heads,
            "intermediate_size": v.intermediate_size, "image_size": v.image_size[0], "patch_size": v.patch_size[0],
            "qkv_bias": v.attention_bias, "qk_normalization": v.use_qk_norm, "norm_type": v.norm_type,
            "layer_norm_eps": v.layer_norm_eps, "hidden_act": v.hidden_act, "dropout": 0.0,
            "attention_dropout": 0.0, "drop_path_rate": 0.0, "initializer_factor": 0.1, "initializer_range": 0.02,
            "num_channels": 3, "use_flash_attn": True}


def original_llm_config(model, text_arch: str) -> dict:
    t = model.config.text_config
    if text_arch == "internlm2":
        return {"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2",
                "auto_map": {"AutoConfig": "configuration_internlm2.InternLM2Config"},
                "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
                "num_hidden_layers": t.num_hidden_layers, "num_attention_heads": t.num_attention_heads,
                "num_key_value_heads": t.num_key_value_heads, "hidden_act": "silu",
                "max_position_embeddings": t.max_position_embeddings, "rms_norm_eps": t.rms_norm_eps,
                "rope_theta": t.rope_parameters["rope_theta"], "rope_scaling": None, "vocab_size": t.vocab_size,
                "bias": False, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": t.eos_token_id,
                "pad_token_id": t.pad_token_id, "attn_implementation": "flash_attention_2", "torch_dtype": "bfloat16"}
    d = t.to_dict()
    d["architectures"] = ["Qwen2ForCausalLM" if text_arch == "qwen2" else "LlamaForCausalLM"]
    d["_name_or_path"] = "/data/Qwen2.5-0.5B-Instruct"
    return d


def original_config(model, text_arch: str, model_type: str = "internvl_chat") -> dict:
    return {"architectures": ["InternVLChatModel"], "model_type": model_type,
            "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                         "AutoModel": "modeling_internvl_chat.InternVLChatModel"},
            "vision_config": original_vision_config(model), "llm_config": original_llm_config(model, text_arch),
            "downsample_ratio": model.config.downsample_ratio, "select_layer": -1, "ps_version": "v2",
            "template": "internvl2_5", "force_image_size": model.config.vision_config.image_size[0],
            "dynamic_image_size": True, "use_thumbnail": True, "max_dynamic_patch": 12, "min_dynamic_patch": 1,
            "use_backbone_lora": 0, "use_llm_lora": 0, "torch_dtype": "bfloat16"}


def original_internvl_tensors(model, text_arch: str) -> dict[str, torch.Tensor]:
    """The native model's weights under the original InternVL names, fused as in the public checkpoints."""
    sd = model.state_dict()
    out = {}
    nv = model.config.vision_config.num_hidden_layers
    vt = "model.vision_tower."
    out["vision_model.embeddings.class_embedding"] = sd[vt + "embeddings.cls_token"]
    out["vision_model.embeddings.position_embedding"] = sd[vt + "embeddings.position_embeddings"]
    for p in ("weight", "bias"):
        out[f"vision_model.embeddings.patch_embedding.{p}"] = sd[vt + f"embeddings.patch_embeddings.projection.{p}"]
    for i in range(nv):
        n, o = f"{vt}encoder.layer.{i}.", f"vision_model.encoder.layers.{i}."
        for p in ("weight", "bias"):
            out[o + f"attn.qkv.{p}"] = torch.cat([sd[n + f"attention.{x}_proj.{p}"] for x in "qkv"])
            out[o + f"attn.proj.{p}"] = sd[n + f"attention.projection_layer.{p}"]
            out[o + f"mlp.fc1.{p}"] = sd[n + f"mlp.fc1.{p}"]
            out[o + f"mlp.fc2.{p}"] = sd[n + f"mlp.fc2.{p}"]
        for src, dst in (("layernorm_before", "norm1"), ("layernorm_after", "norm2"),
                         ("attention.q_norm", "attn.q_norm"), ("attention.k_norm", "attn.k_norm")):
            for p in ("weight", "bias"):
                if n + f"{src}.{p}" in sd:
                    out[o + f"{dst}.{p}"] = sd[n + f"{src}.{p}"]
        out[o + "ls1"] = sd[n + "lambda_1"]
        out[o + "ls2"] = sd[n + "lambda_2"]
    for i, name in ((0, "layer_norm"), (1, "linear_1"), (3, "linear_2")):
        for p in ("weight", "bias"):
            out[f"mlp1.{i}.{p}"] = sd[f"model.multi_modal_projector.{name}.{p}"]

    lm = "model.language_model."
    t = model.config.text_config
    if text_arch != "internlm2":
        for k, v in sd.items():
            if k.startswith(lm):
                out["language_model.model." + k[len(lm):]] = v
        out["language_model.lm_head.weight"] = sd["lm_head.weight"]
        return out
    d = t.hidden_size // t.num_attention_heads
    groups = t.num_attention_heads // t.num_key_value_heads
    out["language_model.model.tok_embeddings.weight"] = sd[lm + "embed_tokens.weight"]
    out["language_model.model.norm.weight"] = sd[lm + "norm.weight"]
    out["language_model.output.weight"] = sd["lm_head.weight"]
    for i in range(t.num_hidden_layers):
        n, o = f"{lm}layers.{i}.", f"language_model.model.layers.{i}."
        q = sd[n + "self_attn.q_proj.weight"].view(t.num_key_value_heads, groups, d, -1)
        k = sd[n + "self_attn.k_proj.weight"].view(t.num_key_value_heads, 1, d, -1)
        v = sd[n + "self_attn.v_proj.weight"].view(t.num_key_value_heads, 1, d, -1)
        out[o + "attention.wqkv.weight"] = torch.cat([q, k, v], dim=1).reshape(-1, t.hidden_size)
        out[o + "attention.wo.weight"] = sd[n + "self_attn.o_proj.weight"]
        out[o + "feed_forward.w1.weight"] = sd[n + "mlp.gate_proj.weight"]
        out[o + "feed_forward.w3.weight"] = sd[n + "mlp.up_proj.weight"]
        out[o + "feed_forward.w2.weight"] = sd[n + "mlp.down_proj.weight"]
        out[o + "attention_norm.weight"] = sd[n + "input_layernorm.weight"]
        out[o + "ffn_norm.weight"] = sd[n + "post_attention_layernorm.weight"]
    return out


def save_sharded(tensors: dict[str, torch.Tensor], out_dir: Path, shards: int = 2) -> None:
    """Write ``tensors`` as ``shards`` safetensors files + ``model.safetensors.index.json`` (like the hub)."""
    keys = sorted(tensors)
    weight_map = {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k].contiguous() for k in keys[s::shards]}
        save_file(part, str(out_dir / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (out_dir / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def write_original_internvl(model, tokenizer, out_dir, text_arch: str = "qwen2") -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(original_config(model, text_arch), indent=1))
    save_sharded(original_internvl_tensors(model, text_arch), out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def write_sa2va_hf(sa2va_model, out_dir, text_arch: str = "qwen2") -> Path:
    """A Sa2VA HF directory (``Sa2VAChatModel`` layout) holding the weights of a built :class:`VideoLLaVASAMModel`
    whose InternVL part is plain (no LoRA): what the original ``convert_to_hf.py`` writes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    internvl = sa2va_model.mllm.hf_model
    tensors = original_internvl_tensors(internvl, text_arch)
    for k, v in sa2va_model.grounding_encoder.sam2_model.state_dict().items():
        tensors["grounding_encoder.sam2_model." + k.replace(".gamma", ".g_weight")] = v
    for k, v in sa2va_model.text_hidden_fcs.state_dict().items():
        tensors["text_hidden_fcs." + k] = v
    cfg = original_config(internvl, text_arch, model_type="sa2va_chat")
    cfg["architectures"] = ["Sa2VAChatModel"]
    cfg["auto_map"] = {"AutoConfig": "configuration_sa2va_chat.Sa2VAChatConfig",
                       "AutoModel": "modeling_sa2va_chat.Sa2VAChatModel"}
    cfg["template"] = "qwen_chat"
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    save_sharded(tensors, out_dir)
    sa2va_model.tokenizer.save_pretrained(out_dir)
    return out_dir
