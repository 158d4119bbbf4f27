"""Trackers in-process: the logger=jsonl|default|none|wandb options, and the W&B run a stop or a failure
leaves (offline, read back from its files). (Training runs with them: integration/test_tracking_runs.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from demt_exp.engine.signals import StopRequested
from demt_exp.tracking import Tracker, finish_open
from demt_exp.tracking.wandb_file import read_wandb_run, run_files

# No WANDB_MODE: offline must be the default. An unreachable server in case anything tried to upload.
OFFLINE = {"WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_SILENT": "true"}


def test_logger_options_compose_with_default_as_the_jsonl_alias(compose) -> None:
    assert compose([]).logger == compose(["logger=jsonl"]).logger == compose(["logger=default"]).logger
    assert compose(["logger=none"]).logger.history is False
    assert compose(["logger=wandb"]).logger.wandb.mode is None  # offline unless configured


@pytest.mark.slow
def test_a_signalled_stop_marks_the_wandb_run_preempting_and_a_failure_fails_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    stopped = StopRequested(10, 3, tmp_path / "stopped", None)
    for folder, error in (("stopped", stopped), ("failed", RuntimeError("boom"))):
        tracker = Tracker(tmp_path / folder, True, wandb_settings={"panels": 0}, config={"a": 1})
        tracker.start()
        tracker.log(3, {"train/loss": 0.5})
        with pytest.raises(type(error)):
            try:
                raise error
            finally:
                finish_open(stopped=folder == "stopped")
        run = read_wandb_run(run_files(tmp_path / folder)[0])
        assert run.history and run.history[-1]["train/loss"] == 0.5, (folder, run.kinds)
        assert run.config["a"] == 1
        if folder == "stopped":
            assert "preempting" in run.kinds and run.exit_code == 0
        else:
            assert "preempting" not in run.kinds and run.exit_code == 1
