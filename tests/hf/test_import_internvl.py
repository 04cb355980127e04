"""Original InternVL (remote-code layout) checkpoints load into the native model and reproduce its logits."""
import json

import pytest
import torch
from transformers import AutoTokenizer

from original_layouts import save_sharded, tiny_native_internvl, write_original_internvl
from sa2va.hf.common import read_state_dict
from sa2va.hf.import_internvl import (is_original_internvl, load_original_internvl, split_internlm2_wqkv,
                                      split_vision_qkv)
from sa2va.models import InternVLMLLM


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    return AutoTokenizer.from_pretrained(tiny_models["internvl"])


def _logits(model, tokenizer):
    ctx = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    ids = torch.tensor([[1, 2, 3] + [ctx] * 16 + [7, 8, 9]])
    pv = torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=pv).logits


# (layout written, native text model): InternVL2.5-1B/4B and InternVL3 (Qwen2), Llama-based ones (InternVL3-9B,
# 2B-MPO), InternVL2.5-8B (InternLM2, read as Llama); qk_norm = InternViT-6B (26B and larger)
CASES = [("qwen2", "qwen2", False), ("llama", "llama", False), ("internlm2", "llama", False),
         ("qwen2", "qwen2", True)]


@pytest.mark.parametrize("layout,native_arch,qk_norm", CASES)
def test_original_layout_reproduces_native_logits(tokenizer, tmp_path, layout, native_arch, qk_norm):
    native = tiny_native_internvl(tokenizer, native_arch, qk_norm=qk_norm)
    d = write_original_internvl(native, tokenizer, tmp_path / "orig", layout)
    assert is_original_internvl(d)
    loaded = load_original_internvl(d, tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"))
    assert type(loaded.config.text_config) is type(native.config.text_config)
    own = loaded.state_dict()
    for k, v in native.state_dict().items():
        assert torch.equal(own[k], v), k
    assert torch.equal(_logits(native, tokenizer), _logits(loaded, tokenizer))


def test_vision_qkv_split_order_elementwise():
    c = 4
    qkv_w = torch.arange(3 * c * c, dtype=torch.float32).view(3 * c, c)
    q, k, v = split_vision_qkv(qkv_w)
    assert torch.equal(q, qkv_w[:c]) and torch.equal(k, qkv_w[c:2 * c]) and torch.equal(v, qkv_w[2 * c:])
    qb, kb, vb = split_vision_qkv(torch.arange(3 * c))
    assert qb.tolist() == [0, 1, 2, 3] and kb.tolist() == [4, 5, 6, 7] and vb.tolist() == [8, 9, 10, 11]


def test_internlm2_wqkv_grouped_split_elementwise():
    heads, kv, d, hidden = 4, 2, 3, 5  # 2 query heads per kv head
    # row r of wqkv is filled with r; layout per kv group g: [q(g,0), q(g,1), k(g), v(g)] x d rows each
    wqkv = torch.arange((heads + 2 * kv) * d, dtype=torch.float32)[:, None].expand(-1, hidden).clone()
    q, k, v = split_internlm2_wqkv(wqkv, heads, kv, d)
    block = lambda b: list(range(b * d, (b + 1) * d))  # noqa: E731  rows of the b-th d-row block
    assert q[:, 0].long().tolist() == block(0) + block(1) + block(4) + block(5)
    assert k[:, 0].long().tolist() == block(2) + block(6)
    assert v[:, 0].long().tolist() == block(3) + block(7)
    with pytest.raises(ValueError, match="expected"):
        split_internlm2_wqkv(wqkv[:-1], heads, kv, d)


def test_missing_and_unexpected_keys_are_named(tokenizer, tmp_path):
    native = tiny_native_internvl(tokenizer)
    d = write_original_internvl(native, tokenizer, tmp_path / "orig")
    tensors, _ = read_state_dict(d)
    for f in d.glob("model-*.safetensors"):
        f.unlink()
    tensors["vision_model.encoder.layers.0.attn.qkv_renamed.weight"] = tensors.pop(
        "vision_model.encoder.layers.0.attn.qkv.weight")
    save_sharded(tensors, d)
    with pytest.raises(KeyError) as e:
        load_original_internvl(d, tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"))
    msg = str(e.value)
    assert str(d) in msg
    assert "model.vision_tower.encoder.layer.0.attention.q_proj.weight" in msg  # missing
    assert "vision_model.encoder.layers.0.attn.qkv_renamed.weight" in msg  # unexpected


def test_shape_mismatch_is_named(tokenizer, tmp_path):
    native = tiny_native_internvl(tokenizer)
    d = write_original_internvl(native, tokenizer, tmp_path / "orig")
    cfg = json.loads((d / "config.json").read_text())
    cfg["llm_config"]["intermediate_size"] = 96
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"mlp.gate_proj.weight \(checkpoint key language_model.model.layers"):
        load_original_internvl(d, tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"))


def test_internvl_mllm_detects_original_directories(tokenizer, tmp_path):
    """InternVLMLLM on an original directory == InternVLMLLM on the same weights in the native layout, including
    the tokenizer (read without the remote-code config) and the image-token id."""
    native = tiny_native_internvl(tokenizer)
    native_dir = tmp_path / "native"
    native.save_pretrained(native_dir)
    tokenizer.save_pretrained(native_dir)
    orig_dir = write_original_internvl(native, tokenizer, tmp_path / "orig")
    a = InternVLMLLM(native_dir, torch_dtype="float32", llm_lora=None, new_token_training="none")
    b = InternVLMLLM(orig_dir, torch_dtype="float32", llm_lora=None, new_token_training="none")
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
    assert a.img_context_token_id == b.img_context_token_id == b.hf_model.config.image_token_id
    ids = torch.tensor([[1, 2] + [a.img_context_token_id] * 16 + list(a.new_token_ids)])
    pv = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        ha = a(input_ids=ids, pixel_values=pv)["hidden_states"]
        hb = b(input_ids=ids, pixel_values=pv)["hidden_states"]
    assert torch.equal(ha, hb)


def test_remote_code_tokenizer_without_tokenizer_json_fails_clearly(tokenizer, tmp_path):
    native = tiny_native_internvl(tokenizer)
    d = write_original_internvl(native, tokenizer, tmp_path / "orig", "internlm2")
    tc = json.loads((d / "tokenizer_config.json").read_text())
    tc["tokenizer_class"] = "InternLM2Tokenizer"
    (d / "tokenizer_config.json").write_text(json.dumps(tc))
    from sa2va.hf import load_original_tokenizer

    assert load_original_tokenizer(d).get_vocab() == tokenizer.get_vocab()  # tokenizer.json is there
    (d / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="InternLM2Tokenizer"):
        load_original_tokenizer(d)
