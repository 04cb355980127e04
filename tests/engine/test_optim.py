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


class _TiedNet(nn.Module):
    """An embedding and an output head sharing one weight (tie_word_embeddings), each with its own lr key."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.body = nn.Linear(8, 8)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(self.body(self.embed(ids)))


def test_a_tied_weight_is_optimised_once_with_its_first_modules_options():
    torch.manual_seed(0)
    model = _TiedNet()
    cfg = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-2, weight_decay=0.1, fused=True),
               paramwise_cfg=dict(custom_keys={"embed": dict(lr_mult=0.5), "head": dict(lr_mult=2.0)}),
               constructor="MergedGroupsOptimWrapperConstructor")
    wrapper = build_optim_wrapper(model, cfg)  # mmengine lists the shared weight under embed and under head
    groups = wrapper.optimizer.param_groups
    assert sorted(len(g["params"]) for g in groups) == [1, 2]  # embed(=head) x0.5 | body weight + bias
    tied = next(g for g in groups if any(p is model.embed.weight for p in g["params"]))
    assert tied["lr"] == 5e-3
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters())) == 3
    before = model.embed.weight.detach().clone()
    wrapper.update_params(model(torch.arange(10)).logsumexp(-1).mean())
    assert model.head.weight is model.embed.weight and not torch.equal(before, model.embed.weight)


class _Runner:
    """What GroupLrStepHook reads from an mmengine Runner."""

    def __init__(self, model, optim_wrapper):
        from mmengine.logging import MMLogger

        self.model, self.optim_wrapper, self.iter = model, optim_wrapper, 0
        self.logger = MMLogger.get_current_instance()


def test_group_lr_step_hook_steps_the_matched_group_once_and_the_schedule_carries_it():
    from mmengine.optim import CosineAnnealingLR

    from sa2va.engine import GroupLrStepHook

    model = _Net()
    wrapper = _wrapper(model, MergedGroupsOptimWrapperConstructor)
    scheduler = CosineAnnealingLR(wrapper.optimizer, T_max=10, eta_min=0.0, by_epoch=False)
    runner = _Runner(model, wrapper)
    hook = GroupLrStepHook(key="decoder", at_iter=4, factor=3.0)
    ratios = []
    for it in range(10):
        runner.iter = it
        hook.before_train_iter(runner, it)
        encoder, _, decoder = wrapper.optimizer.param_groups
        ratios.append(decoder["lr"] / encoder["lr"])
        wrapper.update_params(model(torch.randn(4, 4)).pow(2).mean())
        scheduler.step()
    # x0.1 of the encoder's lr before iteration 4, x0.3 from it on, through the cosine steps
    assert [round(r, 6) for r in ratios] == [0.1] * 4 + [0.3] * 6
    runner.iter = 5  # only at_iter itself steps (a run resumed later gets the stepped lr with the optimizer state)
    before = [g["lr"] for g in wrapper.optimizer.param_groups]
    hook.before_train_iter(runner, 5)
    assert [g["lr"] for g in wrapper.optimizer.param_groups] == before


def test_group_lr_step_hook_refuses_groups_it_cannot_step_alone():
    import pytest

    from sa2va.engine import GroupLrStepHook

    model = _Net()
    one_group = build_optim_wrapper(model, dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-2)))
    with pytest.raises(ValueError, match="group 0 holds parameters matching 'decoder' and others"):
        GroupLrStepHook(key="decoder", at_iter=500, factor=2.0).before_train(_Runner(model, one_group))
    split = _wrapper(model, MergedGroupsOptimWrapperConstructor)
    with pytest.raises(ValueError, match="no parameter group holds parameters matching 'sam_mask_decoder'"):
        GroupLrStepHook(key="sam_mask_decoder", at_iter=0, factor=2.0).before_train_iter(_Runner(model, split), 0)
    with pytest.raises(ValueError, match="factor > 0"):
        GroupLrStepHook(key="decoder", at_iter=3, factor=0.0)


def _toy_runner(work_dir, max_iters, resume=False):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.net = _Net()

        def forward(self, x, mode="loss"):
            return {"loss": self.net(x).pow(2).mean()}

    torch.manual_seed(0)
    data = [dict(x=torch.randn(4)) for _ in range(64)]
    return Runner(
        model=Toy(), work_dir=str(work_dir), experiment_name="lr_step",
        train_dataloader=dict(dataset=data, sampler=dict(type="DefaultSampler", shuffle=False), batch_size=4,
                              collate_fn=dict(type="default_collate")),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type="AdamW", lr=1e-2),
                           paramwise_cfg=dict(custom_keys={"decoder": dict(lr_mult=0.1)}),
                           constructor="MergedGroupsOptimWrapperConstructor"),
        param_scheduler=dict(type="CosineAnnealingLR", T_max=12, eta_min=0.0, by_epoch=False),
        custom_hooks=[dict(type="sa2va.engine.GroupLrStepHook", key="decoder", at_iter=6, factor=3.0),
                      dict(type="sa2va.engine.ResumeStateHook")],  # weights_only-loadable checkpoints
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=4, by_epoch=False)),
        resume=resume, default_scope="mmengine")


def _decoder_ratio(runner) -> float:
    lrs = {round(g["lr"], 12) for g in runner.optim_wrapper.param_groups}
    assert len(lrs) == 2, lrs  # the decoder's and everything else's
    return min(lrs) / max(lrs)


def test_group_lr_step_hook_in_a_runner_and_across_a_resume(tmp_path):
    from sa2va.engine import register_checkpoint_safe_globals  # also registers the hook and the constructor

    register_checkpoint_safe_globals()  # mmengine's checkpoints under torch's weights_only loading

    _toy_runner(tmp_path, max_iters=4).train()  # stops (and checkpoints) before the step
    before = _toy_runner(tmp_path, max_iters=12, resume=True)
    before.train()  # resumed at iteration 4: steps at 6, checkpoints at 8 and 12
    assert round(_decoder_ratio(before), 6) == 0.3
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_8.pth"))
    after = _toy_runner(tmp_path, max_iters=12, resume=True)
    after.train()  # resumed after the step: the stepped lr comes back with the optimizer state, no second step
    assert round(_decoder_ratio(after), 6) == 0.3
