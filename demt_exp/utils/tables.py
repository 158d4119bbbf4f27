"""The two table layouts every printout uses: aligned plain text for the console, markdown for files and
issues. Rows are strings already formatted; the first row is the header."""

from __future__ import annotations

from collections.abc import Container, Sequence


def text_table(rows: Sequence[Sequence[str]], right: Container[int] = ()) -> list[str]:
    """Aligned lines: the header, a rule of dashes, then the rows; columns in `right` align right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row: Sequence[str]) -> str:
        cells = (cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        return "  ".join(cells).rstrip()

    return [line(rows[0]), "  ".join("-" * w for w in widths), *(line(row) for row in rows[1:])]


def markdown_table(rows: Sequence[Sequence[str]], right: Container[int] = ()) -> list[str]:
    """A markdown table: the header, its rule (`---:` for the columns in `right`), then the rows."""
    header, *body = rows
    rule = "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"
    return ["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(row) + " |" for row in body)]
