"""Meta SAM2 checkpoints: SAM 2.0 and 2.1 each load with their own config; a mismatch names both."""
import pytest
import torch

from sa2va.models import SAM2TrainRunner
from sa2va.models.sam2_runner import instantiate_sam2

# What SAM 2.1 configs add over 2.0 that changes the weights: a spatial no-object embedding and a projection of the
# temporal encoding of object pointers (sam2.1_hiera_*.yaml in Meta's sam2 package).
SAM2_1_OVERRIDES = ["++model.no_obj_embed_spatial=true", "++model.proj_tpos_enc_in_obj_ptrs=true",
                    "++model.use_signed_tpos_enc_to_obj_ptrs=true", "++model.add_tpos_enc_to_obj_ptrs=true"]
SAM2_1_ONLY_KEYS = {"no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias"}


@pytest.fixture(scope="module")
def tiny_2_1_ckpt(tiny_models, tmp_path_factory):
    torch.manual_seed(0)
    model = instantiate_sam2(tiny_models["sam2_cfg"], SAM2_1_OVERRIDES)
    path = tmp_path_factory.mktemp("sam2_1") / "sam2.1_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def test_meta_configs_differ_by_these_keys():
    v20 = set(instantiate_sam2("sam2_hiera_t.yaml").state_dict())
    v21 = set(instantiate_sam2("sam2.1_hiera_t.yaml").state_dict())
    assert v21 - v20 == SAM2_1_ONLY_KEYS and not v20 - v21


def test_each_version_loads_with_its_config(tiny_models, tiny_2_1_ckpt):
    SAM2TrainRunner(tiny_models["sam2_cfg"], tiny_models["sam2_ckpt"])
    r = SAM2TrainRunner(tiny_models["sam2_cfg"], str(tiny_2_1_ckpt), hydra_overrides=SAM2_1_OVERRIDES)
    saved = torch.load(tiny_2_1_ckpt, weights_only=True)["model"]
    assert torch.equal(r.sam2_model.no_obj_embed_spatial, saved["no_obj_embed_spatial"])


def test_2_1_config_refuses_2_0_checkpoint(tiny_models):
    with pytest.raises(RuntimeError) as e:
        SAM2TrainRunner(tiny_models["sam2_cfg"], tiny_models["sam2_ckpt"], hydra_overrides=SAM2_1_OVERRIDES)
    msg = str(e.value)
    assert tiny_models["sam2_ckpt"] in msg and tiny_models["sam2_cfg"] in msg
    assert "missing in checkpoint (3)" in msg and all(k in msg for k in SAM2_1_ONLY_KEYS)
    assert "sam2.1_hiera_*.yaml" in msg


def test_2_0_config_refuses_2_1_checkpoint(tiny_models, tiny_2_1_ckpt):
    with pytest.raises(RuntimeError) as e:
        SAM2TrainRunner(tiny_models["sam2_cfg"], str(tiny_2_1_ckpt))
    msg = str(e.value)
    assert str(tiny_2_1_ckpt) in msg and tiny_models["sam2_cfg"] in msg
    assert "unexpected in checkpoint (3)" in msg and all(k in msg for k in SAM2_1_ONLY_KEYS)


def test_safetensors_sam2_weights(tiny_models, tmp_path):
    """Exported directories keep SAM2 as a safetensors file of the Meta state dict; it loads the same way."""
    from safetensors.torch import save_file

    sd = torch.load(tiny_models["sam2_ckpt"], weights_only=True)["model"]
    path = tmp_path / "sam2.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    r = SAM2TrainRunner(tiny_models["sam2_cfg"], str(path))
    for k, v in r.sam2_model.state_dict().items():
        assert torch.equal(v, sd[k]), k
