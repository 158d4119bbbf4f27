"""The app's `objective`: what a sweeper optimises, and which way.

`objective` is one `task/metric` (`semseg/mIoU`, `multi_task/delta_m`) or a list of them for a
multi-objective (Pareto) search; a job returns the final value of each. The direction of each comes from
the metric itself (mIoU and Delta_m up, rmse and angles down), through the `objective_direction` resolver
the Optuna sweeper config reads (`optuna_settings.py`), unless `hydra.sweeper.direction` is set.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from demt_exp.utils.errors import ConfigError
from demt_exp.utils.metric_key import split_metric

DELTA_M = "multi_task/delta_m"  # the key of Delta_m among a run's final metrics (metrics.json: multi_task)
STUDY_NAME = "search"  # the Optuna study of a search, in optuna.db of its multirun folder


def objective_metrics(objective: Any) -> list[str]:
    """`objective` as a list of `task/metric` names (empty for null)."""
    if objective is None:
        return []
    return [str(item) for item in objective] if _is_list(objective) else [str(objective)]


def objective_direction(objective: Any, _root_: Any = None) -> str | list[str]:
    """`maximize`/`minimize` per objective metric (a list for several), for the sweeper's `direction`; as a
    resolver it sees the whole config (`_root_`), whose own tasks (`tasks.define`) it defines first."""
    from demt_exp.metrics.registry import lower_is_better  # lazy: the metrics package imports torch
    from demt_exp.tasks.registry import define_tasks

    if _root_ is not None:
        define_tasks(_root_)

    metrics = objective_metrics(objective)
    if not metrics:
        raise ConfigError(
            "hydra/sweeper=optuna optimises the job's `objective`: set objective=task/metric "
            "(e.g. objective=semseg/mIoU) or a list, objective=[semseg/mIoU,depth/rmse]"
        )
    try:
        directions = ["minimize" if lower_is_better(metric) else "maximize" for metric in metrics]
    except ValueError as error:
        raise ConfigError(f"objective: {error}, or set hydra.sweeper.direction") from None
    return directions[0] if isinstance(objective, str) else directions


def check_objective(cfg: DictConfig) -> None:
    """Each objective metric is one the configured tasks report (Delta_m: with its references), so a search
    fails before its first trial trains, not after."""
    metrics = objective_metrics(cfg.get("objective"))
    tasks = set(cfg.tasks.names)
    for metric in metrics:
        parts = split_metric(metric)
        if parts is None:
            raise ConfigError(f"objective: {metric!r} is not task/metric, e.g. semseg/mIoU or {DELTA_M}")
        task = parts[0]
        if metric == DELTA_M:
            if not cfg.eval.delta_m.references:
                raise ConfigError(f"objective: {DELTA_M} needs single-task references in eval.delta_m.references")
        elif task not in tasks:
            raise ConfigError(f"objective: {metric!r} names task {task!r}, which is not in tasks.names {sorted(tasks)}")
    if metrics:
        objective_direction(cfg.objective)  # every metric has a known direction


def objective_value(objective: Any, results: Mapping[str, Mapping[str, float]]) -> float | list[float] | None:
    """What the job returns to the sweeper: the final value of each objective metric (a list for several)."""
    metrics = objective_metrics(objective)
    if not metrics or not results:
        return None
    values = []
    for metric in metrics:
        task, name = metric.split("/")
        if name not in results.get(task, {}):
            raise ConfigError(f"objective: the final metrics hold no {metric} (they have {_names(results)})")
        values.append(float(results[task][name]))
    return values[0] if len(metrics) == 1 and not _is_list(objective) else values


def _is_list(objective: Any) -> bool:
    return isinstance(objective, (list, tuple, ListConfig))


def _names(results: Mapping[str, Mapping[str, float]]) -> str:
    return ", ".join(f"{task}/{name}" for task, values in results.items() for name in values)


def register_resolver() -> None:
    """`${objective_direction:${objective}}`, once per process; and, where hydra-optuna-sweeper is installed,
    its `hydra/sweeper=optuna` with this suite's settings (`optuna_settings`)."""
    if not OmegaConf.has_resolver("objective_direction"):
        OmegaConf.register_new_resolver("objective_direction", objective_direction)
    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None:
        from demt_exp.config.optuna_settings import register

        register()
