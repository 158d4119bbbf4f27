"""`python -m demt_exp.compare PATH...`: a sweep's swept parameters against its final metrics.

PATH is a multirun folder (every run folder below it is read) or run folders. Each run gives its
overrides (`.hydra/overrides.yaml`), dataset (`.hydra/config.yaml`), final metrics (`metrics.json`,
Delta_m as `multi_task/delta_m`) and parameter count (`model/parameters` in `metrics.jsonl`), all
read as plain data. Runs that differ only in `trainer.seed` are one row (mean and sample std).
Metrics: `--metrics`, by default the dataset's Delta_m set, Delta_m and the parameter count. The
table goes to the console (markdown fitted to 120 columns, CSV or JSON); `compare.csv` and, when
matplotlib is installed, `compare.png` (one panel per metric) go to the output folder. A folder of
a failed job is skipped with one line saying why. Runs of a paper preset bring its published row and
each metric's difference to it (`demt_exp/results/published.py`); the trials of a search (`hydra/sweeper=optuna`)
a `search` column marking the best trial or the Pareto front, and for two objectives `pareto.png`
(`demt_exp/results/search.py`). Reads files only: no W&B, no network.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from demt_exp.results.metrics import select_metrics
from demt_exp.results.runs import Row, RunResult, Skipped, load_runs, table_rows
from demt_exp.results.search import shared_objective, summary
from demt_exp.results.table import csv_text, json_text, markdown, printable
from demt_exp.utils.errors import EXIT_CODE, UserError

FORMATS = ("markdown", "csv", "json")
PLOT_HINT = "no plot: matplotlib is not installed (pip install 'demt_exp[plot]')"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options; argparse itself answers `--help` and usage mistakes (exit 2) before any run is read."""
    parser = argparse.ArgumentParser(prog="python -m demt_exp.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="multirun folders or run folders")
    parser.add_argument(
        "--metrics",
        nargs="+",
        metavar="TASK/METRIC",
        help="metrics to show, e.g. semseg/mIoU depth/rmse, or `all` (default: the dataset's "
        "Delta_m set, multi_task/delta_m and model/parameters)",
    )
    parser.add_argument("--format", choices=FORMATS, default="markdown", help="console table (default: markdown)")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for compare.csv and compare.png (default: the first PATH)"
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return parser.parse_args(argv)


def usable_runs(paths: Sequence[Path]) -> tuple[list[RunResult], list[Skipped]]:
    """The runs under `paths` and the skipped folders, each named on stderr with its reason (a failed job
    must not hide the sweep's other jobs); none usable is an error."""
    runs, skipped = load_runs(paths)
    for item in skipped:
        note(f"skipped {printable(str(item.folder))}: {item.reason}")
    if not runs:
        where = " ".join(map(str, paths))
        raise UserError(f"no usable run under {where}: every run folder was skipped (see above)")
    return runs, skipped


def note(text: str) -> None:
    """Diagnostics on stderr, so the table on stdout stays clean for `--format csv|json`."""
    print(text, file=sys.stderr)


def console_table(
    fmt: str, keys: list[str], rows: list[Row], metrics: list[str], skipped: Sequence[Skipped] = ()
) -> str:
    """The table in the chosen format; CSV and JSON carry every digit, for programs."""
    if fmt == "csv":
        return csv_text(keys, rows, metrics).rstrip("\n")
    if fmt == "json":
        return json_text(keys, rows, metrics, skipped).rstrip("\n")
    return markdown(keys, rows, metrics)


def write_outputs(out: Path, keys: list[str], rows: list[Row], metrics: list[str], plot: bool) -> None:
    """compare.csv and compare.png in `out`; a folder that cannot be written is a one-line error."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.csv").write_text(csv_text(keys, rows, metrics))
    except OSError as error:
        raise UserError(f"--out {out}: cannot write compare.csv there ({error.strerror or error})") from None
    note(f"wrote {out / 'compare.csv'}")
    if not plot:
        return
    from demt_exp.viz.plots import plot_metrics  # lazy: matplotlib only when a PNG is wanted

    path = plot_metrics(keys, rows, metrics, out / "compare.png")
    note(f"wrote {path}" if path else PLOT_HINT)


def compare(args: argparse.Namespace) -> None:
    """Read, choose the metrics, print, write: the whole command once the options are parsed."""
    runs, skipped = usable_runs(args.paths)
    metrics, notes = select_metrics(runs, args.metrics)
    for text in notes:
        note(text)
    keys, rows = table_rows(runs)
    objective = shared_objective(runs)
    if objective is not None:  # a search: its objective metrics lead the table
        metrics = [*(m for m in objective.metrics if m not in metrics), *metrics]
        note(summary(objective, rows))
    print(console_table(args.format, keys, rows, metrics, skipped))
    out = args.out or args.paths[0]
    write_outputs(out, keys, rows, metrics, plot=not args.no_plot)
    if objective is not None and len(objective.metrics) == 2 and not args.no_plot:
        from demt_exp.viz.plots import plot_front

        path = plot_front(objective, rows, out / "pareto.png")
        note(f"wrote {path}" if path else PLOT_HINT)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command; a mistake in the input prints one line and exits 2, without a traceback."""
    args = parse_args(argv)
    try:
        compare(args)
    except UserError as error:
        print(f"compare: error: {error}", file=sys.stderr)
        sys.exit(EXIT_CODE)


if __name__ == "__main__":
    main()
