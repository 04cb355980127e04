"""Released Sa2VA HF checkpoints (Sa2VAChatModel layout) load into a model built from our config."""
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from hf_helpers import assert_outputs_equal, batch_for, outputs, perturb
from model_helpers import model_config
from original_layouts import save_sharded, tiny_native_internvl, write_original_internvl, write_sa2va_hf
from sa2va import BUILDER
from sa2va.hf import init_from_sa2va_hf, is_sa2va_hf, load_sa2va_hf
from sa2va.hf.common import read_state_dict


@pytest.fixture(scope="module")
def released(tiny_models, tmp_path_factory):
    """An original-layout InternVL base (what users download) and a 'released' Sa2VA built on it and saved in the
    Sa2VA HF layout, every weight (vision, LLM, special-token rows, all of SAM2, text_hidden_fcs) changed."""
    tmp = tmp_path_factory.mktemp("sa2va_hf")
    tok = AutoTokenizer.from_pretrained(tiny_models["internvl"])
    base = write_original_internvl(tiny_native_internvl(tok, seed=3), tok, tmp / "InternVL-base")
    tiny = dict(tiny_models, internvl=str(base))
    sa2va = BUILDER.build(model_config(tiny, lora=False, new_token_training="none")).eval()
    perturb(sa2va, seed=5, only_trainable=False, scale=0.02)
    sa2va_dir = write_sa2va_hf(sa2va, tmp / "Sa2VA-tiny")
    return dict(tiny=tiny, model=sa2va, dir=sa2va_dir, tmp=tmp)


def test_sa2va_hf_loads_into_a_lora_training_model(released):
    assert is_sa2va_hf(released["dir"])
    keys = load_file(str(next(released["dir"].glob("model-*.safetensors"))))  # one shard is enough to look at
    keys.update(load_file(str(sorted(released["dir"].glob("model-*.safetensors"))[1])))
    assert any(k.endswith(".g_weight") for k in keys) and not any(k.endswith(".gamma") for k in keys)

    model = BUILDER.build(model_config(released["tiny"])).eval()  # LoRA + new-token rows, as for fine-tuning
    report = load_sa2va_hf(model, released["dir"])
    assert report.loaded["sam2"] == len(model.grounding_encoder.sam2_model.state_dict())
    assert report.loaded["text_hidden_fcs"] == 4 and report.ignored == []
    assert report.new and all("lora_" in n for n in report.new)
    batch = batch_for(model)
    assert_outputs_equal(outputs(released["model"], batch), outputs(model, batch))
    # the special-token rows the model trains start from the released rows
    ids = torch.tensor(model.mllm.new_token_ids)
    delta = next(p for n, p in model.named_parameters() if "embed_tokens" in n and "trainable_tokens_delta" in n)
    assert torch.equal(delta, released["model"].mllm.hf_model.get_input_embeddings().weight[ids])
    gamma = "memory_encoder.fuser.layers.0.gamma"
    assert torch.equal(model.grounding_encoder.sam2_model.state_dict()[gamma],
                       released["model"].grounding_encoder.sam2_model.state_dict()[gamma])


def test_config_route(released):
    cfg = dict(type=init_from_sa2va_hf, model=model_config(released["tiny"]), path=str(released["dir"]))
    model = BUILDER.build(cfg).eval()
    batch = batch_for(model)
    assert_outputs_equal(outputs(released["model"], batch), outputs(model, batch))


def test_pretrained_pth_accepts_a_sa2va_directory(released):
    model = BUILDER.build(model_config(released["tiny"], pretrained_pth=str(released["dir"]))).eval()
    batch = batch_for(model)
    assert_outputs_equal(outputs(released["model"], batch), outputs(model, batch))


def test_sa2va_directory_as_mllm_model_path(released):
    """mllm.model_path may point at the Sa2VA directory itself: its InternVL part loads, SAM2 keys are left."""
    tiny = dict(released["tiny"], internvl=str(released["dir"]))
    model = BUILDER.build(model_config(tiny, lora=False, new_token_training="none")).eval()
    for (n, p), (_, q) in zip(model.mllm.hf_model.state_dict().items(),
                              released["model"].mllm.hf_model.state_dict().items()):
        assert torch.equal(p, q), n


def _rewrite(src, dst, edit):
    tensors, _ = read_state_dict(src)
    edit(tensors)
    dst.mkdir()
    for f in src.iterdir():
        if not f.name.startswith("model"):
            (dst / f.name).write_bytes(f.read_bytes())
    save_sharded(tensors, dst)
    return dst


def test_unexpected_and_missing_keys_are_named(released):
    model = BUILDER.build(model_config(released["tiny"]))
    bad = _rewrite(released["dir"], released["tmp"] / "bad_extra",
                   lambda t: t.__setitem__("grounding_encoder.sam2_model.extra.weight", torch.zeros(1)))
    with pytest.raises(KeyError, match=r"grounding_encoder\.sam2_model\.extra\.weight"):
        load_sa2va_hf(model, bad)
    bad = _rewrite(released["dir"], released["tmp"] / "bad_missing",
                   lambda t: t.pop("grounding_encoder.sam2_model.memory_encoder.fuser.layers.0.g_weight"))
    with pytest.raises(KeyError, match=r"memory_encoder\.fuser\.layers\.0\.gamma") as e:
        load_sa2va_hf(model, bad)
    assert str(bad) in str(e.value)


def test_special_token_ids_must_agree(released):
    cfg = model_config(released["tiny"])
    cfg["mllm"]["special_tokens"] = ["<p>", "[SEG]", "</p>", "<vp>", "</vp>"]
    model = BUILDER.build(cfg)
    with pytest.raises(ValueError, match="token '<p>' has id 601 in the checkpoint"):
        load_sa2va_hf(model, released["dir"])


def test_released_sa2va_to_training_config_to_export(released):
    """Released Sa2VA -> our training config (through init_from_sa2va_hf) -> export -> load: same outputs."""
    from sa2va.hf import export_from_config, load_pretrained_sa2va

    from hf_helpers import CONFIG_TEMPLATE

    text = CONFIG_TEMPLATE.format(**released["tiny"]) + (
        "from sa2va.hf import init_from_sa2va_hf\n"
        f"model = dict(type=init_from_sa2va_hf, path={str(released['dir'])!r}, model=model)\n")
    cfg = released["tmp"] / "finetune_cfg.py"
    cfg.write_text(text)
    out = export_from_config(cfg, None, released["tmp"] / "exported", dtype="fp32")
    loaded = load_pretrained_sa2va(out)
    batch = batch_for(loaded)
    assert_outputs_equal(outputs(released["model"], batch), outputs(loaded, batch))
