"""Sharding an evaluation over processes and gathering its records.

Items are dealt round-robin (``indices[rank::world_size]``): every item is evaluated exactly once and shards
differ in size by at most one. Records are gathered to every rank with ``all_gather_object``; metrics are then
computed from the merged records, which is order-independent (see :mod:`sa2va.evaluation.metrics`), so a
distributed run reports exactly the numbers of a single process.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from mmengine import dist


def init_distributed(launcher: str) -> None:
    """Join the process group of ``launcher`` (``pytorch`` = torchrun, ``slurm``, ``mpi``): NCCL on GPUs through
    mmengine; on CPU-only machines gloo from the ``env://`` variables torchrun sets (mmengine's initialisation
    insists on a GPU)."""
    if launcher == "none":
        return
    if torch.cuda.is_available():
        dist.init_dist(launcher, backend="nccl")
    elif launcher == "pytorch":
        torch.distributed.init_process_group(backend="gloo")
    else:
        raise RuntimeError(f"--launcher {launcher} without CUDA: only 'pytorch' (torchrun) is supported on CPU")


def world_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): the given values, else those of the initialised process group, else (0, 1)."""
    if rank is None or world_size is None:
        rank, world_size = dist.get_dist_info()
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return rank, world_size


def shard(indices: Sequence[int], rank: int, world_size: int) -> list[int]:
    """This rank's share of ``indices`` (round-robin)."""
    return list(indices)[rank::world_size]


def gather_records(records: list) -> list:
    """Concatenate every rank's ``records`` (picklable objects) on every rank; a no-op without a process group."""
    if dist.get_world_size() == 1:
        return list(records)
    return [r for part in dist.all_gather_object(list(records)) for r in part]
