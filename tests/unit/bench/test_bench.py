"""The benchmark command, in-process: real figures for each deformable backend and a training step, the
choice of baselines, the official reference model and the scaling outputs. The benchmarks that time or measure
in fresh processes (model, scaling, startup): tests/integration/test_bench_fresh_processes.py."""

from __future__ import annotations

import re

import pytest
from commands import SMALL_SWIN

from demt_exp.bench.__main__ import main
from demt_exp.bench.help import SUBCOMMANDS
from demt_exp.models import deform


def test_deform_bench_prints_each_backend_and_the_choice(capsys: pytest.CaptureFixture[str]) -> None:
    main(["deform", "--shape", "1", "8", "6", "7", "--repeats", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert re.search(r"torch\s+\d+\.\d ms", out)
    if deform.torchvision_deform_available():
        assert re.search(r"torchvision\s+\d+\.\d ms", out) and "ratio torchvision / torch" in out
    assert "auto picks: torch" in out


def test_step_bench_prints_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    main(
        [
            "step",
            *SMALL_SWIN,
            "dataset.image_size=[32,32]",
            "dataset.train.num_samples=2",
            "trainer.batch_size=2",
            "encoder.dim=16",
            "tasks=nyud",
            "--repeats",
            "1",
        ]
    )
    out = capsys.readouterr().out
    match = re.search(r"images/s", out)
    assert match and float(re.search(r": ([\d.]+) images/s", out).group(1)) > 0


def test_boundary_bench_prints_images_per_second(capsys: pytest.CaptureFixture[str]) -> None:
    main(["boundary", "--images", "2", "--size", "40", "56", "--protocol", "atrc-fast-9thr", "--workers", "0"])
    out = capsys.readouterr().out
    assert "boundary atrc-fast-9thr" in out and float(re.search(r": ([\d.]+) images/s", out).group(1)) > 0
    assert re.search(r"odsF \d+\.\d\d", out)


def test_the_plain_formulation_under_the_system_heap_policy_joins_when_both_baselines_are_named() -> None:
    from demt_exp.bench.model import chosen_variants, same_heap_policy

    both = chosen_variants(["plain", "system-malloc", "plain"])
    assert both == ["fast", "plain", "system-malloc", "plain+system-malloc"]
    assert same_heap_policy(both) == ["fast", "plain"]
    assert chosen_variants(["none"]) == ["fast"] and chosen_variants(["system-malloc"]) == ["fast", "system-malloc"]


def test_official_baseline_comes_last_and_never_alternates_in_this_process() -> None:
    from demt_exp.bench.model import chosen_variants, same_heap_policy

    variants = chosen_variants(["official", "plain", "system-malloc"])
    assert variants == ["fast", "plain", "system-malloc", "plain+system-malloc", "official"]
    assert same_heap_policy(variants) == ["fast", "plain"]


def test_the_official_baseline_is_the_reference_model_of_the_configured_size_and_tasks() -> None:
    import torch

    from demt_exp.bench.official import build_official_model
    from demt_exp.config.compose import compose_config

    cfg = compose_config(["encoder.dim=16", "tasks=nyud", "dataset.num_semseg_classes=5"])
    model = build_official_model(cfg).eval()
    assert type(model).__name__ == "OfficialModel" and type(model.head).__name__ == "DemtHead"
    assert model.head.linear1[0].out_features == 16 and len(model.head.task_querys) == 4
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 48))
    assert {t: tuple(o.shape) for t, o in out.items()} == {
        "semseg": (1, 5, 32, 48),
        "depth": (1, 1, 32, 48),
        "normals": (1, 3, 32, 48),
        "edge": (1, 1, 32, 48),
    }
    degmix = build_official_model(compose_config(["encoder=degmix", "decoder=degmix", "encoder.dim=16"]))
    assert type(degmix.head).__name__ == "DegmixHead"


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["decoder=fcn"], "PassThroughDecoder has no official counterpart"),
        (["decoder.attention=global"], "decoder.attention=global"),
        (["encoder=degmix", "decoder=degmix", "encoder.projection=linear"], "encoder.projection=linear"),
        (["backbone=hrnet18"], "backbone._target_="),
    ],
)
def test_the_official_baseline_refuses_a_config_the_released_code_does_not_have(overrides: list[str], key: str) -> None:
    from demt_exp.bench.official import build_official_model
    from demt_exp.config.compose import compose_config

    with pytest.raises(SystemExit, match=re.escape(key)):
        build_official_model(compose_config(overrides))


def test_the_eager_baseline_times_the_uncompiled_model_beside_the_compiled_one() -> None:
    import argparse

    from demt_exp.bench.model import (
        Setting,
        add_options,
        chosen_variants,
        same_heap_policy,
    )

    assert same_heap_policy(chosen_variants(["eager"])) == ["fast", "eager"]
    parser = argparse.ArgumentParser()
    add_options(parser)
    setting = Setting(
        parser.parse_args([*SMALL_SWIN, "encoder.dim=16", "--size", "32", "32", "--compile", "--device", "cpu"])
    )
    assert setting.net is setting.compiled and setting.compiled is not setting.model
    setting.use("eager")
    assert setting.net is setting.model
    setting.use("fast")
    assert setting.net is setting.compiled
    with pytest.raises(SystemExit, match="needs --compile"):
        main(["model", "encoder.dim=16", "--baseline", "eager", "--memory", "none", "--size", "32", "32"])


def test_linear_bench_prints_the_speed_up_of_each_shape(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    import demt_exp.bench.components as bench

    monkeypatch.setattr(bench, "LINEAR_SHAPES", ((64, 8, 16), (32, 16, 8)))
    main(["linear", "--repeats", "1"])
    lines = [line for line in capsys.readouterr().out.splitlines() if "forward+backward" in line]
    assert [line.split(":")[0].strip() for line in lines] == ["(    64,    8) ->   16", "(    32,   16) ->    8"]
    assert all(float(x) > 0 for line in lines for x in re.findall(r"([\d.]+)x", line))


def test_scaling_outputs_hold_every_point_and_a_png_of_both_sweeps(tmp_path) -> None:
    """The writer on given rows: two modes, a size sweep (1 task) and a task sweep (size 256)."""
    import argparse
    import csv

    from PIL import Image

    from demt_exp.bench.scaling import write_outputs

    rows = [
        {
            "attention": mode,
            "size": size,
            "tasks": tasks,
            "train_s": 0.5 * size / 256 + tasks + (mode == "global"),
            "train_peak_minus_model_mib": 100.0 * tasks * size / 256,
        }
        for mode in ("official", "global")
        for size, tasks in ((256, 1), (640, 1), (256, 5))
    ]
    args = argparse.Namespace(
        out=tmp_path / "s",
        device="cpu",
        batch=1,
        overrides=[],
        attention=["official", "global"],
        fixed_tasks=1,
        fixed_size=256,
    )
    paths = write_outputs(rows, args)
    assert [p.name for p in paths] == ["s.md", "s.csv", "s.json", "s.png"] and all(p.is_file() for p in paths)
    with Image.open(paths[3]) as image:
        assert image.format == "PNG" and image.size == (1000, 700)
    table = paths[0].read_text().splitlines()[4:]
    assert table[1] == "| official | 640 | 1 | 2.25 | 250 |" and table[5] == "| global | 256 | 5 | 6.50 | 500 |"
    assert [(r["attention"], int(r["size"]), int(r["tasks"])) for r in csv.DictReader(paths[1].open())] == [
        (r["attention"], r["size"], r["tasks"]) for r in rows
    ]


def test_bench_help_lists_every_subcommand_with_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--help"])
    shown = capsys.readouterr().out
    assert set(SUBCOMMANDS) == {
        "model",
        "counts",
        "gpu",
        "scaling",
        "startup",
        "deform",
        "step",
        "data",
        "boundary",
        "linear",
        "weighting",
    }
    for name, line in SUBCOMMANDS.items():
        assert f"  {name}" in shown and line in shown
