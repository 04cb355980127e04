"""MergedGroupsOptimWrapperConstructor: paramwise options in as few parameter groups as they need."""
import copy

import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper

from sa2va.engine import MergedGroupsOptimWrapperConstructor


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 8))
        self.decoder = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
        self.frozen = nn.Linear(2, 2).requires_grad_(False)

    def forward(self, x):
        return self.frozen(self.decoder(self.encoder(x)))


def _wrapper(model, constructor=None, fused=False):
    cfg = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-2, weight_decay=0.1, fused=fused),
               paramwise_cfg=dict(custom_keys={"decoder": dict(lr_mult=0.1)}, norm_decay_mult=0.0))
    if constructor is not None:
        cfg["constructor"] = constructor
    return build_optim_wrapper(model, cfg)


def _assert_same_training(model, wrapper, twin, twin_wrapper):
    """Three AdamW steps on the same data leave both models with the same weights."""
    x = torch.randn(16, 4)
    for _ in range(3):
        for m, w in ((model, wrapper), (twin, twin_wrapper)):
            w.update_params(m(x).pow(2).mean())
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_groups_merged_with_the_same_updates():
    torch.manual_seed(0)
    model = _Net()
    twin = copy.deepcopy(model)
    per_tensor = _wrapper(model)
    merged = _wrapper(twin, MergedGroupsOptimWrapperConstructor)
    assert len(per_tensor.optimizer.param_groups) == 10 # mmengine: one group per trainable tensor
    groups = merged.optimizer.param_groups
    # encoder weights+biases | LayerNorm (no decay) | decoder (lr x0.1); the frozen layer is left out
    assert [len(g["params"]) for g in groups] == [4, 2, 4]
    assert [g["lr"] for g in groups] == [1e-2, 1e-2, 1e-3]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0, 0.1]
    _assert_same_training(model, per_tensor, twin, merged)
    assert not torch.equal(model.encoder[0].weight, _Net().encoder[0].weight)


def test_fused_adamw_matches_foreach():
    torch.manual_seed(0)
    model = _Net()
    twin = copy.deepcopy(model)
    foreach = _wrapper(model, MergedGroupsOptimWrapperConstructor)
    fused = _wrapper(twin, MergedGroupsOptimWrapperConstructor, fused=True)
    _assert_same_training(model, foreach, twin, fused)
