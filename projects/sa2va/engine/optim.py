"""Optimizer construction (mmengine's paramwise options without one parameter group per tensor) and a one-off
learning-rate step for the parameter groups of one part of the model."""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

from ..registry import BUILDER


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class MergedGroupsOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """:class:`~mmengine.optim.DefaultOptimWrapperConstructor` whose ``paramwise_cfg`` groups are merged.

    With a ``paramwise_cfg`` (``custom_keys={'sam_mask_decoder': dict(lr_mult=0.1)}``) mmengine puts every
    parameter in a group of its own. The optimizer then runs once per group: torch's foreach AdamW dispatches ~12
    ops per group, so a model of 337 trainable tensors dispatches ~4 k optimizer ops per step (a learning-proof
    segmentation step on an H100: 8490 ops, 4450 with merged groups and fused AdamW; ``benchmarks/step_ops.py``),
    which bounds a small model's step by the host. Here groups with identical options (lr, weight decay, ...)
    become one group, in order of first appearance: the updates are the same, the learning-rate schedulers act
    on each group's ``lr`` as before.

    A tensor shared by two modules (an lm_head tied to the input embedding, ``tie_word_embeddings=True``) is
    listed by mmengine once per module, which torch's optimizers refuse ("some parameters appear in more than one
    parameter group"); it is kept once, with the options of its first module (``named_parameters()``' order,
    i.e. the embedding's).

    An optimizer state saved with per-tensor groups does not load into merged groups (the group count differs).
    """

    def add_params(self, params: list[dict], module, prefix: str = "", **kwargs) -> None:
        if prefix:  # mmengine recurses into the children: leave that to it
            return super().add_params(params, module, prefix=prefix, **kwargs)
        per_tensor: list[dict] = []
        super().add_params(per_tensor, module, prefix=prefix, **kwargs)
        merged: dict[tuple, dict] = {}
        seen: set[int] = set()
        shared = 0  # tensors listed again under a second module
        for group in per_tensor:
            options = tuple(sorted((k, v) for k, v in group.items() if k != "params"))
            kept = [p for p in group["params"] if id(p) not in seen]
            seen.update(id(p) for p in kept)
            shared += len(group["params"]) - len(kept)
            if kept:
                merged.setdefault(options, {**dict(options), "params": []})["params"].extend(kept)
        params.extend(merged.values())
        MMLogger.get_current_instance().info(
            f"optimizer: {len(seen)} parameter tensors in {len(merged)} groups "
            f"({', '.join(str(len(g['params'])) for g in merged.values())} tensors)"
            + (f"; {shared} listed twice (shared by two modules) kept once" if shared else ""))


@BUILDER.register_module()
class GroupLrStepHook(Hook):
    """Multiply the learning rate of the parameter groups that hold the parameters named ``*key*`` by ``factor``,
    once, before iteration ``at_iter`` (0-based, i.e. ``runner.iter``).

    For a part of the model that should start slower than the rest and catch up later, e.g. the learning proof's
    SAM2 mask decoder (``paramwise_cfg`` lr x0.1 from the start, x0.3 from iteration 1000: see
    ``configs/sa2va_learning_proof.py``). mmengine's schedulers (``LinearLR``, ``CosineAnnealingLR``, ...) update
    each group's current ``lr`` multiplicatively, so the step carries through the rest of the schedule. A resumed
    run gets the stepped ``lr`` back with the optimizer state; the hook steps only at ``at_iter`` itself.

    Every parameter of a matched group must match ``key`` (a group that also holds other parameters would step
    them too): give the part its own group with a ``paramwise_cfg`` ``custom_keys`` entry. The groups are checked
    when training starts. The groups are found by their parameters, so the hook works with mmengine's
    ``OptimWrapper`` / ``AmpOptimWrapper``, not under DeepSpeed ZeRO (whose optimizer holds flattened partitions).
    """

    def __init__(self, key: str, at_iter: int, factor: float):
        if at_iter < 0 or factor <= 0:
            raise ValueError(f"GroupLrStepHook: need at_iter >= 0 and factor > 0, got at_iter={at_iter}, "
                             f"factor={factor}")
        self.key, self.at_iter, self.factor = key, int(at_iter), float(factor)

    def matched_groups(self, model, param_groups: list[dict]) -> list[dict]:
        names = {id(p): n for n, p in model.named_parameters()}
        matched = []
        for i, group in enumerate(param_groups):
            hits = [self.key in names.get(id(p), "") for p in group["params"]]
            if not any(hits):
                continue
            if not all(hits):
                other = next(names.get(id(p), "?") for p, h in zip(group["params"], hits) if not h)
                raise ValueError(f"GroupLrStepHook: parameter group {i} holds parameters matching {self.key!r} and "
                                 f"others (e.g. {other}); give {self.key!r} its own group (paramwise_cfg custom_keys)")
            matched.append(group)
        if not matched:
            raise ValueError(f"GroupLrStepHook: no parameter group holds parameters matching {self.key!r} (under "
                             f"DeepSpeed ZeRO the groups hold flattened partitions: use mmengine's OptimWrapper)")
        return matched

    def before_train(self, runner):
        self.matched_groups(runner.model, runner.optim_wrapper.param_groups)  # a wrong setup fails now, not later

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter != self.at_iter:
            return
        for group in self.matched_groups(runner.model, runner.optim_wrapper.param_groups):
            group["lr"] *= self.factor
        runner.logger.info(f"GroupLrStepHook: learning rate of the {self.key!r} parameters x{self.factor:g} from "
                           f"iteration {self.at_iter + 1}")
