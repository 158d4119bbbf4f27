"""Process-group set-up: one process, torchrun, or SLURM tasks (srun, submitit).

torchrun describes a process by RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; a
SLURM job step with several tasks (srun, or submitit's `tasks_per_node`) by SLURM_PROCID /
SLURM_STEP_NUM_TASKS / SLURM_LOCALID and its node list; submitit's local executor by its
SUBMITIT_LOCAL_* variables. Either way every process joins the same
group, so `nodes=2` in the launcher config is all a multi-node run needs. The group has a
timeout: a rank that dies makes the others fail within it instead of waiting forever.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from demt_exp.engine.launch_env import launcher_environment
from demt_exp.utils.collectives import in_process_group


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job and which device it drives."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str, local_rank: int) -> torch.device:
    """`auto` takes this process's GPU when there is one, else the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("trainer.device=cuda but no CUDA device is visible")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if requested != "cpu":
        raise ValueError(f"trainer.device={requested!r}; expected auto, cuda or cpu")
    return torch.device("cpu")


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group that torchrun or SLURM describes, or run as a single process."""
    os.environ.update(launcher_environment(dict(os.environ)))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    info = DistInfo(rank, world_size, local_rank, pick_device(device, local_rank))
    if world_size > 1 and not in_process_group():
        backend = "nccl" if info.device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s))
    return info


def cleanup() -> None:
    """Leave the process group if one was joined."""
    if in_process_group():
        dist.destroy_process_group()


def wrap_distributed(model: nn.Module, info: DistInfo, find_unused_parameters: bool) -> nn.Module:
    """DDP around the model when several processes run; the bare model otherwise."""
    if not info.is_distributed:
        return model
    device_ids = [info.local_rank] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
