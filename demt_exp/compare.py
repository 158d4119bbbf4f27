"""`python -m demt_exp.compare PATH...`: a sweep's swept parameters against its final metrics.

PATH is a multirun folder (every run folder below it is read) or run folders. Each run gives its
overrides (`.hydra/overrides.yaml`), final metrics (`metrics.json`, Delta_m included when the
file has `multi_task/delta_m`) and parameter count (`model/parameters` in `metrics.jsonl`). The
table shows the overrides that differ between runs; runs that differ only in `trainer.seed` are
one row with the mean and standard deviation (n - 1) over seeds. Markdown on the console, CSV on
disk, and a PNG of each metric against the first swept parameter (one panel per task) when
matplotlib is installed. Reads files only: no W&B, no network.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from omegaconf import OmegaConf

from demt_exp.tracking import read_history

SEED_KEY = "trainer.seed"
NOT_SWEPT = ("hydra.", "trainer.resume", "trainer.stop_at_step")


@dataclass
class RunResult:
    folder: Path
    overrides: dict[str, str]
    metrics: dict[str, float]  # "task/metric" -> value


def find_runs(paths: Sequence[Path]) -> list[Path]:
    """Run folders (those holding `metrics.json`) at or below each path, in job order."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist (expected a run folder or a multirun folder)")
        runs = [path] if (path / "metrics.json").is_file() else sorted(
            (p.parent for p in path.rglob("metrics.json")), key=lambda p: _job_order(p, path))
        if not runs:
            raise FileNotFoundError(f"{path} holds no metrics.json: no finished run under it")
        found.extend(runs)
    return found


def _job_order(folder: Path, root: Path) -> tuple:
    return tuple(int(p) if p.isdigit() else math.inf for p in folder.relative_to(root).parts) + (str(folder),)


def read_overrides(folder: Path) -> dict[str, str]:
    path = folder / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    items = [str(item) for item in OmegaConf.load(path)]
    pairs = [item.split("=", 1) for item in items if "=" in item]
    return {key.lstrip("+~"): value for key, value in pairs if not key.lstrip("+~").startswith(NOT_SWEPT)}


def read_metrics(folder: Path) -> dict[str, float]:
    """Numeric final metrics as "task/metric" (Delta_m as "multi_task/delta_m"), plus the parameter count."""
    path = folder / "metrics.json"
    try:
        tree = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    flat = {f"{task}/{name}": float(value) for task, values in tree.items() if isinstance(values, dict)
            for name, value in values.items() if isinstance(value, (int, float))}
    for record in read_history(folder / "metrics.jsonl"):
        if "model/parameters" in record:
            flat["model/parameters"] = float(record["model/parameters"])
            break
    return flat


def load_runs(paths: Sequence[Path]) -> list[RunResult]:
    return [RunResult(folder, read_overrides(folder), read_metrics(folder)) for folder in find_runs(paths)]


def swept_keys(runs: Sequence[RunResult]) -> list[str]:
    """Override keys whose value differs between runs (all of them for a single run), in first-seen order."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.overrides if k not in keys]
    if len(runs) == 1:
        return keys
    return [k for k in keys if len({run.overrides.get(k, "") for run in runs}) > 1]


@dataclass
class Row:
    params: dict[str, str]
    values: dict[str, list[float]]  # metric -> one value per seed (per run)


def table_rows(runs: Sequence[RunResult]) -> tuple[list[str], list[Row]]:
    """Runs grouped by every swept key but the seed; returns (grouping keys, rows)."""
    keys = [k for k in swept_keys(runs) if k != SEED_KEY]
    rows: dict[tuple, Row] = {}
    for run in runs:
        params = {k: run.overrides.get(k, "") for k in keys}
        row = rows.setdefault(tuple(params.values()), Row(params, {}))
        for metric, value in run.metrics.items():
            row.values.setdefault(metric, []).append(value)
    return keys, list(rows.values())


def metric_names(rows: Sequence[Row]) -> list[str]:
    names = sorted({m for row in rows for m in row.values}, key=lambda m: (m == "model/parameters", m))
    return names


def summarise(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation); std is NaN for one value."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else math.nan


def to_records(keys: Sequence[str], rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """Header and cells: parameters, n, then per metric its mean (and std when a row has seeds)."""
    metrics = metric_names(rows)
    with_std = any(len(v) > 1 for row in rows for v in row.values.values())
    header = [*keys, "n"] + [c for m in metrics for c in ((m, f"{m} std") if with_std else (m,))]
    cells = []
    for row in rows:
        line = [row.params[k] for k in keys] + [str(max((len(v) for v in row.values.values()), default=0))]
        for metric in metrics:
            mean, std = summarise(row.values[metric]) if metric in row.values else (math.nan, math.nan)
            line.append(_number(mean, metric))
            if with_std:
                line.append(_number(std, metric))
        cells.append(line)
    return header, cells


def _number(value: float, metric: str) -> str:
    if math.isnan(value):
        return ""
    return f"{value:.0f}" if metric == "model/parameters" else f"{value:.4f}"


def markdown(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(line) + " |" for line in cells])


def write_csv(path: Path, header: Sequence[str], cells: Sequence[Sequence[str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(cells)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demt_exp.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="multirun folders or run folders")
    parser.add_argument("--out", type=Path, default=None, help="folder for compare.csv and compare.png "
                        "(default: the first PATH)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = parser.parse_args(argv)
    keys, rows = table_rows(load_runs(args.paths))
    header, cells = to_records(keys, rows)
    out = args.out or args.paths[0]
    out.mkdir(parents=True, exist_ok=True)
    print(markdown(header, cells))
    write_csv(out / "compare.csv", header, cells)
    print(f"\nwrote {out / 'compare.csv'}")
    if not args.no_plot and keys:
        from demt_exp.compare_plot import plot_metrics

        path = plot_metrics(keys[0], rows, out / "compare.png")
        print(f"wrote {path}" if path else "no plot: matplotlib is not installed (pip install 'demt_exp[plot]')")


if __name__ == "__main__":
    main()
