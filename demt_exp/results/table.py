"""The compare table as text: markdown that fits a terminal, CSV and JSON with every digit.

A sweep can have many swept keys, long override values (task lists) and many metrics, so the
markdown is fitted to a width (120 columns): a key or value longer than a cell may be is
replaced by a label (`[k1]`, `[v1]`) spelled out in a legend below, and columns that do not
fit side by side go into further blocks, each repeating the row's swept values (or a row
number `#` when even those do not fit). CSV and JSON are for programs: full values, no labels.
"""

from __future__ import annotations

import csv
import io
import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from demt_exp.results.metrics import axis_label, format_value, header, units_line
from demt_exp.results.published import compared_metric
from demt_exp.results.runs import Row, summarise
from demt_exp.utils.tables import markdown_table

WIDTH = 120
MAX_CELL = 24  # longest swept key or value shown in a cell
MAX_HEADER = 40  # longest metric header


def printable(text: str) -> str:
    """Text from a run folder as it may reach a terminal: control characters escaped."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class Legend:
    """Long texts replaced by short labels, the same label for the same text."""

    def __init__(self) -> None:
        self.labels: dict[tuple[str, str], str] = {}

    def short(self, text: str, kind: str, limit: int = MAX_CELL) -> str:
        if len(text) <= limit:
            return text
        count = sum(1 for k, _ in self.labels if k == kind)
        return self.labels.setdefault((kind, text), f"[{kind}{count + 1}]")

    def lines(self, width: int = WIDTH) -> list[str]:
        """`[v1] the full text`, wrapped to `width` with the continuation indented."""
        out = []
        for (_, text), label in self.labels.items():
            out += textwrap.wrap(
                f"{label} {text}", width, subsequent_indent=" " * (len(label) + 1), break_on_hyphens=False
            )
        return out


@dataclass
class Column:
    header: str
    cells: list[str]
    right: bool = False  # numbers: right-aligned in markdown

    @property
    def width(self) -> int:
        return max([len(self.header), *map(len, self.cells)])


def _markdown_cell(text: str) -> str:
    """A cell that cannot break the table (`|`) nor the terminal (control characters)."""
    return printable(text).replace("|", "\\|")


def columns(keys: Sequence[str], rows: Sequence[Row], metrics: Sequence[str], legend: Legend) -> list[Column]:
    """Swept keys, `n`, then one `mean ± std` column per metric, every text already shortened."""
    cols = [
        Column(
            legend.short(_markdown_cell(key), "k"), [legend.short(_markdown_cell(row.params[key]), "v") for row in rows]
        )
        for key in keys
    ]
    cols.append(Column("n", [str(row.n) for row in rows], right=True))
    for metric in metrics:
        cells = [format_value(metric, *summarise(row.values.get(metric, []))) for row in rows]
        cols.append(Column(legend.short(_markdown_cell(header(metric)), "k", MAX_HEADER), cells, right=True))
    return cols


def line_width(cols: Sequence[Column]) -> int:
    """Length of the longest markdown line of these columns: `| a | b |`."""
    return sum(col.width for col in cols) + 3 * len(cols) + 1


def blocks(cols: Sequence[Column], fixed: int, width: int = WIDTH) -> list[list[Column]]:
    """Columns packed into blocks no wider than `width`, each starting with the first `fixed` columns
    (the swept values and n) or, when those leave no room, with a row number."""
    head, rest = list(cols[:fixed]), list(cols[fixed:])
    if rest and line_width([*head, max(rest, key=lambda c: c.width)]) > width:
        head, rest = [Column("#", [str(i + 1) for i in range(len(cols[0].cells))], right=True)], list(cols)
    out: list[list[Column]] = [list(head)]
    for col in rest:
        if len(out[-1]) > len(head) and line_width([*out[-1], col]) > width:
            out.append(list(head))
        out[-1].append(col)
    return out


def markdown_block(cols: Sequence[Column]) -> list[str]:
    """One markdown table; cells are not padded, so a line is no longer than its content needs."""
    rows = [[col.header for col in cols], *([col.cells[i] for col in cols] for i in range(len(cols[0].cells)))]
    return markdown_table(rows, right={i for i, col in enumerate(cols) if col.right})


def markdown(keys: Sequence[str], rows: Sequence[Row], metrics: Sequence[str], width: int = WIDTH) -> str:
    """The table for people: blocks that fit `width`, then the legend of shortened texts."""
    legend = Legend()
    cols = columns(keys, rows, metrics, legend)
    parts = ["\n".join(markdown_block(block)) for block in blocks(cols, len(keys) + 1, width)]
    notes = legend.lines(width)
    units = units_line(metrics)
    if units:
        notes += textwrap.wrap(units, width, subsequent_indent="  ", break_on_hyphens=False)
    if any(row.n > 1 for row in rows):
        notes.append("mean ± sample standard deviation (n - 1) over the n runs of a row (seeds)")
    if any(compared_metric(m) != m for m in metrics):
        notes.append("vs paper: the run's value minus the published one, in the metric's unit")
    return "\n\n".join(parts + (["\n".join(notes)] if notes else []))


def _number(value: float) -> str:
    """Every digit (the CSV is for programs); whole numbers without `.0`; empty for no value."""
    if math.isnan(value):
        return ""
    return str(int(value)) if value.is_integer() else repr(value)


def records(keys: Sequence[str], rows: Sequence[Row], metrics: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """CSV header and cells: swept keys, n, then per metric its mean (and `<metric> std` when a row has seeds)."""
    with_std = any(row.n > 1 for row in rows)
    head = [*keys, "n"] + [c for m in metrics for c in ((m, f"{m} std") if with_std else (m,))]
    cells = []
    for row in rows:
        line = [row.params[k] for k in keys] + [str(row.n)]
        for metric in metrics:
            mean, std = summarise(row.values.get(metric, []))
            line += [_number(mean), _number(std)] if with_std else [_number(mean)]
        cells.append(line)
    return head, cells


def csv_text(keys: Sequence[str], rows: Sequence[Row], metrics: Sequence[str]) -> str:
    """What `compare.csv` holds, and what `--format csv` prints: the same text."""
    handle = io.StringIO()
    writer = csv.writer(handle, lineterminator="\n")
    head, cells = records(keys, rows, metrics)
    writer.writerow(head)
    writer.writerows(cells)
    return handle.getvalue()


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _json_metric(values: Sequence[float]) -> dict:
    """Mean, std and the runs' values of one metric of one row."""
    mean, std = summarise(values)
    return {"mean": _json_number(mean), "std": _json_number(std), "values": [_json_number(v) for v in values]}


def json_text(keys: Sequence[str], rows: Sequence[Row], metrics: Sequence[str], skipped: Sequence = ()) -> str:
    """Rows with their swept values, run folders, and per metric mean, std and every run's value (strict
    JSON: a missing number is null, never NaN); the skipped folders with their reasons."""
    out_rows = [
        {
            "params": row.params,
            "n": row.n,
            "runs": [str(f) for f in row.folders],
            "metrics": {m: _json_metric(row.values.get(m, [])) for m in metrics},
        }
        for row in rows
    ]
    payload = {
        "keys": list(keys),
        "metrics": {m: {"unit": axis_label(m)} for m in metrics},
        "rows": out_rows,
        "skipped": [{"folder": str(s.folder), "reason": s.reason} for s in skipped],
    }
    return json.dumps(payload, indent=2, allow_nan=False) + "\n"
