"""Peak memory of one operation, measured where nothing earlier shapes it: CUDA's allocator statistics, or on
the CPU the process's high-water mark (VmHWM, reset through /proc/self/clear_refs), in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from demt_exp.bench.timing import median_seconds


def read_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux clear_refs 5); False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def timed_peak(fn: Callable[[], None], device: torch.device, repeats: int) -> tuple[float, int, int]:
    """Median seconds of `fn`, and the bytes held before it and at its peak (CUDA allocations, or CPU RSS)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        seconds = median_seconds(fn, repeats)
        return seconds, base, torch.cuda.max_memory_allocated()
    if not reset_peak_rss():
        raise OSError("cannot reset the peak RSS (/proc/self/clear_refs); run with --memory none")
    base = read_status_kb("VmRSS") * 1024
    seconds = median_seconds(fn, repeats)
    return seconds, base, read_status_kb("VmHWM") * 1024


def memory_in_subprocess(argv: list[str], variant: str, what: str = "train") -> dict[str, float]:
    """Run `memory_worker` in a fresh interpreter so no earlier allocation shapes its peak."""
    cmd = [sys.executable, "-m", "demt_exp.bench.model", "--memory-worker", variant, what, *argv]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory worker failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
