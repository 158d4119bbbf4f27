"""Run folders: only folders holding Hydra's files alone are tidied, other ranks write to scratch, a Ctrl-C or a
mistake reaching a command is one line. The commands themselves: tests/integration/test_run_folder_commands.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from demt_exp.engine.run_folder import holds_only_hydra_files, redirect_other_ranks, remove_if_unused, run_job
from demt_exp.utils.errors import ConfigError


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
