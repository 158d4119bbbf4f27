"""Collectives that are no-ops in a single process: the one place that asks whether a process group exists.

Metrics, loss weightings and the engine all reduce across ranks; each goes through here, so a run without
`torch.distributed` (one process, or a build without it) takes the same code path with no collective.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


def in_process_group() -> bool:
    """True when this process joined a group (torchrun, SLURM tasks), so collectives have peers."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if in_process_group() else 1


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce a tensor over all processes in place with `op` ("sum", "min" or "max")."""
    if in_process_group():
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return tensor


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes in place."""
    return all_reduce_(tensor, "sum")


def mean_over_ranks_(tensors: Sequence[torch.Tensor]) -> None:
    """Average tensors over all processes in place, in ONE collective."""
    if not in_process_group() or not tensors:
        return
    if len(tensors) == 1 and tensors[0].is_contiguous():  # no staging copy
        all_reduce_sum_(tensors[0]).div_(world_size())
        return
    flat = all_reduce_sum_(torch.cat([t.reshape(-1) for t in tensors])) / world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def gather_objects(value: object) -> list[object]:
    """Every rank's value, in rank order, on every rank ([value] in a single process)."""
    if not in_process_group():
        return [value]
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_from_main(value: str) -> str:
    """Rank 0's value on every process (e.g. the run folder, whose timestamp may differ per rank)."""
    if not in_process_group():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return str(holder[0])
