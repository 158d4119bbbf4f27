"""`python -m demt_exp.compare` run as a user runs it: a refused command exits 2 with one line, no traceback;
a paper preset's run beside its published row."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from commands import TINY_RUN, run_cli, run_module
from paths import REPO_ROOT


def test_the_command_line_exits_2_without_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "demt_exp.compare", str(tmp_path / "nope")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"compare: error: {tmp_path / 'nope'} does not exist (expected a run folder or a multirun folder)"
    ]


def test_a_run_of_a_paper_preset_is_shown_beside_the_published_row(tmp_path: Path) -> None:
    """A real (tiny) run of the DeMT NYUD Swin-T preset on the synthetic scenes: compare reads the preset's
    `paper` block from the run folder and puts the published row and the run's differences beside it."""
    run_dir = tmp_path / "runs" / "0"
    preset = ["experiment=demt_nyud_swin_t", "dataset=synthetic", "tasks=nyud", "model.init=random"]
    run_cli(*preset, *TINY_RUN, "trainer.steps=1", "trainer.eval_interval=1", f"hydra.run.dir={run_dir}")
    out = tmp_path / "compare"
    metrics = ["semseg/mIoU", "depth/rmse"]
    done = run_module(
        "demt_exp.compare", str(run_dir.parent), "--metrics", *metrics, "--format", "json", "--out", str(out)
    )
    paper, ours = json.loads(done.stdout)["rows"]
    assert paper["params"]["source"] == "paper: DeMT README, NYUD-v2, Swin-T" and paper["n"] == 0
    assert paper["metrics"]["semseg/mIoU"]["values"] == [46.36] and paper["metrics"]["depth/rmse"]["values"] == [0.5871]
    final = json.loads((run_dir / "metrics.json").read_text())
    assert ours["metrics"]["semseg/mIoU vs paper"]["values"] == pytest.approx([final["semseg"]["mIoU"] - 46.36])
    assert ours["metrics"]["depth/rmse vs paper"]["values"] == pytest.approx([final["depth"]["rmse"] - 0.5871])
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert [row["source"] for row in rows] == ["paper: DeMT README, NYUD-v2, Swin-T", "run"]
    assert float(rows[1]["semseg/mIoU vs paper"]) == pytest.approx(final["semseg"]["mIoU"] - 46.36)
    if importlib.util.find_spec("matplotlib"):
        assert (out / "compare.png").stat().st_size > 0
