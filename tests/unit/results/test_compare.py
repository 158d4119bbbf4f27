"""The compare command on run folders written as a training job writes them: metric choice, tables that
fit 120 columns, CSV/JSON, failed jobs skipped, one-line errors (in-process; the command line itself:
tests/integration/test_compare_cli.py)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from demt_exp.compare import main
from demt_exp.metrics.delta_m import STANDARD_METRICS

COMMON = ["+sweep=backbone_depth", "dataset.image_size=[32,32]", "trainer.steps=1"]


def nyud_metrics(
    miou: float, rmse: float, angle: float = 20.0, odsf: float | None = 76.0, delta_m: float | None = None
) -> dict[str, dict[str, Any]]:
    """A metrics.json as the training loop writes it for the NYUD tasks (every metric of each task)."""
    tree: dict[str, dict[str, Any]] = {
        "semseg": {"mIoU": miou, "pixel_acc": 70.0, "loss": 1.25},
        "depth": {
            "rmse": rmse,
            "abs_rel": 0.15,
            "log10": 0.06,
            "delta1": 80.0,
            "delta2": 95.0,
            "delta3": 99.0,
            "loss": 0.5,
        },
        "normals": {
            "mean_angle": angle,
            "median_angle": 14.0,
            "rmse_angle": 27.0,
            "within_11_25": 40.0,
            "within_22_5": 65.0,
            "within_30": 75.0,
            "loss": 0.2,
        },
        "edge": {"pixel_maxF": 70.0, "loss": 0.05},
    }
    if odsf is not None:
        tree["edge"].update({"odsF": odsf, "oisF": odsf + 1.0, "AP": 50.0, "ods_threshold": 0.4, "protocol": "atrc"})
    if delta_m is not None:
        tree["multi_task"] = {"delta_m": delta_m}
    return tree


def write_run(
    folder: Path,
    overrides: list[str],
    metrics: dict | None,
    dataset: str = "nyud",
    parameters: int = 32_070_259,
    extra_config: str = "",
) -> Path:
    """A run folder as `python -m demt_exp` leaves it: `.hydra/overrides.yaml` and `.hydra/config.yaml`
    (Hydra's files), `metrics.jsonl` (the step-0 record carries the parameter count) and, when the job
    finished, `metrics.json`."""
    hydra = folder / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "overrides.yaml").write_text("".join(f"- {item}\n" for item in overrides))
    (hydra / "config.yaml").write_text(
        f"tasks:\n  names:\n  - semseg\n  - depth\ndataset:\n  name: {dataset}\n  num_semseg_classes: 40\n"
        "model:\n  init: ${model.init_dir}/upernet.pth\n  init_dir: ${oc.env:DEMT_WEIGHTS,weights}\n" + extra_config
    )
    history = [
        {"step": 0, "model/parameters": float(parameters), "model/init": "random"},
        {"step": 1, "train/loss": 3.5},
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return folder


def two_key_sweep(root: Path) -> Path:
    """`-m backbone=swin_t,swin_s encoder.depth=1,2`: four jobs, values chosen so every mean is exact."""
    values = {
        ("swin_t", "1"): (40.0, 0.60),
        ("swin_t", "2"): (42.0, 0.58),
        ("swin_s", "1"): (45.0, 0.55),
        ("swin_s", "2"): (47.5, 0.5125),
    }
    for job, ((backbone, depth), (miou, rmse)) in enumerate(values.items()):
        write_run(
            root / str(job),
            [f"backbone={backbone}", f"encoder.depth={depth}", *COMMON],
            nyud_metrics(miou, rmse, delta_m=miou - 45.0),
            parameters=30_000_000 + 1000 * job,
        )
    return root


def seeds_sweep(root: Path, mious: list[float], dataset: str = "nyud") -> Path:
    for seed, miou in enumerate(mious):
        write_run(
            root / str(seed),
            [f"trainer.seed={seed}", "+sweep=seeds", *COMMON[1:]],
            nyud_metrics(miou, 0.5 + 0.01 * seed),
            dataset=dataset,
        )
    return root


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    main(args)
    captured = capsys.readouterr()
    return captured.out, captured.err


def fails(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line of a refused command (exit code 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("compare: error: ")
    return err[-1]


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_default_metrics_are_the_nyud_delta_m_set_then_delta_m_and_parameters(tmp_path: Path, capsys) -> None:
    out, err = run([str(two_key_sweep(tmp_path)), "--format", "csv", "--no-plot"], capsys)
    table = read_csv(out)
    assert list(table[0]) == [
        "backbone",
        "encoder.depth",
        "n",
        "semseg/mIoU",
        "depth/rmse",
        "normals/mean_angle",
        "edge/odsF",
        "multi_task/delta_m",
        "model/parameters",
    ]
    assert [(r["backbone"], r["encoder.depth"], r["n"]) for r in table] == [
        ("swin_t", "1", "1"),
        ("swin_t", "2", "1"),
        ("swin_s", "1", "1"),
        ("swin_s", "2", "1"),
    ]
    assert [float(r["semseg/mIoU"]) for r in table] == [40.0, 42.0, 45.0, 47.5]
    assert [float(r["depth/rmse"]) for r in table] == [0.60, 0.58, 0.55, 0.5125]
    assert [float(r["multi_task/delta_m"]) for r in table] == [-5.0, -3.0, 0.0, 2.5]
    assert [r["model/parameters"] for r in table] == ["30000000", "30001000", "30002000", "30003000"]
    assert (tmp_path / "compare.csv").read_text() == out  # the file holds what was printed
    assert "wrote" in err and "skipped" not in err


def test_the_default_set_comes_from_delta_m(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """One list of the standard metrics: change it there and compare follows."""
    monkeypatch.setitem(STANDARD_METRICS, "nyud", ("normals/mean_angle", "depth/rmse"))
    out, _ = run([str(two_key_sweep(tmp_path)), "--format", "csv", "--no-plot"], capsys)
    assert list(read_csv(out)[0])[3:] == ["normals/mean_angle", "depth/rmse", "multi_task/delta_m", "model/parameters"]


def test_a_standard_metric_no_run_has_is_named_and_left_out(tmp_path: Path, capsys) -> None:
    for job, miou in enumerate([40.0, 44.0]):
        write_run(tmp_path / str(job), [f"backbone=swin_{'ts'[job]}"], nyud_metrics(miou, 0.6, odsf=None))
    out, err = run([str(tmp_path), "--format", "csv", "--no-plot"], capsys)
    assert list(read_csv(out)[0]) == [
        "backbone",
        "n",
        "semseg/mIoU",
        "depth/rmse",
        "normals/mean_angle",
        "model/parameters",
    ]
    assert "not in any run: edge/odsF" in err


def test_metrics_option_chooses_and_orders_the_columns(tmp_path: Path, capsys) -> None:
    out, _ = run(
        [str(two_key_sweep(tmp_path)), "--metrics", "depth/rmse", "semseg/pixel_acc", "--format", "csv", "--no-plot"],
        capsys,
    )
    table = read_csv(out)
    assert list(table[0]) == ["backbone", "encoder.depth", "n", "depth/rmse", "semseg/pixel_acc"]
    assert [float(r["semseg/pixel_acc"]) for r in table] == [70.0] * 4


def test_markdown_rows_with_units_and_decimals(tmp_path: Path, capsys) -> None:
    out, _ = run([str(two_key_sweep(tmp_path)), "--no-plot"], capsys)
    lines = out.splitlines()
    assert lines[0] == (
        "| backbone | encoder.depth | n | semseg/mIoU | depth/rmse | normals/mean_angle | edge/odsF "
        "| Delta_m | params |"
    )
    assert lines[1] == "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    assert lines[2] == "| swin_t | 1 | 1 | 40.00 | 0.6000 | 20.00 | 76.00 | -5.00 | 30,000,000 |"
    assert lines[5] == "| swin_s | 2 | 1 | 47.50 | 0.5125 | 20.00 | 76.00 | +2.50 | 30,003,000 |"
    assert lines[6:] == ["", "units: % (semseg/mIoU, edge/odsF, Delta_m), m (depth/rmse), deg (normals/mean_angle)"]


def test_seeds_become_one_row_with_mean_and_sample_std(tmp_path: Path, capsys) -> None:
    root = seeds_sweep(tmp_path, [40.0, 42.0, 47.0])  # mean 43, sample std sqrt(26 / 2) = 3.6056
    out, _ = run([str(root), "--metrics", "semseg/mIoU", "depth/rmse", "--no-plot"], capsys)
    assert out.splitlines()[:3] == [
        "| n | semseg/mIoU | depth/rmse |",
        "|---:|---:|---:|",
        "| 3 | 43.00 ± 3.61 | 0.5100 ± 0.0100 |",
    ]
    assert "sample standard deviation (n - 1)" in out
    table = read_csv((tmp_path / "compare.csv").read_text())
    assert len(table) == 1 and table[0]["n"] == "3"
    assert float(table[0]["semseg/mIoU"]) == pytest.approx(43.0, abs=1e-12)
    assert float(table[0]["semseg/mIoU std"]) == pytest.approx(math.sqrt(13.0), abs=1e-12)


def test_json_holds_every_value_unit_and_run_folder(tmp_path: Path, capsys) -> None:
    root = seeds_sweep(tmp_path, [40.0, 46.0])
    out, _ = run([str(root), "--metrics", "semseg/mIoU", "normals/mean_angle", "--format", "json", "--no-plot"], capsys)
    payload = json.loads(out)
    assert payload["keys"] == [] and payload["skipped"] == []
    assert payload["metrics"] == {"semseg/mIoU": {"unit": "%"}, "normals/mean_angle": {"unit": "degrees"}}
    (row,) = payload["rows"]
    assert row["n"] == 2 and row["runs"] == [str(root / "0"), str(root / "1")]
    assert row["metrics"]["semseg/mIoU"] == {
        "mean": 43.0,
        "std": pytest.approx(math.sqrt(18.0)),
        "values": [40.0, 46.0],
    }


def long_sweep(root: Path) -> Path:
    """Four jobs, two swept keys with long names and long list values, every NYUD metric."""
    lists = ["[semseg,depth,normals,edge,human_parts,sal]", "[semseg,depth]"]
    for job in range(4):
        overrides = [f"tasks.loss_weights_by_task_name.normals={job % 2 + 1}", f"tasks.names={lists[job // 2]}"]
        write_run(root / str(job), overrides, nyud_metrics(40.0 + job, 0.6, delta_m=1.0))
    return root


def test_a_two_key_sweep_with_long_keys_and_values_fits_120_columns(tmp_path: Path, capsys) -> None:
    out, _ = run([str(long_sweep(tmp_path)), "--metrics", "all", "--no-plot"], capsys)
    lines = out.splitlines()
    assert max(map(len, lines)) <= 120
    assert "[k1] tasks.loss_weights_by_task_name.normals" in lines
    assert "[v1] [semseg,depth,normals,edge,human_parts,sal]" in lines
    assert "[semseg,depth]" in out  # short enough to stay in its cell
    blocks = [b.splitlines() for b in out.split("\n\n")[:-1]]
    assert len(blocks) >= 4
    for block in blocks:  # every block repeats the swept values, so a row reads across blocks
        assert block[0].startswith("| [k1] | tasks.names | n |")
        assert [line.split(" | ")[1] for line in block[2:]] == ["[v1]", "[v1]", "[semseg,depth]", "[semseg,depth]"]
    headers = " ".join(b[0] for b in blocks)
    every = {
        f"{t}/{m}" for t, ms in nyud_metrics(1, 1, delta_m=1.0).items() for m, v in ms.items() if not isinstance(v, str)
    }
    assert all(name in headers for name in every - {"multi_task/delta_m"} | {"Delta_m", "params"})


def test_a_seeds_sweep_with_every_metric_fits_120_columns(tmp_path: Path, capsys) -> None:
    root = seeds_sweep(tmp_path, [40.0, 41.0, 42.0, 43.0, 44.0])
    out, _ = run([str(root), "--metrics", "all", "--no-plot"], capsys)
    lines = out.splitlines()
    assert max(map(len, lines)) <= 120
    blocks = [b.splitlines() for b in out.split("\n\n")[:-1]]
    assert all(block[0].startswith("| n |") and block[2].startswith("| 5 |") for block in blocks)
    assert sum(block[0].count(" | ") for block in blocks) == 24  # 23 metrics and params, once each
    assert "| 42.00 ± 1.58 |" in out  # semseg/mIoU: mean 42, std sqrt(2.5)


def test_many_swept_keys_fall_back_to_row_numbers(tmp_path: Path, capsys) -> None:
    keys = [f"encoder.some_rather_long_option_{i}" for i in range(16)]
    for job in range(3):
        write_run(
            tmp_path / str(job),
            [f"{key}=value_{job}_of_key_{i}" for i, key in enumerate(keys)],
            nyud_metrics(40.0 + job, 0.6),
        )
    out, _ = run([str(tmp_path), "--no-plot"], capsys)
    lines = out.splitlines()
    assert max(map(len, lines)) <= 120
    blocks = [b.splitlines() for b in out.split("\n\n")[:-1]]
    assert blocks[0][0].startswith("| # | [k1] | [k2] |") and len(blocks) >= 3
    for block in blocks:  # the swept values do not fit beside the metrics: a row number joins the blocks
        assert block[0].startswith("| # |") and [line[:5] for line in block[2:]] == ["| 1 |", "| 2 |", "| 3 |"]
    assert "| 3 | value_2_of_key_0 | value_2_of_key_1 |" in out
    assert f"[k16] {keys[15]}" in lines and "| 2 | 41.00 | 0.6000 |" in out


def test_unknown_dataset_shows_every_metric_and_says_so(tmp_path: Path, capsys) -> None:
    root = seeds_sweep(tmp_path, [40.0, 41.0], dataset="synthetic")
    out, err = run([str(root), "--format", "csv", "--no-plot"], capsys)
    assert len(read_csv(out)[0]) == 1 + 2 * 24  # n, then mean and std of 23 metrics and the parameters
    assert "no Delta_m metric set for dataset 'synthetic': showing every metric" in err


def test_failed_jobs_are_skipped_with_one_line_each(tmp_path: Path, capsys) -> None:
    two_key_sweep(tmp_path)
    (tmp_path / "1" / "metrics.json").unlink()  # crashed before the end
    (tmp_path / "2" / "metrics.json").write_text('{\n  "semseg": {\n    "mIoU": 4')  # killed while writing
    (tmp_path / "3" / "metrics.json").write_text("[1, 2]")
    write_run(tmp_path / "4", ["backbone=swin_b"], None)  # a job killed right after Hydra made its folder
    out, err = run([str(tmp_path), "--format", "csv", "--no-plot"], capsys)
    assert [(r["backbone"], r["n"]) for r in read_csv(out)] == [("swin_t", "1")]
    skipped = [line for line in err.splitlines() if line.startswith("skipped")]
    assert skipped == [
        f"skipped {tmp_path / '1'}: no metrics.json (the job did not finish)",
        f"skipped {tmp_path / '2'}: metrics.json is not valid JSON, half-written or damaged "
        "(Expecting ',' delimiter: line 3 column 14 (char 29))",
        f"skipped {tmp_path / '3'}: metrics.json is not a {{task: {{metric: value}}}} mapping",
        f"skipped {tmp_path / '4'}: no metrics.json (the job did not finish)",
    ]


def test_nothing_usable_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    write_run(tmp_path / "0", ["backbone=swin_t"], None)
    (tmp_path / "1").mkdir()
    write_run(tmp_path / "1" / "run", ["backbone=swin_s"], None)
    (tmp_path / "1" / "run" / "metrics.json").write_text("")
    line = fails([str(tmp_path)], capsys)
    assert line == f"compare: error: no usable run under {tmp_path}: every run folder was skipped (see above)"


@pytest.mark.parametrize("case", ["missing", "empty", "file"])
def test_a_bad_path_is_a_one_line_error(case: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "multirun"
    expected = "does not exist (expected a run folder or a multirun folder)"
    if case == "empty":
        path.mkdir()
        expected = "holds no run folder (no .hydra/ or metrics.json below it)"
    elif case == "file":
        path.write_text("x")
        expected = "is not a folder (expected a run folder or a multirun folder)"
    assert fails([str(path)], capsys) == f"compare: error: {path} {expected}"


@pytest.mark.parametrize(
    "metric,expected",
    [
        ("semseg", "--metrics semseg: expected task/metric, e.g. semseg/mIoU (or `all`)"),
        ("semseg/mIoU/x", "--metrics semseg/mIoU/x: expected task/metric, e.g. semseg/mIoU (or `all`)"),
        ("sal/maxF", "--metrics sal/maxF: no run has it; the runs have depth/abs_rel, depth/delta1"),
    ],
)
def test_a_bad_metric_is_a_one_line_error(metric: str, expected: str, tmp_path: Path, capsys) -> None:
    line = fails([str(seeds_sweep(tmp_path, [40.0])), "--metrics", metric], capsys)
    assert line.startswith(f"compare: error: {expected}")


def test_an_output_folder_that_cannot_be_written_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("a file, not a folder")
    line = fails([str(seeds_sweep(tmp_path / "runs", [40.0])), "--out", str(blocker), "--no-plot"], capsys)
    assert line.startswith(f"compare: error: --out {blocker}: cannot write compare.csv there (")
