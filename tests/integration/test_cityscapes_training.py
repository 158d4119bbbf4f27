"""A short real training run on a fake Cityscapes folder, through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from commands import short_training_run
from fake_cityscapes import write_fake_cityscapes


@pytest.mark.slow
def test_short_training_run_on_cityscapes(tmp_path: Path) -> None:
    root = write_fake_cityscapes(tmp_path / "cityscapes", per_city=2)
    metrics = short_training_run(tmp_path / "run", "cityscapes", root, "[64,64]")
    assert set(metrics) == {"semseg", "depth"}
    assert "mIoU" in metrics["semseg"] and np.isfinite(metrics["depth"]["rmse"])
