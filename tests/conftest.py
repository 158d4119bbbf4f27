"""Shared fixtures: composing the project's Hydra config without running the app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from ci_skips import pytest_runtest_makereport  # noqa: F401  (hook: no silent skips under CI=true)
from omegaconf import DictConfig

from demt_exp.config import compose_config

REPO_ROOT = Path(__file__).resolve().parent.parent

# Overrides that shrink the default job to seconds: tiny images, few samples, a narrow head.
TINY_RUN = [
    "dataset.image_size=[32,32]",
    "dataset.val.num_samples=4",
    "encoder.dim=32",
    "trainer.batch_size=4",
    "logger.progress_bar=false",
]


@pytest.fixture
def compose() -> Callable[[list[str]], DictConfig]:
    """compose(overrides) -> the config `python -m demt_exp <overrides>` would run with."""

    return compose_config


def run_cli(*overrides: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m demt_exp <overrides>` from the repository root, as a user runs it."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    result = subprocess.run([sys.executable, "-m", "demt_exp", *overrides], cwd=REPO_ROOT, env=full_env,
                            capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def short_training_run(run_dir: Path, dataset: str, root: Path, image_size: str,
                       env: dict[str, str] | None = None) -> dict[str, Any]:
    """Two steps and one evaluation of a real data set through the CLI; returns metrics.json."""
    run_cli(f"dataset={dataset}", f"dataset.root={root}", "trainer.steps=2", "trainer.batch_size=2",
            "trainer.eval_interval=2", "encoder.dim=32", f"dataset.image_size={image_size}",
            "logger.progress_bar=false", f"hydra.run.dir={run_dir}", env=env)
    return json.loads((run_dir / "metrics.json").read_text())
