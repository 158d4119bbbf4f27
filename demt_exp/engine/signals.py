"""Preemption and Ctrl-C: a signal becomes "finish this step, checkpoint, then exit or requeue".

SLURM sends SIGUSR1/SIGUSR2 before a time limit (`--signal`, submitit's `signal_delay_s`) and
SIGTERM on preemption, `scancel` or `scontrol requeue`. The handler only records the signal;
the loop polls it once per step, and every rank takes the maximum over all ranks, so all stop
after the same step and none is left waiting in a collective. After the checkpoint, a USR
signal is handed to the handler that was installed before ours (submitit's, which resubmits
the job and exits on global rank 0); with no such handler on SLURM, rank 0 runs
`scontrol requeue` itself. SIGTERM just exits: SLURM requeues a preempted or requeued job.

Ctrl-C (SIGINT) is a stop signal too: the first finishes the step and saves; a second one
aborts at once (KeyboardInterrupt; the last checkpoint on disk stays whole, since every save is
atomic). A second SIGINT within `SIGINT_REPEAT_S` of the first is the same keypress seen twice
(torchrun forwards the terminal's SIGINT to workers that already got it) and is ignored.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger("demt_exp")

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
SIGINT_REPEAT_S = 1.0


class StopRequested(Exception):
    """Raised by the loop after the checkpoint of a signalled stop, carrying the signal; its message
    is the one line that says how the run continues."""

    def __init__(self, signum: int, step: int, run_dir: Path, checkpoint: Path | None) -> None:
        how = (
            f"checkpoint {checkpoint}; the same command with hydra.run.dir={run_dir} continues from it"
            if checkpoint
            else f"no checkpoint (trainer.checkpoint.keep_last=0), so {run_dir} starts again from step 0 when run again"
        )
        super().__init__(f"stopped after step {step} on {signal.Signals(signum).name}: {how}")
        self.signum = signum
        self.step = step


class SignalWatch:
    """Records the first stop signal; a second Ctrl-C aborts; restores the previous handlers on `close`."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.received = 0
        self.received_at = 0.0
        self.previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may install handlers; a library caller keeps its own
        for signum in signals:
            self.previous[signum] = signal.signal(signum, self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if not self.received:
            self.received, self.received_at = signum, time.monotonic()
            hint = " (Ctrl-C again to abort at once)" if signum == signal.SIGINT else ""
            log.warning("received %s: stopping after this step with a checkpoint%s", signal.Signals(signum).name, hint)
        elif signum == signal.SIGINT and time.monotonic() - self.received_at > SIGINT_REPEAT_S:
            raise KeyboardInterrupt

    def close(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}


def ignore_interrupt(worker_id: int) -> None:
    """Loader workers' init: Ctrl-C reaches the whole foreground process group, and a worker that died of it
    would fail the step the main process is finishing before its checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def requeue_or_exit(signum: int, previous_handler: Any, is_main: bool) -> None:
    """What a job does after its signalled checkpoint: requeue (USR signals on SLURM), then exit."""
    if signum in REQUEUE_SIGNALS:
        if callable(previous_handler):  # submitit: resubmits on global rank 0 and exits there
            previous_handler(signum, None)
        elif is_main and os.environ.get("SLURM_JOB_ID"):
            job = os.environ.get("SLURM_ARRAY_JOB_ID") and (
                f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
            )
            job = job or os.environ["SLURM_JOB_ID"]
            subprocess.run(["scontrol", "requeue", job], check=False, timeout=60)
            log.info("requeued SLURM job %s", job)
    sys.exit(128 + signum)
