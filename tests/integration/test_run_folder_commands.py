"""Run folders, as users run the command: none left by a config mistake or `--help`, and mistakes in one line
(the tidying itself: tests/unit/engine/test_run_folder.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m demt_exp ARGS` in `cwd`, where Hydra's default `outputs/<date>/<time>` would go (with a valid
    OMP_NUM_THREADS: an invalid one makes libgomp print a warning of its own on stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "demt_exp", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_config_mistake_is_one_line_exit_2_and_leaves_no_folder(tmp_path: Path) -> None:
    result = command("trainer.steps=-1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "error: trainer.steps=-1; expected an integer >= 1\n"
    assert list(tmp_path.iterdir()) == []  # Hydra's outputs/<date>/<time> was removed, and its empty parents


def test_a_key_or_option_hydra_cannot_compose_exits_2_naming_what_exists(tmp_path: Path) -> None:
    unknown_key = command("trainer.stepz=3", cwd=tmp_path)
    assert unknown_key.returncode == 2 and "Traceback" not in unknown_key.stderr
    assert "unknown key 'trainer.stepz'; valid keys of 'trainer': activation_checkpointing," in unknown_key.stderr
    unknown_option = command("backbone=swin_x", cwd=tmp_path)
    assert unknown_option.returncode == 2 and "Traceback" not in unknown_option.stderr
    assert "swin_t" in unknown_option.stderr  # Hydra lists the options of the group
    assert list(tmp_path.iterdir()) == []


def test_a_missing_resume_file_is_one_line_and_keeps_no_folder(tmp_path: Path) -> None:
    result = command("trainer.resume=true", "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        f"error: checkpoint {tmp_path / 'run' / 'checkpoints' / 'last.pt'} does not exist "
        f"(trainer.resume=true continues the checkpoint of this run folder; hydra.run.dir names "
        f"the folder)\n"
    )
    assert not (tmp_path / "run").exists()


def test_help_writes_no_folder(tmp_path: Path) -> None:
    result = command("--help", cwd=tmp_path)
    assert result.returncode == 0 and "trainer" in result.stdout
    assert list(tmp_path.iterdir()) == []
