"""Running the commands as a user does (`python -m demt_exp ...` from the repository root), and reading what
their runs leave behind. TINY_RUN is the one place that chooses the small configuration end-to-end tests
train: the same code path as the default job, at a size that takes seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from paths import REPO_ROOT
from warm_python import warm_server

# Overrides that shrink the default job to seconds: tiny images, few samples, a narrow head.
# A Swin of the default job's code path (four stages, a shifted block in each) at 1/50 of Swin-T's weights.
SMALL_SWIN = ["+backbone.embed_dim=16", "+backbone.depths=[2,2,2,2]", "+backbone.num_heads=[1,2,2,4]"]
TINY_RUN = [
    *SMALL_SWIN,
    "dataset.image_size=[32,32]",
    "dataset.val.num_samples=4",
    "encoder.dim=32",
    "trainer.batch_size=4",
    "logger.progress_bar=false",
    "trainer.checkpoint.save_optimizer=true",  # exact resume (the synthetic demo alone saves weights only by default)
]


def run_cli(*overrides: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m demt_exp <overrides>` from the repository root, as a user runs it."""
    return run_module("demt_exp", *overrides, check=check, env=env)


def run_module(
    module: str, *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` from the repository root, in this worker's warm interpreter where it may
    (warm_python.py: the same command without the ~4.5 s of imports), else in a fresh one."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    cmd = [sys.executable, "-m", module, *args]
    server = warm_server(REPO_ROOT)
    if server is not None and server.serves(full_env, REPO_ROOT):
        with tempfile.TemporaryDirectory(prefix="command-output-") as output:
            result = server.run(cmd, full_env, Path(output), timeout)
    else:
        result = subprocess.run(cmd, cwd=REPO_ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def start_cli(*overrides: str, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    """`python -m demt_exp <overrides>` in the background (to signal or kill it mid-run)."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    output = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - owned by the child process
    return subprocess.Popen(
        [sys.executable, "-m", "demt_exp", *overrides],
        cwd=REPO_ROOT,
        env=full_env,
        stdout=output,
        stderr=subprocess.STDOUT,
    )


def logged_steps(run_dir: Path, key: str = "train/loss") -> list[int]:
    """Steps of the history records that hold `key` (a partial last line is not a record yet)."""
    path = run_dir / "metrics.jsonl"
    steps = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if key in record:
            steps.append(int(record["step"]))
    return steps


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting until {what}")


def final_weights(run_dir: Path) -> dict[str, Any]:
    """The model tensors of a run folder's last checkpoint."""
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def assert_bit_identical(first: dict[str, Any], second: dict[str, Any]) -> None:
    assert first.keys() == second.keys()
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:5]}"


def short_training_run(
    run_dir: Path, dataset: str, root: Path, image_size: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Two steps and one evaluation of a real data set through the CLI; returns metrics.json."""
    run_cli(
        *SMALL_SWIN,
        f"dataset={dataset}",
        f"dataset.root={root}",
        "trainer.steps=2",
        "trainer.batch_size=2",
        "trainer.eval_interval=2",
        "encoder.dim=32",
        f"dataset.image_size={image_size}",
        "logger.progress_bar=false",
        f"hydra.run.dir={run_dir}",
        env=env,
    )
    return json.loads((run_dir / "metrics.json").read_text())
