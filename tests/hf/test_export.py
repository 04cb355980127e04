"""Export (LoRA merged) -> load_pretrained_sa2va reproduces the training model's LM and mask logits."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from hf_helpers import assert_outputs_close, assert_outputs_equal, batch_for, outputs, perturb, write_config
from model_helpers import model_config
from sa2va import BUILDER
from sa2va.hf import ExportConfig, export_from_config, export_sa2va, load_pretrained_sa2va
from sa2va.models import VideoLLaVASAMModel

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tiny_models, tmp_path_factory):
    """A 'trained' tiny model (every trainable weight moved, LoRA B non-zero), its checkpoint and config file."""
    tmp = tmp_path_factory.mktemp("export")
    model = BUILDER.build(model_config(tiny_models)).eval()
    perturb(model, seed=1)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)
    ckpt = tmp / "iter_10.pth"
    torch.save({"meta": {"iter": 10}, "state_dict": model.state_dict()}, ckpt)
    return dict(model=model, ckpt=str(ckpt), config=write_config(tiny_models, tmp / "cfg.py"), tmp=tmp)


@pytest.fixture(scope="module")
def exported_fp32(trained):
    out = trained["tmp"] / "hf_fp32"
    export_from_config(trained["config"], trained["ckpt"], out, dtype="fp32")
    return out


def test_export_load_matches_training_model(trained, exported_fp32):
    a = trained["model"]
    batch = batch_for(a)
    unmerged = outputs(a, batch)
    new_rows = {n: p.detach().clone() for n, p in a.named_parameters() if "trainable_tokens_delta" in n}

    b = load_pretrained_sa2va(exported_fp32)
    assert not b.training and not any(p.requires_grad for p in b.parameters())
    assert not any("lora" in n or "token_adapter" in n for n, _ in b.named_parameters())
    loaded = outputs(b, batch)

    # bit-exact against the training model with its LoRA merged in place the way peft merges
    a.mllm.model.merge_and_unload()
    assert_outputs_equal(outputs(a, batch), loaded)
    # and equal up to float rounding to the unmerged training model (x(W + BA s) vs xW + (xA)B s)
    assert_outputs_close(unmerged, loaded, atol=1e-5)

    # the merge changed the base weights (LoRA B was non-zero)
    from safetensors.torch import load_file
    key = "language_model.model.layers.0.self_attn.q_proj.weight"  # the -hf on-disk name
    base = load_file(str(Path(a.mllm.model_path) / "model.safetensors"))[key]
    assert not torch.equal(load_file(str(exported_fp32 / "model.safetensors"))[key], base)

    # the special-token rows are the trained ones
    ids = torch.tensor(b.mllm.new_token_ids)
    embed_delta = next(v for n, v in new_rows.items() if "embed_tokens" in n)
    head_delta = next(v for n, v in new_rows.items() if "lm_head" in n)
    assert torch.equal(b.mllm.hf_model.get_input_embeddings().weight[ids], embed_delta)
    assert torch.equal(b.mllm.lm_head.weight[ids], head_delta)


def test_exported_directory_contents(exported_fp32, tiny_models):
    from transformers import AutoTokenizer, InternVLForConditionalGeneration

    cfg = ExportConfig.load(exported_fp32)
    assert cfg.template == "qwen_chat" and cfg.max_tiles == 6 and cfg.tile_size == 112
    assert cfg.sam2_image_size == 256 and cfg.tokens_per_tile == 16 and cfg.llm_dtype == "float32"
    assert cfg.sam2_multimask_output is True
    assert cfg.special_tokens == ["[SEG]", "<p>", "</p>", "<vp>", "</vp>"]
    assert cfg.exported_from["checkpoint"].endswith("iter_10.pth")
    assert (exported_fp32 / "sam2_config.yaml").read_text() == Path(tiny_models["sam2_cfg"]).read_text()
    # the directory is also a plain native InternVL directory
    native = json.loads((exported_fp32 / "config.json").read_text())
    assert native["model_type"] == "internvl" and "auto_map" not in native
    tok = AutoTokenizer.from_pretrained(exported_fp32)
    assert tok.convert_tokens_to_ids("[SEG]") == native["text_config"]["vocab_size"] - 5
    InternVLForConditionalGeneration.from_pretrained(exported_fp32)


def test_bf16_export_is_sharded_and_close(trained, exported_fp32):
    out = trained["tmp"] / "hf_bf16"
    export_from_config(trained["config"], trained["ckpt"], out, dtype="bf16", max_shard_size="200KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    b16 = load_pretrained_sa2va(out)
    assert b16.mllm.hf_model.dtype == torch.bfloat16
    assert b16.grounding_encoder.sam2_model.sam_mask_decoder.conv_s0.weight.dtype == torch.float32
    b32 = load_pretrained_sa2va(exported_fp32)
    # the same bf16-rounded weights whichever way they were rounded: load the fp32 export as bf16
    b32_as_16 = load_pretrained_sa2va(exported_fp32, dtype="bfloat16")
    for (n, p), (_, q) in zip(b16.mllm.hf_model.state_dict().items(), b32_as_16.mllm.hf_model.state_dict().items()):
        assert torch.equal(p, q), n
    assert b32.mllm.hf_model.dtype == torch.float32


def test_cli_and_classmethod(trained, exported_fp32):
    spec = importlib.util.spec_from_file_location("convert_to_hf", ROOT / "tools" / "convert_to_hf.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = trained["tmp"] / "hf_cli"
    cli.main([trained["config"], trained["ckpt"], "--save-path", str(out), "--dtype", "fp32", "--template",
              "phi3_chat"])
    assert ExportConfig.load(out).template == "phi3_chat"
    for f in ("model.safetensors", "sam2.safetensors", "text_hidden_fcs.safetensors"):
        assert (out / f).read_bytes() == (exported_fp32 / f).read_bytes(), f
    if hasattr(VideoLLaVASAMModel, "from_pretrained"):
        assert isinstance(VideoLLaVASAMModel.from_pretrained(out), VideoLLaVASAMModel)


def test_checkpoint_that_does_not_match_the_config_fails_with_names(trained):
    state = torch.load(trained["ckpt"], weights_only=True)["state_dict"]
    key = next(k for k in state if "lora_A" in k)
    state.pop(key)
    bad = trained["tmp"] / "bad.pth"
    torch.save({"state_dict": state}, bad)
    with pytest.raises(RuntimeError) as e:
        export_from_config(trained["config"], bad, trained["tmp"] / "never", dtype="fp32")
    assert "bad.pth" in str(e.value) and key in str(e.value)


def test_not_an_export_directory(tiny_models):
    with pytest.raises(FileNotFoundError, match="sa2va_config.json"):
        load_pretrained_sa2va(tiny_models["internvl"])


def test_single_mask_decoding_choice_survives_export(tiny_models, tmp_path):
    cfg = model_config(tiny_models)
    cfg["grounding_encoder"]["multimask_output"] = False
    export_sa2va(BUILDER.build(cfg).eval(), tmp_path, sam2_config=tiny_models["sam2_cfg"], dtype="fp32")
    assert ExportConfig.load(tmp_path).sam2_multimask_output is False
    assert load_pretrained_sa2va(tmp_path).grounding_encoder.multimask_output is False
