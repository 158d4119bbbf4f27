"""`hydra/sweeper=optuna`: real trials on the synthetic scenes, the direction taken from the metric, a
Pareto search, storage in the multirun folder and an interrupted search that continues (compare reads it)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from commands import TINY_RUN, run_cli, run_module
from omegaconf import OmegaConf

SEARCH = [
    "-m",
    "hydra/sweeper=optuna",
    "hydra.sweeper.sampler.seed=0",
    "optimizer.lr=interval(0.0001,0.001)",
    *TINY_RUN,
    "dataset.val.num_samples=2",
    "trainer.steps=1",
    "trainer.eval_interval=1",
    "trainer.checkpoint.keep_last=0",
]

# The ready search's space (sweeps/sweep/search_weights_lr.yaml)
RANGES = {
    "optimizer.lr": (1e-4, 1e-2),
    "tasks.loss.weights.normals": (1.0, 20.0),
    "tasks.loss.weights.edge": (10.0, 100.0),
}

pytestmark = pytest.mark.slow


def final(root: Path, job: int, metric: str) -> float:
    task, name = metric.split("/")
    return json.loads((root / str(job) / "metrics.json").read_text())[task][name]


def jobs(root: Path) -> list[int]:
    return sorted(int(path.name) for path in root.iterdir() if path.name.isdigit())


def test_the_ready_search_takes_the_metrics_direction_and_continues_where_it_stopped(tmp_path: Path) -> None:
    """sweeps/sweep/search_weights_lr.yaml (lr and two loss weights), minimising rmse, stopped after 2 trials."""
    root = tmp_path / "search"
    ready = [arg for arg in SEARCH if not arg.startswith(("hydra/sweeper=", "optimizer.lr="))]
    command = [*ready, "+sweep=search_weights_lr", "tasks=nyud", "objective=depth/rmse", f"hydra.sweep.dir={root}"]
    run_cli(*command, "hydra.sweeper.n_trials=2")
    assert jobs(root) == [0, 1] and (root / "optuna.db").is_file()
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{root / 'optuna.db'}")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE  # rmse: lower is better
    rmse = {job: final(root, job, "depth/rmse") for job in (0, 1)}
    assert sorted(trial.value for trial in study.trials) == pytest.approx(sorted(rmse.values()))
    results = yaml.safe_load((root / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(min(rmse.values()))
    first = {job: (root / str(job) / "metrics.json").read_bytes() for job in (0, 1)}

    run_cli(*command, "hydra.sweeper.n_trials=3")  # the same search asked for 3: one trial more
    assert jobs(root) == [0, 1, 2]
    assert {job: (root / str(job) / "metrics.json").read_bytes() for job in (0, 1)} == first
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{root / 'optuna.db'}")
    assert [trial.number for trial in study.trials] == [0, 1, 2]
    configs = [OmegaConf.load(root / str(job) / ".hydra" / "config.yaml") for job in range(3)]
    for trial, config in zip(study.trials, configs):
        assert trial.params.keys() == RANGES.keys()
        for key, (low, high) in RANGES.items():
            value = OmegaConf.select(config, key)
            assert low <= value <= high and value == pytest.approx(trial.params[key]), key
    assert len({config.optimizer.lr for config in configs}) == 3


def test_a_pareto_search_and_compare_shows_its_front(tmp_path: Path) -> None:
    root = tmp_path / "pareto"
    run_cli(*SEARCH, "objective=[semseg/mIoU,depth/rmse]", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={root}")
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{root / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    values = {job: (final(root, job, "semseg/mIoU"), final(root, job, "depth/rmse")) for job in jobs(root)}
    solutions = yaml.safe_load((root / "optimization_results.yaml").read_text())["solutions"]
    on_front = [
        job
        for job, (miou, rmse) in values.items()
        if not any(m >= miou and r <= rmse and (m, r) != (miou, rmse) for m, r in values.values())
    ]
    assert sorted(tuple(s["values"]) for s in solutions) == pytest.approx(sorted(values[job] for job in on_front))
    done = run_module("demt_exp.compare", str(root), "--format", "json", "--out", str(tmp_path / "compare"))
    marked = [int(Path(row["runs"][0]).name) for row in json.loads(done.stdout)["rows"] if row["params"]["search"]]
    assert sorted(marked) == sorted(on_front)
    assert (tmp_path / "compare" / "pareto.png").stat().st_size > 0


def test_a_search_without_an_objective_says_what_to_set(tmp_path: Path) -> None:
    done = run_cli(*SEARCH, "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={tmp_path / 'none'}", check=False)
    assert done.returncode != 0 and "set objective=task/metric" in done.stderr
    assert not (tmp_path / "none" / "0").exists()
