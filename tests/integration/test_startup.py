"""Every command answers `--help` (and training a config mistake) before torch, timm, scipy or matplotlib
load: the heavy libraries are imported only inside the functions that need them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO_ROOT

REPO = REPO_ROOT
HEAVY = {"torch", "timm", "scipy", "matplotlib"}

# command line -> (exit code, texts its output shows, a module of the command's own that must have loaded)
COMMANDS = {
    ("demt_exp", "--help"): (0, ["trainer:", "optimizer:"], "demt_exp.engine.run_folder"),
    ("demt_exp", "trainer.steps=-1"): (
        2,
        ["error: trainer.steps=-1; expected an integer >= 1"],
        "demt_exp.config.checks",
    ),
    ("demt_exp.evaluate", "--help"): (0, ["checkpoint"], "demt_exp.config.stored"),
    ("demt_exp.predict", "--help"): (0, ["checkpoint"], "demt_exp.config.stored"),
    ("demt_exp.convert", "--help"): (0, ["--official"], "demt_exp.utils.errors"),
    ("demt_exp.compare", "--help"): (0, ["--metrics TASK/METRIC", "--format"], "demt_exp.results.table"),
    ("demt_exp.report", "--help"): (0, ["presets"], "demt_exp.config.compose"),
}


@pytest.mark.parametrize("command", list(COMMANDS), ids=" ".join)
def test_the_command_answers_without_the_heavy_libraries(command: tuple[str, ...], tmp_path: Path) -> None:
    code, texts, own = COMMANDS[command]
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", *command], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    assert done.returncode == code, output[-3000:]
    for text in texts:
        assert text in output, (text, output[-3000:])
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert own in imported  # the command's own modules were loaded (and timed)
    assert {name for name in imported if name.split(".")[0] in HEAVY} == set()
    assert list(tmp_path.iterdir()) == []  # and no run folder was left behind
