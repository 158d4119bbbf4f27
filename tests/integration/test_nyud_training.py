"""A short real training run on a fake NYUD-v2 folder, through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from commands import short_training_run

from demt_exp.data.example_nyud import write_fake_nyud


@pytest.mark.slow
def test_short_training_run_on_nyud(tmp_path: Path) -> None:
    root = write_fake_nyud(tmp_path / "NYUDv2", n_train=4, n_val=2, size=(60, 80))
    metrics = short_training_run(tmp_path / "run", "nyud", root, "[64,80]")
    assert set(metrics) == {"semseg", "depth", "normals", "edge"}
    assert np.isfinite(metrics["depth"]["rmse"]) and "mIoU" in metrics["semseg"]
    assert not (tmp_path / "run" / "baseline_metrics.json").exists()  # chance level only for the synthetic demo
