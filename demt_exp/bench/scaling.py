"""`python -m demt_exp.bench scaling [overrides] [options]`: train-step time and memory vs input size
and vs number of tasks, for each attention mode, as a table, JSON and a PNG plot.

Every point runs in a fresh subprocess (`bench_model.memory_worker`), so its peak memory is its
own: the median seconds of `--repeats` train steps after one warm-up step, and the peak RSS
minus the RSS after building the model (CPU) or max allocated (CUDA). Tasks are the first k of the
PASCAL-Context set (semseg, human_parts, sal, normals, edge). Written beside each other:
`OUT.md` (a markdown table with the machine it ran on), `OUT.csv`, `OUT.json` and `OUT.png`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from demt_exp.bench.memory import memory_in_subprocess
from demt_exp.utils.tables import markdown_table

PASCAL_TASKS = ["semseg", "human_parts", "sal", "normals", "edge"]
COLUMNS = [
    ("attention", "attention"),
    ("size", "input (px, square)"),
    ("tasks", "tasks"),
    ("train_s", "train step (s)"),
    ("train_peak_minus_model_mib", "train peak minus model (MiB)"),
]


def point_argv(args: argparse.Namespace, attention: str, size: int, tasks: int) -> list[str]:
    names = ",".join(PASCAL_TASKS[:tasks])
    overrides = [*args.overrides, "tasks=pascal", f"tasks.names=[{names}]", f"decoder.attention={attention}"]
    if attention == "global":
        overrides.append(f"decoder.kv_stride={args.kv_stride}")
    return [
        *overrides,
        "--batch",
        str(args.batch),
        "--size",
        str(size),
        str(size),
        "--device",
        args.device,
        "--memory-repeats",
        str(args.repeats),
    ]


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for attention in args.attention:
        points = [(s, args.fixed_tasks) for s in args.sizes] + [(args.fixed_size, k) for k in args.tasks]
        for size, tasks in dict.fromkeys(points):
            result = memory_in_subprocess(point_argv(args, attention, size, tasks), "fast")
            row = {
                "attention": attention,
                "size": size,
                "tasks": tasks,
                "train_s": result["train_step_s"],
                "train_peak_minus_model_mib": result["train_peak_minus_model_mib"],
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def cpu_name() -> str:
    """The processor's model name (Linux), else what the platform module knows."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def machine(device: str) -> str:
    """Where the figures come from: processor, cores, threads, torch version."""
    if device == "cuda" and torch.cuda.is_available():
        where = torch.cuda.get_device_name()
    else:
        where = f"{cpu_name()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    return f"{where}, torch {torch.__version__}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table, one row per measured point."""
    cells = [
        [
            str(r["attention"]),
            str(r["size"]),
            str(r["tasks"]),
            f"{r['train_s']:.2f}",
            f"{r['train_peak_minus_model_mib']:.0f}",
        ]
        for r in rows
    ]
    return "\n".join(markdown_table([[label for _, label in COLUMNS], *cells]))


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[key for key, _ in COLUMNS], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_outputs(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[Path]:
    """OUT.md, OUT.csv, OUT.json and OUT.png; returns their paths."""
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    where = machine(args.device)
    setting = f"train step, batch {args.batch}, {' '.join(args.overrides) or 'DeMT Swin-T'}"
    paths = [out.with_suffix(suffix) for suffix in (".md", ".csv", ".json", ".png")]
    paths[0].write_text(f"{setting}; {where}\n\n{format_table(rows)}\n")
    write_csv(rows, paths[1])
    paths[2].write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "machine": where, "rows": rows}, indent=2)
    )
    plot(rows, args, paths[3])
    return paths


def plot(rows: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    """2x2 panels: time and memory vs input size (fixed tasks) and vs tasks (fixed size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for attention in args.attention:
        by_size = sorted((r["size"], r) for r in rows if r["attention"] == attention and r["tasks"] == args.fixed_tasks)
        by_tasks = sorted((r["tasks"], r) for r in rows if r["attention"] == attention and r["size"] == args.fixed_size)
        for col, series, label in ((0, by_size, "input size (px, square)"), (1, by_tasks, "number of tasks")):
            xs = [x for x, _ in series]
            axes[0][col].plot(xs, [r["train_s"] for _, r in series], marker="o", label=attention)
            axes[1][col].plot(xs, [r["train_peak_minus_model_mib"] for _, r in series], marker="o", label=attention)
            axes[1][col].set_xlabel(label)
    axes[0][0].set_ylabel("train step (s)")
    axes[1][0].set_ylabel("peak memory minus model (MiB)")
    axes[0][0].set_title(f"{args.fixed_tasks} tasks")
    axes[0][1].set_title(f"{args.fixed_size}x{args.fixed_size}")
    axes[0][0].legend()
    fig.suptitle(f"train step, batch {args.batch}, {args.device} ({' '.join(args.overrides) or 'DeMT Swin-T'})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m demt_exp.bench scaling", description=__doc__)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 384, 512, 640])
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--fixed-size", type=int, default=256, help="input size of the tasks sweep")
    parser.add_argument("--fixed-tasks", type=int, default=5, help="tasks of the size sweep")
    parser.add_argument("--attention", nargs="+", default=["official", "global"])
    parser.add_argument("--kv-stride", type=int, default=4, help="decoder.kv_stride for attention=global")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed train steps per point (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("bench/scaling"))
    args = parser.parse_args(argv)
    rows = measure(args)
    print(format_table(rows))
    print("wrote " + ", ".join(str(path) for path in write_outputs(rows, args)))


if __name__ == "__main__":
    main(sys.argv[1:])
