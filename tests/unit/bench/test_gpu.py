"""`bench gpu`: without CUDA it says so and exits cleanly; its dry run goes through every part on the CPU
(each model and mode, the official computation, FLOP counts, the gloo DDP check); the peak table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from demt_exp.bench import counts
from demt_exp.bench.gpu import main, peak_flops


def test_without_cuda_it_says_so_and_measures_nothing(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    main([])
    assert capsys.readouterr().out.startswith("bench gpu: no CUDA device here, nothing to measure")


def test_the_peak_follows_the_device_and_the_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    cuda = torch.device("cuda")
    assert peak_flops(cuda, "bf16") == pytest.approx(989.4e12)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    assert peak_flops(cuda, "fp32") == pytest.approx(66.9e12)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    assert peak_flops(cuda, "fp32") == pytest.approx(494.7e12)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Other GPU")
    assert peak_flops(cuda, "bf16") is None and peak_flops(torch.device("cpu"), "bf16") is None


@pytest.mark.slow
def test_the_dry_run_measures_every_part_on_the_cpu(tmp_path: Path, capsys) -> None:
    main(["--dry-run", "--json", str(tmp_path / "gpu.json"), "--workdir", str(tmp_path)])
    report = json.loads((tmp_path / "gpu.json").read_text())
    rows = {(r["model"], r["mode"], r["official"]): r for r in report["results"]}
    model = "DeMT Swin-T"
    assert set(rows) == {(model, "fp32", False), (model, "fp32", True), (model, "bf16", False)}
    ours, official = rows[(model, "fp32", False)], rows[(model, "fp32", True)]
    assert ours["train_step_gflops"] == rows[(model, "bf16", False)]["train_step_gflops"]  # same count
    assert all(r["train_step_gflops"] > 0 and r["images_per_s"] > 0 and r["mfu"] is None for r in (ours, official))
    # the same counter as `bench counts`, on the same step: the same totals
    nyud = ["backbone=swin_t", "tasks=nyud", "dataset.num_semseg_classes=40"]
    counted = counts.run(argparse.Namespace(overrides=nyud, batch=2, size=[64, 64], no_official=False, options=False))
    assert rows[("DeMT Swin-T", "fp32", False)]["train_step_gflops"] == counted["ours"]["train_flops"]["total"] / 1e9
    assert rows[("DeMT Swin-T", "fp32", True)]["train_step_gflops"] == counted["official"]["train_flops"]["total"] / 1e9
    assert report["ddp"] == {"backend": "gloo", "max_abs_difference": 0.0, "equal_within_1e-4": True}
    out = capsys.readouterr().out
    assert "cpu (dry run), batch 2, 64 x 64" in out and "DeMT Swin-T  fp32  official" in out
