"""`python -m demt_exp.bench startup`: how long each command takes to answer before it does any work.

Each command runs in a fresh process (what a user waits for: interpreter, imports, config
composition), in an empty temporary folder so nothing lands in the checkout. The goal is under
3 s for `--help`, a config mistake and `report presets`: torch, timm, scipy and matplotlib load
only where a command needs them.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

GOAL_S = 3.0
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("demt_exp", "--help"),
    ("demt_exp", "trainer.steps=-1"),  # a config mistake: one line, exit 2
    ("demt_exp", "trainer.stepz=3"),  # a mistyped key: Hydra's error and the valid keys
    ("demt_exp.evaluate", "--help"),
    ("demt_exp.predict", "--help"),
    ("demt_exp.convert", "--help"),
    ("demt_exp.compare", "--help"),
    ("demt_exp.report", "--help"),
    ("demt_exp.report", "presets", "--no-macs"),
    ("demt_exp.bench", "--help"),
)


def time_command(args: tuple[str, ...], repeats: int) -> tuple[float, int]:
    """Median wall seconds of `python -m ARGS` in a fresh process, and its exit code."""
    seconds, code = [], 0
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(repeats):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", *args], cwd=folder, capture_output=True, timeout=300)
            seconds.append(time.perf_counter() - start)
            code = done.returncode
    return statistics.median(seconds), code


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m demt_exp.bench startup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per command; the median is printed")
    args = parser.parse_args(argv)
    print(f"seconds to answer, median of {args.repeats} fresh processes (goal < {GOAL_S:.0f} s)")
    for command in COMMANDS:
        seconds, code = time_command(command, args.repeats)
        mark = "ok" if seconds < GOAL_S else "SLOW"
        print(f"  {seconds:6.2f} s  {mark:4s}  exit {code}  python -m {' '.join(command)}")
