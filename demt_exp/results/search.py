"""A search folder as compare reads it: the best trial (one objective) or the Pareto front (several).

A `hydra/sweeper=optuna` multirun folder holds one run folder per trial. Each trial's `.hydra/config.yaml`
names the `objective` (one `task/metric` or a list); each metric's direction is its own (mIoU up, rmse
down) unless the search set `hydra.sweeper.direction` (`.hydra/hydra.yaml`). Rows whose objective values
no other row beats in every objective (and beats in one) are the front; with one objective that is the
best row. Both files are read as plain data, like the rest of a run folder.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from demt_exp.config.objective import STUDY_NAME, objective_direction
from demt_exp.utils.errors import ConfigError

SEARCH = "search"  # the column that marks the best row or the front


@dataclass(frozen=True)
class Objective:
    metrics: tuple[str, ...]
    maximize: tuple[bool, ...]

    def describe(self) -> str:
        return ", ".join(f"{m} ({'max' if up else 'min'})" for m, up in zip(self.metrics, self.maximize))


def read_objective(config: Any, hydra_config: Any, storage: Path | None = None) -> Objective | None:
    """The trial's objective and directions, or None for a run that optimised nothing (or unreadable ones).

    The directions: `hydra.sweeper.direction` where the search set it, else each metric's own; a metric this
    process does not know (a task of one's own) takes the direction stored in the search's Optuna `storage`.
    """
    objective = config.get("objective") if isinstance(config, dict) else None
    metrics = [objective] if isinstance(objective, str) else objective
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) and "/" in m for m in metrics):
        return None
    chosen = _set_directions(hydra_config, len(metrics))
    if chosen is not None:
        return Objective(tuple(metrics), chosen)
    try:
        directions = objective_direction(list(metrics))
    except ConfigError:  # not a metric of this suite, and no direction set
        stored = study_directions(storage) if storage is not None and storage.is_file() else None
        if stored is None or len(stored) != len(metrics):
            return None
        return Objective(tuple(metrics), stored)
    return Objective(tuple(metrics), tuple(d == "maximize" for d in directions))


@functools.cache
def study_directions(storage: Path) -> tuple[bool, ...] | None:
    """The directions (maximize: True) of the search's study in an Optuna SQLite file; None without optuna
    or without that study."""
    try:
        import optuna
    except ImportError:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{storage}")
    except Exception:  # another file, another study name: no directions from it
        return None
    return tuple(d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions)


def _set_directions(hydra_config: Any, count: int) -> tuple[bool, ...] | None:
    """`hydra.sweeper.direction` when the search set it as plain words; None when it follows the metrics."""
    hydra = hydra_config.get("hydra") if isinstance(hydra_config, dict) else None
    sweeper = hydra.get("sweeper") if isinstance(hydra, dict) else None
    direction = sweeper.get("direction") if isinstance(sweeper, dict) else None
    words = [direction] if isinstance(direction, str) else direction
    if not isinstance(words, list) or len(words) != count or not all(w in ("maximize", "minimize") for w in words):
        return None
    return tuple(w == "maximize" for w in words)


def dominates(a: Sequence[float], b: Sequence[float], maximize: Sequence[bool]) -> bool:
    """`a` is at least as good as `b` in every objective and better in one."""
    signed = [(x, y) if up else (-x, -y) for x, y, up in zip(a, b, maximize)]
    return all(x >= y for x, y in signed) and any(x > y for x, y in signed)


def front(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[int]:
    """Indexes of the points no other point dominates (with one objective: every best one)."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p, maximize) for q in points)]


def search_marks(objective: Objective, rows: Sequence[Any]) -> list[str]:
    """`best` (one objective) or `front` (several) per table row, from the rows' mean objective values; a
    published row (no runs) or one without every objective value is never marked."""
    scored = [i for i, row in enumerate(rows) if row.n > 0 and all(row.values.get(m) for m in objective.metrics)]
    points = [[fmean(rows[i].values[m]) for m in objective.metrics] for i in scored]
    marked = {scored[j] for j in front(points, objective.maximize)}
    word = "best" if len(objective.metrics) == 1 else "front"
    return [word if i in marked else "" for i in range(len(rows))]


def shared_objective(runs: Sequence[Any]) -> Objective | None:
    """The objective every run of a search optimised; None unless there are several runs and one objective."""
    objectives = {run.objective for run in runs}
    return objectives.pop() if len(runs) > 1 and len(objectives) == 1 and None not in objectives else None


def summary(objective: Objective, rows: Sequence[Any]) -> str:
    """One line for stderr: how many trials, what they optimised, and which run folders won."""
    marked = [str(folder) for row in rows if row.params.get(SEARCH) for folder in row.folders]
    won = "best" if len(objective.metrics) == 1 else f"Pareto front ({len(marked)})"
    trials = sum(row.n for row in rows)
    return f"search: {trials} trials, objective {objective.describe()}; {won}: {', '.join(marked) or 'none'}"
