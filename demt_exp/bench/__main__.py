"""Benchmarks that print figures: `python -m demt_exp.bench [SUBCOMMAND] [options]`, `model` when none is named.

Each subcommand lives in its own module (`model.py`, `counts.py`, `gpu.py`, `data.py`, `scaling.py`, `startup.py`, and
the component benches in `components.py`); `--help` lists them, one line each. Figures are medians over repeats in one
process, so ratios are comparable on a noisy machine.
"""

from __future__ import annotations

import importlib
import sys

from demt_exp.bench.help import SUBCOMMANDS

# the subcommands with a module of their own; the rest live in bench/components.py
OWN_MODULE = {name: name for name in ("model", "counts", "gpu", "data", "scaling", "startup")}


def overview() -> str:
    """`python -m demt_exp.bench --help`: every subcommand with its line."""
    width = max(map(len, SUBCOMMANDS))
    lines = [f"  {name:{width}s}  {text}" for name, text in SUBCOMMANDS.items()]
    return (
        "usage: python -m demt_exp.bench [SUBCOMMAND] [options]   (SUBCOMMAND --help for its options)\n\n"
        + __doc__.split("\n\n")[0]
        + "\n\nsubcommands:\n"
        + "\n".join(lines)
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--help"], ["-h"]):
        print(overview())
        return
    if not argv or argv[0].startswith("--") or "=" in argv[0]:  # `model` is the default subcommand
        argv = ["model", *argv]
    module = OWN_MODULE.get(argv[0], "components")
    bench = importlib.import_module(f"demt_exp.bench.{module}")
    bench.main(argv[1:] if module != "components" else argv)


if __name__ == "__main__":
    main()
