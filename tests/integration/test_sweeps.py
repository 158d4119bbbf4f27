"""Ready ablations (`+sweep=NAME` from sweeps/) and the compare command on a tiny real sweep."""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from commands import TINY_RUN
from omegaconf import DictConfig, OmegaConf
from paths import REPO_ROOT

from demt_exp.compare import main as compare_main
from demt_exp.config.compose import SWEEPS_DIR, compose_config
from demt_exp.models.model import build_model

SEARCHER = "hydra_plugins.demt_exp_search.continued_optuna.ContinuedOptunaSweeper"


def sweeper_of(name: str) -> DictConfig:
    return compose_config(["experiment=demt_nyud_swin_t", f"+sweep={name}"], return_hydra_config=True).hydra.sweeper


ALL = sorted(p.stem for p in (Path(SWEEPS_DIR) / "sweep").glob("*.yaml"))
SEARCHES = [name for name in ALL if sweeper_of(name).get("_target_") == SEARCHER]  # Optuna, not a grid
SWEEPS = [name for name in ALL if name not in SEARCHES]
EXPECTED = {
    "encoder_decoder",
    "backbone_scaling",
    "attention",
    "mixer_depth",
    "loss_weights",
    "seeds",
    "single_task_nyud",
    "single_task_pascal",
}


def sweep_jobs(name: str, base: list[str]) -> list[list[str]]:
    """The overrides of every job of `+sweep=name`, from its resolved hydra.sweeper.params (cartesian product)."""
    params = compose_config([*base, f"+sweep={name}"], return_hydra_config=True).hydra.sweeper.params
    axes = [[f"{key}={value.strip()}" for value in _split(str(values))] for key, values in params.items()]
    return [[*base, f"+sweep={name}", *combo] for combo in itertools.product(*axes)]


def _split(values: str) -> list[str]:
    """Split a sweep value list on top-level commas (`[semseg],[depth]` is two values)."""
    out, depth, current = [], 0, ""
    for char in values:
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += char
    return [*out, current]


def test_every_ablation_of_the_issue_is_shipped() -> None:
    assert EXPECTED <= set(SWEEPS)
    assert SEARCHES == ["search_weights_lr"]


def test_the_ready_search_composes_with_the_optuna_settings_and_a_direction_from_its_objective() -> None:
    sweeper = sweeper_of("search_weights_lr")
    assert sweeper.direction == "maximize" and sweeper.study_name == "search"  # objective: semseg/mIoU
    assert str(sweeper.storage).startswith("sqlite:///multirun/search_weights_lr/") and sweeper.n_trials == 30
    assert set(sweeper.params) == {"optimizer.lr", "tasks.loss.weights.normals", "tasks.loss.weights.edge"}


@pytest.mark.parametrize("name", SWEEPS)
def test_every_job_of_every_sweep_composes_and_builds_on_the_meta_device(name: str) -> None:
    base = ["experiment=demt_pascal_swin_t" if name.endswith("pascal") else "experiment=demt_nyud_swin_t"]
    jobs = sweep_jobs(name, base)
    assert len(jobs) >= 2
    seen = set()
    for overrides in jobs:
        cfg = compose_config(overrides)
        for item in overrides[2:]:
            key, value = item.split("=", 1)
            if "." in key:  # a value override (groups are checked by the set of architectures below)
                assert str(OmegaConf.select(cfg, key)).replace(" ", "").replace("'", "") == value.replace(" ", "")
        seen.add((cfg.encoder._target_, cfg.decoder._target_, cfg.backbone.get("name"), str(cfg.tasks.names)))
        if name == "encoder_decoder":
            with torch.device("meta"):
                build_model(cfg)
    if name == "encoder_decoder":
        assert len(seen) == 3  # three distinct architectures, not one composed three times


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`+sweep=seeds` cut to two seeds and two architectures (DeMT, DeGMix), one step each: four real run folders."""
    root = tmp_path_factory.mktemp("sweep")
    command = [
        sys.executable,
        "-m",
        "demt_exp",
        "-m",
        "+sweep=seeds",
        "trainer.seed=0,1",
        "+arch=demt,degmix",
        *TINY_RUN,
        "dataset.val.num_samples=2",
        "trainer.steps=1",
        "trainer.eval_interval=1",
        f"hydra.sweep.dir={root}",
    ]
    result = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "HYDRA_FULL_ERROR": "1"}
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return root


@pytest.mark.slow
def test_a_tiny_sweep_runs_every_job_end_to_end(tiny_sweep: Path) -> None:
    jobs = sorted(p for p in tiny_sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    for job in jobs:
        assert "semseg" in json.loads((job / "metrics.json").read_text())


@pytest.mark.slow
def test_compare_tabulates_the_sweep_with_mean_and_std_over_seeds(
    tiny_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    compare_main([str(tiny_sweep), "--out", str(tmp_path)])
    console = capsys.readouterr().out
    with (tmp_path / "compare.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [row["arch"] for row in table] == ["demt", "degmix"] and [row["n"] for row in table] == ["2", "2"]
    assert "| arch | n |" in console

    # Independently: the runs' own files, grouped by their overrides, with NumPy.
    for row in table:
        folders = [
            job
            for job in tiny_sweep.iterdir()
            if job.is_dir() and f"+arch={row['arch']}" in (job / ".hydra" / "overrides.yaml").read_text()
        ]
        miou = np.array([json.loads((job / "metrics.json").read_text())["semseg"]["mIoU"] for job in folders])
        assert float(row["semseg/mIoU"]) == pytest.approx(miou.mean(), abs=1e-4)
        assert float(row["semseg/mIoU std"]) == pytest.approx(miou.std(ddof=1), abs=1e-4)
        first = json.loads((folders[0] / "metrics.jsonl").read_text().splitlines()[0])
        assert float(row["model/parameters"]) == first["model/parameters"]
    assert table[0]["model/parameters"] != table[1]["model/parameters"]  # two architectures, not one twice
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
