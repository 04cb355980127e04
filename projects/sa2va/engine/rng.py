"""Save and restore every random number generator with each checkpoint, so a resumed run draws the same
random numbers (point sampling, dropout, data augmentation in the main process) as an uninterrupted one."""
from __future__ import annotations

import random

import numpy as np
import torch
from mmengine.hooks import Hook

from ..registry import BUILDER


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def rng_state_for_checkpoint() -> dict:
    return _plain(rng_state())


def _plain(obj):
    """numpy state -> plain python/tensors so torch.load(weights_only=True) reads it."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, tuple):
        return tuple(_plain(o) for o in obj)
    if isinstance(obj, list):
        return [_plain(o) for o in obj]
    return obj


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(tuple(s) if isinstance(s, list) else s for s in state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@BUILDER.register_module()
class RNGStateHook(Hook):
    """Restore the RNG states that :class:`AtomicCheckpointHook` stored (one per rank) in the checkpoint."""

    priority = "VERY_LOW"

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        from mmengine.dist import get_rank

        states = checkpoint.get("meta", {}).get("rng_states")
        if states:
            rank = get_rank()
            # applied by TrainLoop once the data iterator exists (mmengine re-seeds after loading)
            runner._pending_rng_state = states[rank] if rank < len(states) else states[0]
            runner.logger.info("RNG states found in the checkpoint; they are restored when training resumes")
