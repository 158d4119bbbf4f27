"""Run folders: one per job, none left by a config mistake or `--help`, and mistakes in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from demt_exp.engine.run_folder import holds_only_hydra_files, redirect_other_ranks, remove_if_unused, run_job
from demt_exp.utils.errors import ConfigError


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


def test_only_folders_holding_hydra_files_alone_are_removed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    empty_run, real_run = tmp_path / "day" / "10-00-00", tmp_path / "day" / "10-00-01"
    for run in (empty_run, real_run):
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text("a: 1\n")
        (run / "__main__.log").write_text("")
    (real_run / "metrics.jsonl").write_text('{"step": 0}\n')
    assert holds_only_hydra_files(empty_run) and not holds_only_hydra_files(real_run)
    assert not remove_if_unused(real_run) and real_run.is_dir()
    assert remove_if_unused(empty_run) and not empty_run.exists()
    assert (tmp_path / "day").is_dir()  # the parent still holds the other run
    (real_run / "metrics.jsonl").unlink()
    assert remove_if_unused(real_run) and not (tmp_path / "day").exists()  # its last run gone: the parent too
    assert tmp_path.is_dir()  # never above the working folder
    (tmp_path / ".hydra").mkdir()
    assert not remove_if_unused(tmp_path) and (tmp_path / ".hydra").is_dir()  # hydra.run.dir=. is kept


def test_ranks_above_0_put_hydra_files_in_a_scratch_folder() -> None:
    argv = ["demt_exp", "trainer.steps=2"]
    assert redirect_other_ranks(list(argv), rank=0) is None
    assert redirect_other_ranks(["demt_exp", "-m", "x=1,2"], rank=1) is None  # a sweep names its own folders
    scratch = redirect_other_ranks(argv, rank=1)
    assert scratch is not None and scratch.is_dir()
    assert argv[-2:] == [f"hydra.run.dir={scratch}", "hydra.output_subdir=null"]


def test_a_ctrl_c_reaching_a_command_is_one_line_exit_130_and_tidies_an_untouched_folder(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """What evaluate, predict and training do with a Ctrl-C that reaches their job (`run_folder.run_job`)."""
    monkeypatch.chdir(tmp_path)

    def interrupted() -> None:
        raise KeyboardInterrupt

    untouched, written = tmp_path / "untouched", tmp_path / "written"
    for folder in (untouched, written):
        (folder / ".hydra").mkdir(parents=True)
        (folder / "__main__.log").write_text("")
    (written / "edge_preds").mkdir()
    for folder in (untouched, written):
        with pytest.raises(SystemExit) as stopped:
            run_job(interrupted, folder, "; {out_dir} holds the files written so far")
        assert stopped.value.code == 130
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["aborted by Ctrl-C", f"aborted by Ctrl-C; {written} holds the files written so far"]
    assert not untouched.exists() and (written / "edge_preds").is_dir()


def test_a_user_mistake_reaching_a_command_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    def mistaken() -> None:
        raise ConfigError("eval.panels=-1; expected an integer >= 0")

    with pytest.raises(SystemExit) as stopped:
        run_job(mistaken, tmp_path / "absent")
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "error: eval.panels=-1; expected an integer >= 0\n"
