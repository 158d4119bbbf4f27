"""Preemption: a signal becomes "finish this step, checkpoint, then exit or requeue".

SLURM sends SIGUSR1/SIGUSR2 before a time limit (`--signal`, submitit's `signal_delay_s`) and
SIGTERM on preemption, `scancel` or `scontrol requeue`. The handler only records the signal;
the loop polls it once per step, and every rank takes the maximum over all ranks, so all stop
after the same step and none is left waiting in a collective. After the checkpoint, a USR
signal is handed to the handler that was installed before ours (submitit's, which resubmits
the job and exits on global rank 0); with no such handler on SLURM, rank 0 runs
`scontrol requeue` itself. SIGTERM just exits: SLURM requeues a preempted or requeued job.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger("demt_exp")

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


class StopRequested(Exception):
    """Raised by the loop after the checkpoint of a signalled stop, carrying the signal."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"stopped after step {step} on {signal.Signals(signum).name}")
        self.signum = signum
        self.step = step


class SignalWatch:
    """Records the first stop signal; restores the previous handlers on `close`."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.received = 0
        self.previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may install handlers; a library caller keeps its own
        for signum in signals:
            self.previous[signum] = signal.signal(signum, self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if not self.received:
            self.received = signum
            log.warning("received %s: stopping after this step with a checkpoint", signal.Signals(signum).name)

    def agreed(self, device: torch.device) -> int:
        """The signal any rank received (0 if none), the same on every rank."""
        if not (dist.is_available() and dist.is_initialized()):
            return self.received
        flag = torch.tensor([self.received], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def close(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}


def requeue_or_exit(signum: int, previous_handler: Any, is_main: bool) -> None:
    """What a job does after its signalled checkpoint: requeue (USR signals on SLURM), then exit."""
    if signum in REQUEUE_SIGNALS:
        if callable(previous_handler):  # submitit: resubmits on global rank 0 and exits there
            previous_handler(signum, None)
        elif is_main and os.environ.get("SLURM_JOB_ID"):
            job = os.environ.get("SLURM_ARRAY_JOB_ID") and (
                f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}")
            job = job or os.environ["SLURM_JOB_ID"]
            subprocess.run(["scontrol", "requeue", job], check=False, timeout=60)
            log.info("requeued SLURM job %s", job)
    sys.exit(128 + signum)
