"""The benchmark command prints real figures for each deformable backend and a training step."""

from __future__ import annotations

import re

import pytest

from demt_exp.bench import main
from demt_exp.models import deform


def test_deform_bench_prints_each_backend_and_the_choice(capsys: pytest.CaptureFixture[str]) -> None:
    main(["deform", "--shape", "1", "8", "6", "7", "--repeats", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert re.search(r"torch\s+\d+\.\d ms", out)
    if deform.torchvision_deform_available():
        assert re.search(r"torchvision\s+\d+\.\d ms", out) and "ratio torchvision / torch" in out
    assert "auto picks: torch" in out


def test_step_bench_prints_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    main(["step", "dataset.image_size=[32,32]", "dataset.train.num_samples=2", "trainer.batch_size=2",
          "encoder.dim=16", "tasks=nyud", "--repeats", "1"])
    out = capsys.readouterr().out
    match = re.search(r"images/s", out)
    assert match and float(re.search(r": ([\d.]+) images/s", out).group(1)) > 0


def test_data_bench_prints_samples_per_worker(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from fake_nyud import write_fake_nyud

    root = write_fake_nyud(tmp_path / "NYUDv2", n_train=3, n_val=2, size=(60, 80))
    main(["data", "dataset=nyud", f"dataset.root={root}", "dataset.image_size=[48,64]", "--samples", "2"])
    out = capsys.readouterr().out
    rates = dict(re.findall(r"(train|val) pipeline .*: ([\d.]+) samples/s per worker", out))
    assert set(rates) == {"train", "val"} and all(float(r) > 0 for r in rates.values())


def test_boundary_bench_prints_images_per_second(capsys: pytest.CaptureFixture[str]) -> None:
    main(["boundary", "--images", "2", "--size", "40", "56", "--protocol", "atrc-fast-9thr", "--workers", "0"])
    out = capsys.readouterr().out
    assert "boundary atrc-fast-9thr" in out and float(re.search(r": ([\d.]+) images/s", out).group(1)) > 0
    assert re.search(r"odsF \d+\.\d\d", out)


def test_model_bench_times_both_formulations_and_measures_memory(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    import json

    out_json = tmp_path / "bench.json"
    main(["model", "encoder.dim=16", "tasks=nyud", "dataset.num_semseg_classes=5", "--batch", "1", "--size", "32", "32",
          "--repeats", "1", "--warmup", "0", "--baseline", "plain", "--profile", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert re.search(r"speed-up fast vs plain \(median, alternating runs\): eval [\d.]+x, train [\d.]+x", out)
    report = json.loads(out_json.read_text())
    for formulation in ("fast", "plain"):
        result = report["results"][formulation]
        assert result["train_median_s"] > 0 and result["eval_median_s"] > 0
        # the train step holds activations, gradients and the optimiser state; the eval forward none of them
        assert result["train_peak_minus_model_mib"] > result["eval_peak_minus_model_mib"] >= 0
        assert result["train_peak_mib"] >= result["model_mib"]
    shares = report["shares"]
    assert set(shares) == {"backbone", "encoder", "decoder", "heads", "backward+optimizer"}
    assert shares["backbone"] > 0 and abs(sum(shares.values()) - 1) < 1e-6
