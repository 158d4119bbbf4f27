"""Run folders as the compare command reads them: found, read as plain data, failed jobs set aside.

Everything here treats a run folder as untrusted data: `.hydra/overrides.yaml` and
`.hydra/config.yaml` go through `yaml.safe_load` (no tags, no OmegaConf, so an interpolation
such as `${oc.env:HOME}` stays the literal text it is), `metrics.json` through `json`, and
nothing read is ever imported, instantiated or resolved. A sweep job that failed (no
`metrics.json`, a half-written or invalid one, overrides that are not a list of strings) is
returned as `Skipped` with the reason, so one broken job does not hide the others.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from demt_exp.results.published import RUNS, SOURCE, Published, published_values, read_published, with_differences
from demt_exp.results.search import SEARCH, Objective, read_objective, search_marks, shared_objective
from demt_exp.utils.errors import UserError

SEED_KEY = "trainer.seed"
NOT_SWEPT = ("hydra.", "trainer.resume", "trainer.stop_at_step")
PARAMETERS = "model/parameters"


@dataclass
class RunResult:
    """One finished job, as plain data read from its folder."""

    folder: Path
    overrides: dict[str, str]
    metrics: dict[str, float]  # "task/metric" -> value
    dataset: str | None = None  # `dataset.name` of `.hydra/config.yaml`, as written (never resolved)
    paper: Published | None = None  # the preset's published numbers (`paper` of `.hydra/config.yaml`)
    objective: Objective | None = None  # what a search optimised (`objective`, `hydra.sweeper.direction`)


@dataclass
class Skipped:
    """A folder compare set aside (a failed or unfinished job) and why, for the one line it prints."""

    folder: Path
    reason: str


@dataclass
class Row:
    """Runs that differ only in their seed: one table row, one point per plot panel."""

    params: dict[str, str]
    values: dict[str, list[float]] = field(default_factory=dict)  # metric -> one value per run
    folders: list[Path] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.folders)


def is_run_folder(folder: Path) -> bool:
    """A Hydra job folder (`.hydra/`) or a folder with final metrics: what a training job leaves."""
    return (folder / ".hydra").is_dir() or (folder / "metrics.json").is_file()


def find_runs(paths: Sequence[Path]) -> list[Path]:
    """Run folders at or below each path, in job order (1, 2, ..., 10, not 1, 10, 2).

    A run folder's own subfolders (checkpoints, wandb, predictions) are not searched: they
    hold no other runs, and a W&B folder can hold thousands of files.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"{path} does not exist (expected a run folder or a multirun folder)")
        if not path.is_dir():
            raise UserError(f"{path} is not a folder (expected a run folder or a multirun folder)")
        runs = [path] if is_run_folder(path) else sorted(_runs_below(path), key=lambda p: _job_order(p, path))
        if not runs:
            raise UserError(f"{path} holds no run folder (no .hydra/ or metrics.json below it)")
        found.extend(runs)
    return found


def _runs_below(root: Path) -> list[Path]:
    runs = []
    for folder, subfolders, _ in os.walk(root):
        here = Path(folder)
        if here != root and is_run_folder(here):
            runs.append(here)
            subfolders.clear()
        else:
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
    return runs


def _job_order(folder: Path, root: Path) -> tuple:
    return tuple(int(p) if p.isdigit() else math.inf for p in folder.relative_to(root).parts) + (str(folder),)


def _safe_yaml(path: Path) -> Any:
    """Plain YAML data (str, numbers, lists, dicts); raises ValueError naming what is wrong."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(
            f"{path.relative_to(path.parent.parent)} cannot be read as YAML ({str(error).splitlines()[0]})"
        ) from None


def read_overrides(folder: Path) -> dict[str, str]:
    """The job's command-line overrides as key -> value text (`+`/`~` prefixes dropped), swept keys only."""
    path = folder / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    items = _safe_yaml(path) or []
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ValueError(".hydra/overrides.yaml is not a YAML list of `key=value` strings")
    pairs = [item.split("=", 1) for item in items if "=" in item]
    return {key.lstrip("+~"): value for key, value in pairs if not key.lstrip("+~").startswith(NOT_SWEPT)}


def read_config(folder: Path, name: str = "config.yaml") -> Any:
    """The job's composed config (`.hydra/config.yaml`, or Hydra's own `hydra.yaml`) as plain YAML data; None
    when absent or unreadable. An interpolation (`${...}`) comes back as its literal text, never resolved.
    """
    path = folder / ".hydra" / name
    if not path.is_file():
        return None
    try:
        return _safe_yaml(path)
    except ValueError:
        return None


def dataset_name(config: Any) -> str | None:
    """`dataset.name` of a composed config, as text; None when absent (an interpolation names no dataset)."""
    dataset = config.get("dataset") if isinstance(config, dict) else None
    name = dataset.get("name") if isinstance(dataset, dict) else None
    return name if isinstance(name, str) else None


def _number(value: Any) -> bool:
    """A metric value: int or float, not a bool (JSON's true would otherwise count as 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_metrics(folder: Path) -> dict[str, float]:
    """Numeric final metrics as "task/metric" (Delta_m as "multi_task/delta_m"), plus the parameter count."""
    path = folder / "metrics.json"
    if not path.is_file():
        raise ValueError("no metrics.json (the job did not finish)")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"metrics.json cannot be read ({error.strerror or error})") from None
    try:
        tree = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"metrics.json is not valid JSON, half-written or damaged ({detail})") from None
    if not isinstance(tree, dict):
        raise ValueError("metrics.json is not a {task: {metric: value}} mapping")
    flat = {
        f"{task}/{name}": float(value)
        for task, values in tree.items()
        if isinstance(values, dict)
        for name, value in values.items()
        if _number(value)
    }
    if not flat:
        raise ValueError("metrics.json holds no numeric metric")
    parameters = first_parameter_count(folder / "metrics.jsonl")
    if parameters is not None:
        flat[PARAMETERS] = parameters
    return flat


def first_parameter_count(path: Path) -> float | None:
    """`model/parameters` of the first history record that has it (the run logs it at step 0)."""
    from demt_exp.tracking import read_history  # lazy: the tracking package imports torch

    for record in read_history(path):
        if _number(record.get(PARAMETERS)):
            return float(record[PARAMETERS])
    return None


def load_run(folder: Path) -> RunResult | Skipped:
    """One folder as a result, or as skipped with the reason (a failed or unfinished job)."""
    try:
        config = read_config(folder)
        paper = read_published(config)
        metrics = read_metrics(folder)
        if paper is not None:
            metrics = with_differences(metrics, paper)
        objective = read_objective(config, read_config(folder, "hydra.yaml"), folder.parent / "optuna.db")
        return RunResult(folder, read_overrides(folder), metrics, dataset_name(config), paper, objective)
    except ValueError as error:
        return Skipped(folder, str(error))


def load_runs(paths: Sequence[Path]) -> tuple[list[RunResult], list[Skipped]]:
    """Every run folder under `paths`, split into usable results and skipped folders."""
    loaded = [load_run(folder) for folder in find_runs(paths)]
    return [r for r in loaded if isinstance(r, RunResult)], [r for r in loaded if isinstance(r, Skipped)]


def swept_keys(runs: Sequence[RunResult]) -> list[str]:
    """Override keys whose value differs between runs (all of them for a single run), in first-seen order."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.overrides if k not in keys]
    if len(runs) == 1:
        return keys
    return [k for k in keys if len({run.overrides.get(k, "") for run in runs}) > 1]


def table_rows(runs: Sequence[RunResult]) -> tuple[list[str], list[Row]]:
    """Runs grouped by every swept key but the seed; returns (grouping keys, rows). Runs of a paper preset
    bring its published numbers as a row of their own first, told apart by a `source` column; the trials
    of a search get a `search` column marking the best row or the Pareto front."""
    keys = [k for k in swept_keys(runs) if k != SEED_KEY]
    rows: dict[tuple, Row] = {}
    for run in runs:
        params = {k: run.overrides.get(k, "") for k in keys}
        row = rows.setdefault(tuple(params.values()), Row(params))
        row.folders.append(run.folder)
        for metric, value in run.metrics.items():
            row.values.setdefault(metric, []).append(value)
    out = list(rows.values())
    papers = {run.paper.label: run.paper for run in runs if run.paper is not None}
    if papers:
        published = [
            Row({SOURCE: label, **dict.fromkeys(keys, "")}, {m: [v] for m, v in published_values(paper).items()})
            for label, paper in papers.items()
        ]
        keys, out = [SOURCE, *keys], published + [_with(row, SOURCE, RUNS) for row in out]
    objective = shared_objective(runs)
    if objective is not None:  # a search: its best row, or its Pareto front
        keys, out = [SEARCH, *keys], [_with(row, SEARCH, mark) for row, mark in zip(out, search_marks(objective, out))]
    return keys, out


def _with(row: Row, key: str, value: str) -> Row:
    """The row with one more leading column."""
    row.params = {key: value, **row.params}
    return row


def summarise(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation); NaN mean for no value, NaN std for one."""
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else math.nan
