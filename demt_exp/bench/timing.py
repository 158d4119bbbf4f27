"""Wall-clock timing shared by the benchmarks: the median of repeats after warm-up, so one noisy repeat on a
shared machine does not move the figure."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], None], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
