"""The training and convert commands, run as users run them, refuse a crafted checkpoint by name and never
run its code (the loader itself: tests/unit/engine/test_checkpoint.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from commands import TINY_RUN, run_cli, run_module
from crafted_files import crafted_file


@pytest.mark.parametrize("entry", ["weights", "resume"])
def test_training_command_refuses_a_crafted_file(tmp_path: Path, entry: str) -> None:
    path, marker = crafted_file(tmp_path, wrap_as_checkpoint=entry == "resume")
    option = f"model.init={path}" if entry == "weights" else f"trainer.resume={path}"
    result = run_cli(*TINY_RUN, "trainer.steps=1", option, f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode != 0
    assert str(path) in result.stderr and "trust_checkpoints=true" in result.stderr
    assert not marker.exists()


def test_convert_command_refuses_a_crafted_file(tmp_path: Path) -> None:
    path, marker = crafted_file(tmp_path, wrap_as_checkpoint=False)
    done = run_module(
        "demt_exp.convert", "--official", str(path), "--out", str(tmp_path / "out.pt"), "encoder.dim=32", check=False
    )
    assert done.returncode != 0 and str(path) in done.stderr and "trust" in done.stderr
    assert not marker.exists() and not (tmp_path / "out.pt").exists()
