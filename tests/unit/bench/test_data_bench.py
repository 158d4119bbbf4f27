"""`python -m demt_exp.bench data`: it writes NYUD and PASCAL files in the real formats at the real sizes, times
one worker through the official training transforms, the decoded-label cache and a DataLoader, and says how
many workers a GPU needs."""

from __future__ import annotations

import re

import pytest

from demt_exp.bench.__main__ import main
from demt_exp.bench.data import DATASETS, workers_needed


def test_workers_needed_is_the_ceiling_of_demand_over_one_workers_rate() -> None:
    assert workers_needed([2.0, 10.0, 12.0], worker_rate=4.0) == [1, 3, 3]
    assert workers_needed([10.0], worker_rate=4.0, per_gpu_batch=2) == [5]


def test_the_bench_reports_both_data_sets_at_their_official_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    main(["data", "--images", "2", "--workers", "1", "--steps-per-s", "4", "400"])
    out = capsys.readouterr().out
    for name, ((h, w), (ch, cw)) in DATASETS.items():
        block = out[out.index(f"{name} train, files {h}x{w} -> official training transforms at {ch}x{cw}") :]
        rate = float(re.search(r"one worker: ([\d.]+) images/s", block).group(1))
        decode, transform = map(float, re.search(r"decode (\d+) ms, transforms (\d+) ms", block).groups())
        assert rate > 0 and decode > 0 and transform > 0
        assert re.search(r"with dataset.decoded_cache: [\d.]+ images/s", block)
        assert float(re.search(r"DataLoader, 1 worker\(s\): ([\d.]+) images/s", block).group(1)) > 0
        slow, fast = map(int, re.search(r"4 steps/s: (\d+), 400 steps/s: (\d+)", block).groups())
        assert fast > slow >= 1 and fast >= 400 / rate / 1.1  # the rate is printed rounded
