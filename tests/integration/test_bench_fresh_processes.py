"""The benchmarks that time or measure in fresh processes: `bench model` (a memory subprocess per variant and
measurement), `bench scaling` (a subprocess per point) and `bench startup` (a command in a fresh interpreter).
They time the small Swin of the end-to-end runs (same code path as Swin-T): the figures are checked for being
measured and consistent, not for their size. The official code exists only in the real Swin sizes."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest
from commands import SMALL_SWIN

from demt_exp.bench.__main__ import main

# One timed step of a narrow NYUD model at 32 x 32, batch 1, fresh-process memory: what every model bench shares.
MODEL_BENCH = ["encoder.dim=16", "tasks=nyud", "dataset.num_semseg_classes=5", "--batch", "1", "--size", "32", "32"]
ONE_STEP = ["--repeats", "1", "--warmup", "0"]


def model_bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    """`bench model <args>`; returns the JSON it wrote."""
    out_json = tmp_path / "bench.json"
    main(["model", *args, "--json", str(out_json)])
    return json.loads(out_json.read_text())


def test_model_bench_times_both_formulations_and_measures_memory(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    report = model_bench(tmp_path, *SMALL_SWIN, *MODEL_BENCH, *ONE_STEP, "--baseline", "plain", "--profile")
    out = capsys.readouterr().out
    assert re.search(r"speed-up fast vs plain \(median, alternating runs\): eval [\d.]+x, train [\d.]+x", out)
    for formulation in ("fast", "plain"):
        result = report["results"][formulation]
        assert result["train_median_s"] > 0 and result["eval_median_s"] > 0
        # the train step holds activations, gradients and the optimiser state; the eval forward none of them
        assert result["train_peak_minus_model_mib"] > result["eval_peak_minus_model_mib"] >= 0
        assert result["train_peak_mib"] >= result["model_mib"]
    shares = report["shares"]
    assert set(shares) == {"backbone", "encoder", "decoder", "heads", "backward+optimizer"}
    assert shares["backbone"] > 0 and abs(sum(shares.values()) - 1) < 1e-6


def test_model_bench_times_the_allocator_baseline_in_fresh_processes(tmp_path) -> None:
    """A heap policy cannot alternate in one process: `system-malloc` and the default are each
    timed in their own processes, and the ratio uses those times."""
    report = model_bench(
        tmp_path,
        *SMALL_SWIN,
        *MODEL_BENCH,
        *ONE_STEP,
        "--baseline",
        "system-malloc",
        "--memory-repeats",
        "2",
        "--cpu-allocator",
        "reuse",
    )
    assert list(report["results"]) == ["fast", "system-malloc"] and report["cpu_allocator"] == "reuse"
    assert list(report["times_s"]) == ["fast"] and "eval_median_s" not in report["results"]["system-malloc"]
    system, fast = report["results"]["system-malloc"], report["results"]["fast"]
    assert system["train_step_s"] > 0 and system["train_peak_minus_model_mib"] > system["eval_peak_minus_model_mib"]
    ratio = report["fresh_process_speedup_over_fast"]["system-malloc"]["train"]
    assert ratio == pytest.approx(system["train_step_s"] / fast["train_step_s"])
    with pytest.raises(SystemExit, match="needs --memory subprocess"):
        main(["model", "encoder.dim=16", "--baseline", "system-malloc", "--memory", "none", "--size", "32", "32"])


@pytest.mark.slow
def test_model_bench_times_the_official_code_in_fresh_processes(tmp_path) -> None:
    # Swin-T: the official model has only the released Swin sizes (no small Swin to compare it with).
    report = model_bench(tmp_path, *MODEL_BENCH, *ONE_STEP, "--baseline", "official")
    official, fast = report["results"]["official"], report["results"]["fast"]
    assert list(report["times_s"]) == ["fast"] and official["train_step_s"] > 0
    assert official["train_peak_minus_model_mib"] > official["eval_peak_minus_model_mib"] >= 0
    assert report["fresh_process_speedup_over_fast"]["official"]["eval"] == pytest.approx(
        official["eval_step_s"] / fast["eval_step_s"]
    )
    assert report["memory_fast_over_official"] == pytest.approx(
        fast["train_peak_minus_model_mib"] / official["train_peak_minus_model_mib"]
    )


@pytest.mark.slow
def test_scaling_bench_writes_a_png_and_tables_with_a_row_per_point(tmp_path) -> None:
    """Each point is a fresh subprocess running the real train step; one size, one task count and one
    timed step per attention mode keeps it short."""
    from PIL import Image

    out = tmp_path / "scaling"
    overrides = [*SMALL_SWIN, "encoder.dim=16"]
    main(
        [
            "scaling",
            *overrides,
            "--sizes",
            "32",
            "--tasks",
            "1",
            "--fixed-size",
            "32",
            "--fixed-tasks",
            "1",
            "--attention",
            "official",
            "global",
            "--repeats",
            "1",
            "--out",
            str(out),
        ]
    )
    with Image.open(out.with_suffix(".png")) as image:
        assert image.format == "PNG" and image.size == (1000, 700)
        image.verify()
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [(r["attention"], r["size"], r["tasks"]) for r in rows] == [("official", "32", "1"), ("global", "32", "1")]
    assert all(float(r["train_s"]) > 0 and float(r["train_peak_minus_model_mib"]) > 0 for r in rows)
    saved = json.loads(out.with_suffix(".json").read_text())
    assert [r["train_s"] for r in saved["rows"]] == [float(r["train_s"]) for r in rows]
    assert "torch" in saved["machine"]
    table = out.with_suffix(".md").read_text().splitlines()
    assert table[0].startswith(f"train step, batch 1, {' '.join(overrides)};") and saved["machine"] in table[0]
    assert table[2] == "| attention | input (px, square) | tasks | train step (s) | train peak minus model (MiB) |"
    assert [line.split(" | ")[0] for line in table[4:]] == ["| official", "| global"]


def test_startup_bench_times_a_command_in_a_fresh_process() -> None:
    from demt_exp.bench.startup import COMMANDS, time_command

    seconds, code = time_command(("demt_exp", "trainer.steps=-1"), repeats=1)
    assert code == 2 and 0 < seconds < 300  # the config mistake's exit code: it ran, and was timed
    assert ("demt_exp", "--help") in COMMANDS and ("demt_exp.report", "presets", "--no-macs") in COMMANDS
