"""The multi-task delta Delta_m against single-task references (SPEC 4; Maninis et al. 2019,
Vandenhende et al. 2021): the mean over the chosen metrics i of

    (-1)^{l_i} (M_m,i - M_b,i) / M_b,i  x 100 %,   l_i = 1 when lower is better,

so positive means the multi-task model beats its single-task references on average. The
references come from a YAML/JSON file ({task: {metric: value}}) or from single-task run
folders (their `metrics.json`), one task per run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from demt_exp.utils.errors import ConfigError
from demt_exp.utils.metric_key import split_metric

log = logging.getLogger("demt_exp")

Nested = Mapping[str, Mapping[str, float]]

# The set the literature reports per dataset (DeMT / DeGMix / ATRC tables).
STANDARD_METRICS: dict[str, tuple[str, ...]] = {
    "nyud": ("semseg/mIoU", "depth/rmse", "normals/mean_angle", "edge/odsF"),
    "pascal_context": ("semseg/mIoU", "human_parts/mIoU", "sal/maxF", "normals/mean_angle", "edge/odsF"),
}
# Keys of a metrics.json that are not tasks (evaluation records its protocol there).
NON_TASK_KEYS = ("protocol", "multi_task")


@dataclass(frozen=True)
class DeltaM:
    """Delta_m in percent, the signed relative change per metric (percent) it averages, and what was missing."""

    value: float
    terms: dict[str, float]
    missing: tuple[str, ...] = ()


def split_key(key: str) -> tuple[str, str]:
    parts = split_metric(key)
    if parts is None:
        raise ValueError(f"Delta_m metric {key!r}: expected 'task/metric', e.g. 'semseg/mIoU'")
    return parts


def _lookup(results: Nested, key: str) -> float | None:
    task, name = split_key(key)
    value = results.get(task, {}).get(name)
    return None if value is None else float(value)


def delta_m(
    model: Nested,
    reference: Nested,
    metrics: Sequence[str],
    higher_is_better: Mapping[str, Mapping[str, bool]],
    allow_missing: bool = False,
) -> DeltaM:
    """Delta_m of `model` against `reference` over `metrics` ("task/name" keys).

    A metric absent from either side raises, unless `allow_missing`: then it is left out,
    named in `missing`, and the mean runs over the rest (not comparable with the full set).
    """
    if not metrics:
        raise ValueError("Delta_m needs at least one metric")
    terms: dict[str, float] = {}
    missing: list[str] = []
    for key in metrics:
        task, name = split_key(key)
        ours, base = _lookup(model, key), _lookup(reference, key)
        if ours is None or base is None:
            side = "the model's results" if ours is None else "the references"
            if not allow_missing:
                raise KeyError(f"Delta_m metric {key!r} is missing from {side}")
            missing.append(key)
            continue
        if name not in higher_is_better.get(task, {}):
            raise KeyError(f"Delta_m metric {key!r}: no known direction (higher or lower is better)")
        if base == 0:
            raise ValueError(f"Delta_m metric {key!r}: the reference value is 0, the relative change is undefined")
        sign = 1.0 if higher_is_better[task][name] else -1.0
        terms[key] = 100.0 * sign * (ours - base) / base
    if not terms:
        raise KeyError(f"Delta_m: none of {list(metrics)} is in both the model's results and the references")
    return DeltaM(sum(terms.values()) / len(terms), terms, tuple(missing))


def standard_metrics(dataset: str) -> tuple[str, ...]:
    if dataset not in STANDARD_METRICS:
        raise KeyError(
            f"no standard Delta_m metric set for dataset {dataset!r} (known: {sorted(STANDARD_METRICS)}); "
            "name the metrics, e.g. eval.delta_m.metrics=[semseg/mIoU,depth/rmse]"
        )
    return STANDARD_METRICS[dataset]


def _number(value: object, source: Path, key: str) -> float:
    """A metric value: a number, or text that reads as one (YAML 1.1 reads `1e-3` as text); nothing else:
    no booleans, nested nodes, interpolations or targets."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(
        f"{source}: reference {key} holds the non-numeric value {value!r}; expected a number "
        "(a references file is data: nothing in it is resolved or instantiated)"
    )


def _task_results(payload: object, source: Path) -> dict[str, dict[str, float]]:
    if not isinstance(payload, Mapping):
        raise ConfigError(f"{source}: expected a mapping {{task: {{metric: value}}}}")
    results: dict[str, dict[str, float]] = {}
    for task, values in payload.items():
        if task in NON_TASK_KEYS:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: entry {task!r} should map metric names to numbers, got {values!r}")
        results[str(task)] = {str(k): _number(v, source, f"{task}/{k}") for k, v in values.items()}
    return results


def read_reference(source: str | Path) -> dict[str, dict[str, float]]:
    """One reference source: a .yaml/.yml/.json file, or a run folder holding metrics.json.

    Read as data only (JSON, or YAML's safe loader): nothing in it is resolved or instantiated.
    """
    path = Path(source)
    if path.is_dir():
        path = path / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"reference run folder {source} has no metrics.json (did the run finish?)")
    elif not path.is_file():
        raise FileNotFoundError(f"Delta_m reference {source} does not exist (expected a run folder, .yaml or .json)")
    try:
        payload = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (ValueError, yaml.YAMLError) as error:  # json's and YAML's parse errors
        what = "JSON" if path.suffix == ".json" else "YAML"
        raise ConfigError(f"{path}: cannot be parsed as {what}: {' '.join(str(error).split())}") from None
    return _task_results(payload, path)


def load_references(sources: Iterable[str | Path]) -> dict[str, dict[str, float]]:
    """Merge reference sources; two sources that give one task/metric different values is an error."""
    merged: dict[str, dict[str, float]] = {}
    origin: dict[str, str] = {}
    for source in sources:
        for task, values in read_reference(source).items():
            for name, value in values.items():
                key = f"{task}/{name}"
                if key in origin and merged[task][name] != value:
                    raise ConfigError(
                        f"Delta_m reference {key} is {merged[task][name]} in {origin[key]} "
                        f"but {value} in {source}; give one reference per task"
                    )
                merged.setdefault(task, {})[name] = value
                origin[key] = str(source)
    return merged


def format_delta_m(result: DeltaM) -> str:
    """One line per term, then the mean: what the evaluation prints."""
    lines = [f"  {key:<22} {value:+8.2f} %" for key, value in result.terms.items()]
    lines.append(f"  {'Delta_m':<22} {result.value:+8.2f} %  (mean over {len(result.terms)} metrics)")
    if result.missing:
        lines.append(f"  not available, left out: {', '.join(result.missing)}")
    return "\n".join(lines)


def delta_m_record(
    cfg: Any, results: dict[str, dict[str, float]], verbose: bool
) -> tuple[dict[str, float], dict[str, str]]:
    """Delta_m against the configured references ({} when none are given) and what it was computed over."""
    from demt_exp.metrics.registry import metric_directions  # torch: only where results are scored

    settings = cfg.eval.delta_m  # references: run folders or files; metrics: null = the dataset's standard set
    if not settings.references:
        return {}, {}
    metrics = list(settings.metrics) if settings.metrics else list(standard_metrics(str(cfg.dataset.name)))
    result = delta_m(
        results, load_references(list(settings.references)), metrics, metric_directions(results), allow_missing=True
    )
    if verbose:
        log.info("Delta_m against %s:\n%s", list(settings.references), format_delta_m(result))
    if verbose and result.missing:
        log.warning(
            "Delta_m leaves out %s (not in the results or references): not comparable with the full set",
            list(result.missing),
        )
    return {"delta_m": result.value}, {
        "delta_m_metrics": ",".join(result.terms),
        "delta_m_missing": ",".join(result.missing),
    }
