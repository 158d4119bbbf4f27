"""Which process of a launch this is, from the environment alone (torchrun, SLURM job steps, submitit).

Kept free of torch so a command can know its rank before anything heavy is imported (e.g. to
give every rank of a job the same run folder).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: `node[03-05,9],gpu1` -> `node03`."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise ValueError(f"cannot read the SLURM node list {nodelist!r}")
    prefix, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def _port_for(job_id: str) -> str:
    """A port every task of one job derives alike, different between concurrent jobs."""
    return str(20000 + int(re.sub(r"\D", "", job_id) or 0) % 40000)


def launcher_environment(env: Mapping[str, str]) -> dict[str, str]:
    """torchrun's variables for a task of a multi-task SLURM job step or submitit local job ({} else).

    Only job steps (srun) have SLURM_STEP_NUM_TASKS; the batch script itself is one process even
    when the job asked for several tasks, so it runs alone."""
    if "RANK" in env:
        return {}
    if int(env.get("SUBMITIT_LOCAL_NTASKS", "1")) > 1:
        return {
            "RANK": env["SUBMITIT_LOCAL_GLOBALID"],
            "WORLD_SIZE": env["SUBMITIT_LOCAL_NTASKS"],
            "LOCAL_RANK": env.get("SUBMITIT_LOCAL_LOCALID", "0"),
            "MASTER_ADDR": env.get("MASTER_ADDR", "127.0.0.1"),
            "MASTER_PORT": env.get("MASTER_PORT") or _port_for(env.get("SUBMITIT_LOCAL_JOB_ID", "0")),
        }
    if int(env.get("SLURM_STEP_NUM_TASKS", "1")) <= 1:
        return {}
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
    port = env.get("MASTER_PORT") or _port_for(env.get("SLURM_JOB_ID", "0"))
    return {
        "RANK": env["SLURM_PROCID"],
        "WORLD_SIZE": env["SLURM_STEP_NUM_TASKS"],
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": env.get("MASTER_ADDR") or first_host(nodes),
        "MASTER_PORT": port,
    }


def launch_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's global rank in a multi-process launch (0 for a single process)."""
    env = dict(os.environ if env is None else env)
    return int({**env, **launcher_environment(env)}.get("RANK", "0"))
