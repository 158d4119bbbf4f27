"""`model.init=random` in a training run: a warning, and the choice recorded in config.yaml and the history
(loading files: tests/unit/models/test_init.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from commands import TINY_RUN, run_cli
from omegaconf import OmegaConf

from demt_exp.models.init_setting import RANDOM


@pytest.mark.slow
def test_random_init_run_warns_and_records_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        *TINY_RUN,
        "dataset.train.num_samples=4",
        "trainer.steps=1",
        "trainer.eval_interval=1",
        f"hydra.run.dir={run_dir}",
    )
    assert "RANDOM weights" in result.stdout + result.stderr
    assert OmegaConf.load(run_dir / "config.yaml").model.init == RANDOM
    first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["model/init"] == RANDOM
