"""Tiny checkpoints load through the real code paths; trainable-only state dicts round-trip exactly."""
import pytest
import torch

from model_helpers import caption_sample, collate, model_config, seg_sample
from sa2va import BUILDER
from sa2va.models import SAM2TrainRunner


def _batch(model):
    torch.manual_seed(123)
    return collate([seg_sample(model, n_masks=2), caption_sample(model)], model.tokenizer.pad_token_id)


def _losses(model, batch):
    torch.manual_seed(7)  # point sampling draws random points
    with torch.no_grad():
        return {k: v.item() for k, v in model(batch, mode="loss").items()}


def test_tiny_checkpoints_build_identically(tiny_models):
    a = BUILDER.build(model_config(tiny_models))
    b = BUILDER.build(model_config(tiny_models))
    b.text_hidden_fcs.load_state_dict(a.text_hidden_fcs.state_dict())  # the only randomly initialised part
    batch = _batch(a)
    assert _losses(a, batch) == _losses(b, batch)


def test_state_dict_is_trainable_only_and_round_trips(tiny_models, tmp_path):
    torch.manual_seed(0)
    a = BUILDER.build(model_config(tiny_models))
    with torch.no_grad():  # move every trainable weight away from its initial value
        for p in a.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.01)
    sd = a.state_dict()
    assert set(sd) == {n for n, p in a.named_parameters() if p.requires_grad}
    assert not any("vision_tower" in k or "image_encoder" in k for k in sd)
    path = tmp_path / "trainable.pth"
    torch.save({"state_dict": sd}, path)

    b = BUILDER.build(model_config(tiny_models))
    batch = _batch(a)
    assert _losses(a, batch) != _losses(b, batch)
    b.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    assert _losses(a, batch) == _losses(b, batch)
    for k, v in b.state_dict().items():
        assert torch.equal(v, sd[k]), k

    c = BUILDER.build(model_config(tiny_models, pretrained_pth=str(path)))  # the config route
    assert _losses(a, batch) == _losses(c, batch)


def test_strict_load_reports_unknown_and_missing_keys(tiny_models):
    m = BUILDER.build(model_config(tiny_models))
    sd = m.state_dict()
    sd["text_hidden_fcs.9.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="text_hidden_fcs.9.weight"):
        m.load_state_dict(sd)
    sd.pop("text_hidden_fcs.9.weight")
    sd.pop("text_hidden_fcs.0.bias")
    with pytest.raises(RuntimeError, match="text_hidden_fcs.0.bias"):
        m.load_state_dict(sd)


def test_pretrained_pth_without_matching_keys_fails(tiny_models, tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"foo.weight": torch.zeros(2)}}, path)
    with pytest.raises(RuntimeError, match="none of its 1 keys match"):
        BUILDER.build(model_config(tiny_models, pretrained_pth=str(path)))


def test_sam2_checkpoint_with_wrong_key_names_the_key(tiny_models, tmp_path):
    ckpt = torch.load(tiny_models["sam2_ckpt"], weights_only=True)
    sd = ckpt["model"]
    sd["sam_mask_decoder.iou_token.weight_renamed"] = sd.pop("sam_mask_decoder.iou_token.weight")
    bad = tmp_path / "bad_sam2.pt"
    torch.save({"model": sd}, bad)
    with pytest.raises(RuntimeError) as e:
        SAM2TrainRunner(tiny_models["sam2_cfg"], str(bad))
    msg = str(e.value)
    assert "missing in checkpoint (1)" in msg and "sam_mask_decoder.iou_token.weight" in msg
    assert "unexpected in checkpoint (1)" in msg and "weight_renamed" in msg


def test_sam2_meta_config_names_resolve():
    from sa2va.models.sam2_runner import resolve_sam2_config

    for name in ("sam2_hiera_l.yaml", "sam2.1_hiera_l.yaml", "configs/sam2.1/sam2.1_hiera_t.yaml", "sam2_hiera_b+"):
        assert resolve_sam2_config(name).is_file()
    with pytest.raises(FileNotFoundError, match="known"):
        resolve_sam2_config("sam3_hiera_x.yaml")


@pytest.mark.parametrize("mode", ["full", "none"])
def test_new_token_training_modes(tiny_models, mode):
    m = BUILDER.build(model_config(tiny_models, new_token_training=mode))
    names = [n for n, p in m.named_parameters() if p.requires_grad]
    full = [n for n in names if n.endswith("embed_tokens.weight") or n.endswith("lm_head.weight")]
    assert len(full) == (2 if mode == "full" else 0)
    assert not any("trainable_tokens_delta" in n for n in names)


def test_rows_without_lora(tiny_models):
    m = BUILDER.build(model_config(tiny_models, lora=False))
    names = [n for n, p in m.named_parameters() if p.requires_grad]
    assert sum("trainable_tokens_delta" in n for n in names) == 2
    assert not any("lora_" in n for n in names)
    losses = m(_batch(m), mode="loss")
    sum(losses.values()).backward()
