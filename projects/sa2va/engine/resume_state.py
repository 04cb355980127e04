"""What a checkpoint needs beyond weights for an exact, safe resume.

* RNG states (python, numpy, torch, CUDA) of every rank, gathered by the checkpoint hook and restored by
  :class:`ResumeStateHook` once training resumes, so a resumed run draws the same random numbers as an
  uninterrupted one (point sampling, dropout).
* The message hub's ``HistoryBuffer`` objects are stored as plain tensors, so checkpoints load with
  ``torch.load(weights_only=True)``; they are rebuilt on load.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from mmengine.hooks import Hook

from ..registry import BUILDER


def rng_state_for_checkpoint() -> dict:
    """Every RNG's state as plain python values (bytes, ints, lists): picklable across ranks and readable by
    ``torch.load(weights_only=True)``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, keys.tolist(), pos, has_gauss, cached),
             "torch": torch.get_rng_state().numpy().tobytes()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu().numpy().tobytes() for s in torch.cuda.get_rng_state_all()]
    return state


def _bytes_to_state(b: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(b), dtype=torch.uint8)


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_bytes_to_state(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_bytes_to_state(b) for b in state["cuda"]])


def _buffers_to_plain(log_scalars: dict) -> dict:
    from mmengine.logging.history_buffer import HistoryBuffer

    return {k: {"__history_buffer__": True, "log": torch.from_numpy(v._log_history.astype(np.float64)),
                "count": torch.from_numpy(v._count_history.astype(np.float64)), "max_length": v.max_length}
            if isinstance(v, HistoryBuffer) else v for k, v in log_scalars.items()}


def _plain_to_buffers(log_scalars: dict) -> dict:
    from mmengine.logging.history_buffer import HistoryBuffer

    return {k: HistoryBuffer(v["log"].tolist(), v["count"].tolist(), v["max_length"])
            if isinstance(v, dict) and v.get("__history_buffer__") else v for k, v in log_scalars.items()}


@BUILDER.register_module()
class ResumeStateHook(Hook):
    """Keeps checkpoints ``weights_only``-loadable and restores the RNG states stored in them (one per rank)."""

    priority = "VERY_LOW"

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        hub = checkpoint.get("message_hub")
        if hub and "log_scalars" in hub:
            hub["log_scalars"] = _buffers_to_plain(hub["log_scalars"])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        from mmengine.dist import get_rank

        hub = checkpoint.get("message_hub")
        if hub and "log_scalars" in hub:
            hub["log_scalars"] = _plain_to_buffers(hub["log_scalars"])
        states = checkpoint.get("meta", {}).get("rng_states")
        if states:
            rank = get_rank()
            # applied by TrainLoop once the data iterator exists (mmengine re-seeds after loading)
            runner._pending_rng_state = states[rank] if rank < len(states) else states[0]
            runner.logger.info("RNG states found in the checkpoint; they are restored when training resumes")
