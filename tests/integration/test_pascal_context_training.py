"""A short real training run on a fake PASCAL-Context folder, through the CLI: the part index goes to
the cache, not the data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from commands import short_training_run

from demt_exp.data.example_pascal import write_fake_pascal
from demt_exp.data.pascal_context import PASCAL_TASKS


@pytest.mark.slow
def test_short_training_run_on_pascal_context(tmp_path: Path) -> None:
    root = write_fake_pascal(tmp_path / "PASCALContext", n_train=4, n_val=2)
    metrics = short_training_run(
        tmp_path / "run", "pascal_context", root, "[64,64]", env={"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    )
    assert set(metrics) == set(PASCAL_TASKS)
    assert "mIoU" in metrics["semseg"] and "mIoU" in metrics["human_parts"]
    assert not (root / "ImageSets" / "Parts").exists()
    assert list((tmp_path / "xdg" / "demt_exp" / "pascal_parts").glob("*/train.txt"))
