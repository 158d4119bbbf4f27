"""`python -m demt_exp.evaluate`: checkpoint -> val metrics, SEISM edge maps and panels; the val
split only; one process and two torchrun (gloo) processes give the same results."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from commands import run_module
from eval_helpers import TINY_MODEL, TINY_SYNTHETIC, run_evaluation, write_checkpoint
from hydra.utils import instantiate
from paths import REPO_ROOT
from PIL import Image

from demt_exp.data.crop import edge_uint8
from demt_exp.data.example_nyud import write_fake_nyud
from demt_exp.engine.from_checkpoint import inference_config, load_inference_model
from demt_exp.metrics import (
    BoundaryMetric,
    MultiTaskMetrics,
    atrc_protocol,
    gt_boundary_map,
)
from demt_exp.tracking import format_table

REPO = REPO_ROOT


@pytest.fixture(scope="module")
def synthetic_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("run") / "checkpoints" / "last.pt"
    write_checkpoint(path, TINY_SYNTHETIC)
    return path


@pytest.mark.slow
def test_metrics_json_holds_every_metric_the_protocol_and_per_image_files(
    synthetic_checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="demt_exp"):
        metrics = run_evaluation(synthetic_checkpoint, tmp_path, "eval.panels=2", "eval.num_workers=0")
    tasks = ["semseg", "human_parts", "sal", "normals", "edge", "depth"]
    expected = MultiTaskMetrics(tasks, 8).higher_is_better()  # synthetic data: no SEISM boundary ground truth
    assert {t: set(metrics[t]) for t in tasks} == {t: set(v) for t, v in expected.items()}
    # The stored config decides the data: the checkpoint's 5 val scenes at 32 x 32, not the default 64.
    assert metrics["protocol"]["boundary"] == "atrc" and metrics["protocol"]["images"] == "5"
    assert metrics["protocol"]["split"] == "val"
    edges = sorted((tmp_path / "edge_preds").iterdir())
    assert [p.name for p in edges] == [f"synthetic_val_{i:06d}.png" for i in range(5)]
    assert all(Image.open(p).size == (32, 32) and Image.open(p).mode == "L" for p in edges)
    assert sorted(p.name for p in (tmp_path / "panels").iterdir()) == [
        "synthetic_val_000000.png",
        "synthetic_val_000001.png",
    ]
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert history[0]["val/semseg/mIoU"] == pytest.approx(metrics["semseg"]["mIoU"])
    # The printed table: no reference was given, so no reference column (and no column of nan).
    table = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("validation metrics"))
    assert table.splitlines()[1].split() == ["task", "metric", "model"]
    assert "nan" not in table and f"{metrics['semseg']['mIoU']:.4f}" in table


def test_the_table_has_a_reference_column_only_when_there_is_a_reference() -> None:
    results = {"semseg": {"mIoU": 41.5, "pixel_acc": 0.8}, "depth": {"rmse": 0.61}}
    assert format_table(results).splitlines() == [
        "task    metric     model",
        "------  ---------  -------",
        "semseg  mIoU       41.5000",
        "semseg  pixel_acc  0.8000",
        "depth   rmse       0.6100",
    ]
    with_reference = format_table(results, {"semseg": {"mIoU": 12.5}}, reference_name="chance").splitlines()
    assert with_reference[0].split() == ["task", "metric", "model", "chance"]
    assert with_reference[2].split() == ["semseg", "mIoU", "41.5000", "12.5000"]
    assert with_reference[3].split() == ["semseg", "pixel_acc", "0.8000", "-"]  # not in the reference


@pytest.mark.slow
def test_val_split_only_and_edge_maps_cropped_to_the_original_size(tmp_path: Path) -> None:
    root = write_fake_nyud(tmp_path / "NYUDv2", n_train=3, n_val=2, size=(60, 80))
    overrides = [*TINY_MODEL, "dataset=nyud", f"dataset.root={root}", "dataset.image_size=[64,96]"]
    checkpoint = tmp_path / "last.pt"
    write_checkpoint(checkpoint, overrides)
    # Nothing of the training split is left: evaluation must not touch it.
    train_ids = (root / "gt_sets" / "train.txt").read_text().split()
    (root / "gt_sets" / "train.txt").unlink()
    for folder in ("images", "segmentation", "depth", "normals", "edge"):
        for sample_id in train_ids:
            next((root / folder).glob(f"{sample_id}.*")).unlink()
    metrics = run_evaluation(checkpoint, tmp_path / "eval", "eval.num_workers=0")
    assert set(metrics) == {"semseg", "depth", "normals", "edge", "protocol"}
    # The official code saves 255 * sigmoid, cropped out of the centred padding (2 rows, 8 columns).
    cfg, payload = inference_config(str(checkpoint), [f"checkpoint={checkpoint}"], "evaluate")
    model = load_inference_model(checkpoint, cfg, payload)
    val = instantiate(cfg.dataset.val)
    sample = val[0]
    assert sample["image"].shape[-2:] == (64, 96)
    with torch.no_grad():
        logits = model(sample["image"][None])["edge"][0, 0]
    expected = edge_uint8(logits[2:62, 8:88]).numpy()
    saved = np.asarray(Image.open(tmp_path / "eval" / "edge_preds" / f"{val.ids[0]}.png"))
    assert saved.shape == (60, 80)
    assert np.array_equal(saved, expected)
    # The boundary numbers equal SEISM's recipe run on the files on disk: the written PNGs against
    # the boundary map of the NYUD edge label files.
    assert metrics["protocol"]["edge/protocol"] == "atrc"
    reference = BoundaryMetric(atrc_protocol("nyud"))
    for sample_id in val.ids:
        prediction = np.asarray(Image.open(tmp_path / "eval" / "edge_preds" / f"{sample_id}.png"))
        reference.update_image(prediction, gt_boundary_map(np.asarray(Image.open(root / "edge" / f"{sample_id}.png"))))
    for name in ("odsF", "oisF", "AP"):
        assert metrics["edge"][name] == pytest.approx(reference.compute()[name], abs=1e-9), name


@pytest.mark.slow
def test_delta_m_against_reference_files(synthetic_checkpoint: Path, tmp_path: Path) -> None:
    reference = tmp_path / "refs.yaml"
    reference.write_text("semseg: {mIoU: 20.0}\ndepth: {rmse: 2.0}\n")
    metrics = run_evaluation(
        synthetic_checkpoint,
        tmp_path / "eval",
        "eval.panels=0",
        "eval.num_workers=0",
        f"eval.delta_m.references=[{reference}]",
        "eval.delta_m.metrics=[semseg/mIoU,depth/rmse]",
    )
    expected = 0.5 * (100 * (metrics["semseg"]["mIoU"] - 20.0) / 20.0 - 100 * (metrics["depth"]["rmse"] - 2.0) / 2.0)
    assert metrics["multi_task"]["delta_m"] == pytest.approx(expected, rel=1e-9)
    assert metrics["protocol"]["delta_m_metrics"] == "semseg/mIoU,depth/rmse"


def test_unknown_boundary_protocol_is_refused(synthetic_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="eval.boundary_protocol='bsds'.*atrc"):
        run_evaluation(synthetic_checkpoint, tmp_path, "eval.boundary_protocol=bsds")


@pytest.mark.slow
def test_weights_only_file_uses_the_command_line_config(synthetic_checkpoint: Path, tmp_path: Path) -> None:
    # A bare state dict (what `python -m demt_exp.convert` writes) has no config: the overrides describe the model.
    bare = tmp_path / "weights.pt"
    torch.save(torch.load(synthetic_checkpoint, weights_only=False)["model"], bare)
    from_bare = run_evaluation(bare, tmp_path / "bare", *TINY_SYNTHETIC, "eval.panels=0", "eval.num_workers=0")
    from_run = run_evaluation(synthetic_checkpoint, tmp_path / "run", "eval.panels=0", "eval.num_workers=0")
    for task in ("semseg", "depth", "edge"):
        assert from_bare[task] == pytest.approx(from_run[task], rel=1e-12), task


@pytest.mark.slow
def test_two_torchrun_processes_give_the_one_process_results(synthetic_checkpoint: Path, tmp_path: Path) -> None:
    common = [f"checkpoint={synthetic_checkpoint}", "eval.panels=5", "eval.num_workers=0", "trainer.device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    single = run_module("demt_exp.evaluate", *common, f"hydra.run.dir={tmp_path / 'one'}", check=False, env=env)
    assert single.returncode == 0, single.stderr[-3000:]
    sharded = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "demt_exp.evaluate",
            *common,
            f"hydra.run.dir={tmp_path / 'two'}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert one["protocol"] == two["protocol"]
    for task in ("semseg", "human_parts", "sal", "normals", "edge", "depth"):
        assert set(one[task]) == set(two[task])
        for name, value in one[task].items():
            assert two[task][name] == pytest.approx(value, rel=1e-9, abs=1e-12), (task, name)
    # 5 images over 2 processes: each written exactly once, byte for byte as in one process.
    for folder in ("edge_preds", "panels"):
        names = sorted(p.name for p in (tmp_path / "one" / folder).iterdir())
        assert names == sorted(p.name for p in (tmp_path / "two" / folder).iterdir()) and len(names) == 5
        for name in names:
            assert (tmp_path / "one" / folder / name).read_bytes() == (tmp_path / "two" / folder / name).read_bytes()
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == 1  # rank 0 alone logs


def test_a_missing_or_unreadable_checkpoint_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    cases = {
        "missing": [f"checkpoint={tmp_path / 'missing.pt'}"],
        "unreadable": [f"checkpoint={tmp_path / 'notes.pt'}"],
        "none": [],
    }
    named = {
        "missing": f"checkpoint {tmp_path / 'missing.pt'} does not exist",
        "unreadable": f"checkpoint {tmp_path / 'notes.pt'} cannot be read",
        "none": "checkpoint=PATH",
    }
    expected = "expected a file written by torch.save: a training checkpoint or a weights file"
    for case, args in cases.items():
        done = run_module(
            "demt_exp.evaluate", *args, f"hydra.run.dir={tmp_path / case}", check=False, env={"OMP_NUM_THREADS": "1"}
        )
        assert done.returncode == 2 and "Traceback" not in done.stderr, (case, done.stderr[-3000:])
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and named[case] in errors[0], (case, done.stderr[-3000:])
        assert case == "none" or errors[0].endswith(expected), errors[0]
        assert not (tmp_path / case).exists()  # the run folder Hydra made for the failed job is gone


@pytest.mark.slow
def test_a_checkpoint_that_needs_a_full_unpickle_loads_only_with_trust(
    synthetic_checkpoint: Path, tmp_path: Path
) -> None:
    """Like a Lightning file with pickled hyper-parameters: refused by name, read with trust_checkpoints=true."""
    payload = torch.load(synthetic_checkpoint, weights_only=True)
    payload["hyper_parameters"] = argparse.Namespace(lr=0.001)  # not a tensor or plain value
    pickled = tmp_path / "pickled.pt"
    torch.save(payload, pickled)

    def evaluate(*args: str) -> subprocess.CompletedProcess:
        return run_module(
            "demt_exp.evaluate",
            f"checkpoint={pickled}",
            "eval.num_workers=0",
            "eval.panels=0",
            *args,
            check=False,
            env={"OMP_NUM_THREADS": "1"},
        )

    refused = evaluate(f"hydra.run.dir={tmp_path / 'refused'}")
    assert refused.returncode == 2 and "trust_checkpoints=true" in refused.stderr.splitlines()[-1]
    trusted = evaluate("trust_checkpoints=true", f"hydra.run.dir={tmp_path / 'trusted'}")
    assert trusted.returncode == 0, trusted.stderr[-3000:]
    assert set(json.loads((tmp_path / "trusted" / "metrics.json").read_text())) >= {"semseg", "depth"}
