"""Checkpoints that are either complete or invisible, and ``--resume auto`` that only picks complete ones.

A checkpoint is written under a temporary name, renamed into place (atomic on one filesystem), and only then a
``<name>.complete`` marker records its size(s). :func:`find_resumable_checkpoint` returns the newest checkpoint whose
marker matches what is on disk, so a crash (or SIGKILL) mid-write, or a later truncation, never yields a checkpoint
that looks complete.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import re
import shutil

import torch
from mmengine.dist import all_gather_object, barrier, is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.logging import MMLogger

from ..registry import BUILDER
from .resume_state import rng_state_for_checkpoint

_CKPT_RE = re.compile(r"^iter_(\d+)\.pth$")


def _sizes(path: str) -> dict[str, int]:
    """{relative path: size} of a checkpoint file or directory (DeepSpeed writes directories)."""
    if osp.isfile(path):
        return {".": osp.getsize(path)}
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = osp.join(root, f)
            out[osp.relpath(p, path)] = osp.getsize(p)
    return out


def _marker(path: str) -> str:
    return path + ".complete"


def write_marker(path: str, step: int) -> None:
    tmp = _marker(path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"iter": step, "sizes": _sizes(path)}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, _marker(path))


def is_complete(path: str) -> bool:
    try:
        with open(_marker(path)) as f:
            recorded = json.load(f)["sizes"]
    except (OSError, ValueError, KeyError):
        return False
    return osp.exists(path) and _sizes(path) == recorded


def find_resumable_checkpoint(work_dir: str) -> str | None:
    """Newest complete ``iter_N.pth`` (file or DeepSpeed directory) in ``work_dir``, or None."""
    if not osp.isdir(work_dir):
        return None
    found = sorted(((int(m.group(1)), n) for n in os.listdir(work_dir) if (m := _CKPT_RE.match(n))), reverse=True)
    logger = MMLogger.get_current_instance()
    for _, name in found:
        path = osp.join(work_dir, name)
        if is_complete(path):
            return path
        logger.warning(f"skipping incomplete checkpoint {path} (no matching .complete marker)")
    return None


def _remove(path: str) -> None:
    if osp.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif osp.exists(path):
        os.remove(path)
    if osp.exists(_marker(path)):
        os.remove(_marker(path))


@BUILDER.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine ``CheckpointHook`` (same arguments) with atomic writes and completion markers.

    Saves by iteration as ``iter_N.pth``; keeps the last ``max_keep_ckpts``; always saves at the end of training.
    """

    def __init__(self, interval: int = 1000, max_keep_ckpts: int = 2, save_optimizer: bool = True,
                 save_last: bool = True, **kwargs):
        kwargs.setdefault("by_epoch", False)
        super().__init__(interval=interval, max_keep_ckpts=max_keep_ckpts, save_optimizer=save_optimizer,
                         save_last=save_last, **kwargs)

    def _save_checkpoint_with_step(self, runner, step, meta):
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                old = self.keep_ckpt_ids.popleft()
                if is_main_process():
                    _remove(osp.join(self.out_dir, self.filename_tmpl.format(old)))
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))

        name = self.filename_tmpl.format(step)
        final = osp.join(self.out_dir, name)
        tmp_name = f".tmp-{name}"
        if is_main_process():
            _remove(osp.join(self.out_dir, tmp_name))
        # RNG states of every rank (a collective, so here and not in a hook that only rank 0 runs)
        meta = dict(meta or {}, rng_states=all_gather_object(rng_state_for_checkpoint()))
        barrier()
        runner.save_checkpoint(self.out_dir, tmp_name, save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch)
        barrier()  # every rank has written its shard
        self.last_ckpt = final
        runner.message_hub.update_info("last_ckpt", final)
        if is_main_process():
            _remove(final)
            os.replace(osp.join(self.out_dir, tmp_name), final)
            write_marker(final, step)
            with open(osp.join(runner.work_dir, "last_checkpoint"), "w") as f:
                f.write(final)
            runner.logger.info(f"checkpoint complete: {final}")
        barrier()


def register_checkpoint_safe_globals() -> None:
    """Let ``torch.load(weights_only=True)`` read mmengine checkpoints: the message hub's ``HistoryBuffer`` and the
    numpy scalars/arrays/dtypes that logged values and RNG states carry."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    safe = [HistoryBuffer, np.ndarray, np.dtype]
    safe += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    core = getattr(np, "_core", None) or getattr(np, "core")
    safe += [core.multiarray._reconstruct, core.multiarray.scalar]
    torch.serialization.add_safe_globals(safe)
