"""PASCAL-Context boundary odsF/oisF/AP through the evaluate command on a fake data set: the scores
equal SEISM's recipe on the written PNGs, the protocol's image list restricts the boundary metric only,
and worker processes and two torchrun processes score as one process. (The in-process pieces:
unit/metrics/boundary/test_pascal_boundary.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from commands import run_module
from eval_helpers import TINY_MODEL, run_evaluation, write_checkpoint
from paths import REPO_ROOT
from PIL import Image

from demt_exp.data.example_pascal import write_context_labels, write_fake_pascal
from demt_exp.metrics import BoundaryMetric, BoundaryProtocol, atrc_protocol, gt_boundary_map, invpt_protocol

REPO = REPO_ROOT


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep every default part-index cache inside the test's folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


def _reference(run: Path, root: Path, ids: list[str], protocol: BoundaryProtocol) -> dict:
    """SEISM's recipe on the files on disk: written PNGs against seg2bmap of the .mat LabelMap."""
    reference = BoundaryMetric(protocol)
    for sample_id in ids:
        prediction = np.asarray(Image.open(run / "edge_preds" / f"{sample_id}.png"))
        labels = scipy.io.loadmat(str(root / "pascal-context" / "trainval" / f"{sample_id}.mat"))["LabelMap"]
        reference.update_image(prediction, gt_boundary_map(labels))
    return reference.compute()


@pytest.fixture(scope="module")
def pascal_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    base = tmp_path_factory.mktemp("pascal_eval")
    root = write_fake_pascal(base / "PASCALContext", n_train=1, n_val=3, size=(40, 48))
    rng = np.random.default_rng(1)
    val_ids = (root / "ImageSets" / "Context" / "val.txt").read_text().split()
    for sample_id in val_ids:  # a different LabelMap per image: blocks of random Context classes
        blocks = rng.integers(1, 8, (5, 6))
        write_context_labels(
            root / "pascal-context" / "trainval" / f"{sample_id}.mat", np.kron(blocks, np.ones((8, 8), np.int64))
        )
    checkpoint = base / "last.pt"
    write_checkpoint(
        checkpoint,
        [*TINY_MODEL, "dataset=pascal_context", f"dataset.root={root}", "dataset.image_size=[64,64]"],
    )
    return checkpoint, root, val_ids


@pytest.mark.slow
def test_evaluate_command_scores_pascal_boundaries_with_worker_processes(pascal_run, tmp_path: Path) -> None:
    checkpoint, root, val_ids = pascal_run
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    run = tmp_path / "eval"
    result = run_module(
        "demt_exp.evaluate",
        f"checkpoint={checkpoint}",
        "dataset=pascal_context",
        f"dataset.root={root}",
        "dataset.image_size=[64,64]",
        "eval.boundary_protocol=invpt",
        "eval.boundary_workers=2",
        "eval.panels=0",
        "eval.num_workers=0",
        "trainer.device=cpu",
        f"hydra.run.dir={run}",
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["protocol"]["boundary"] == "invpt" and metrics["protocol"]["edge/protocol"] == "invpt"
    assert metrics["protocol"]["boundary_max_dist"] == "0.0075" and metrics["protocol"]["images"] == "3"
    assert "boundary_image_list" not in metrics["protocol"]
    reference = _reference(run, root, val_ids, invpt_protocol("pascal_context"))
    for name in ("odsF", "oisF", "AP"):
        assert metrics["edge"][name] == pytest.approx(reference[name], abs=1e-9), name
    assert 0 < metrics["edge"]["odsF"] <= 100


@pytest.mark.slow
def test_image_list_restricts_the_boundary_metric_only(pascal_run, tmp_path: Path) -> None:
    checkpoint, root, val_ids = pascal_run
    listed = tmp_path / "subset.txt"
    listed.write_text(f"{val_ids[2]}\n{val_ids[0]}\n")
    full = run_evaluation(
        checkpoint, tmp_path / "full", "eval.panels=0", "eval.num_workers=0", "eval.boundary_workers=0"
    )
    subset = run_evaluation(
        checkpoint,
        tmp_path / "subset",
        "eval.panels=0",
        "eval.num_workers=0",
        "eval.boundary_workers=0",
        f"eval.boundary_image_list={listed}",
    )
    assert subset["protocol"]["boundary_image_list"] == str(listed.resolve())
    assert subset["protocol"]["boundary_images"] == "2" and subset["protocol"]["images"] == "3"
    assert subset["protocol"]["edge/protocol"] == "atrc"
    reference = _reference(tmp_path / "subset", root, [val_ids[0], val_ids[2]], atrc_protocol("pascal_context"))
    for name in ("odsF", "oisF", "AP"):
        assert subset["edge"][name] == pytest.approx(reference[name], abs=1e-9), name
    assert subset["edge"]["odsF"] != full["edge"]["odsF"]
    for task in ("semseg", "human_parts", "sal", "normals"):  # every other metric still scores all val images
        assert subset[task] == full[task], task
    assert subset["edge"]["pixel_maxF"] == full["edge"]["pixel_maxF"]
    # Every val image still gets its SEISM input file.
    assert sorted(p.stem for p in (tmp_path / "subset" / "edge_preds").iterdir()) == sorted(val_ids)


def test_image_list_naming_images_outside_val_fails_before_scoring(pascal_run, tmp_path: Path) -> None:
    checkpoint, _, val_ids = pascal_run
    listed = tmp_path / "subset.txt"
    listed.write_text(f"{val_ids[0]}\n2010_999999\n")
    with pytest.raises(
        ValueError, match=r"subset.txt: 1 of its 2 ids are not in the pascal_context val split .*2010_999999"
    ):
        run_evaluation(checkpoint, tmp_path / "eval", f"eval.boundary_image_list={listed}")
    assert not (tmp_path / "eval" / "metrics.json").exists()


@pytest.mark.slow
def test_two_torchrun_processes_score_the_listed_images_as_one_process(pascal_run, tmp_path: Path) -> None:
    checkpoint, root, val_ids = pascal_run
    listed = tmp_path / "subset.txt"
    listed.write_text(f"{val_ids[1]}\n{val_ids[2]}\n")  # rank 0 holds val 0 and 2, rank 1 val 1
    common = [f"eval.boundary_image_list={listed}", "eval.panels=0", "eval.num_workers=0"]
    one = run_evaluation(checkpoint, tmp_path / "one", *common, "eval.boundary_workers=0")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    sharded = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "demt_exp.evaluate",
            f"checkpoint={checkpoint}",
            *common,
            "eval.boundary_workers=1",
            "trainer.device=cpu",
            f"hydra.run.dir={tmp_path / 'two'}",
        ],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["protocol"] == one["protocol"]
    for name in ("odsF", "oisF", "AP"):
        assert two["edge"][name] == pytest.approx(one["edge"][name], rel=1e-12, abs=1e-12), name
    reference = _reference(tmp_path / "one", root, val_ids[1:], atrc_protocol("pascal_context"))
    assert one["edge"]["odsF"] == pytest.approx(reference["odsF"], abs=1e-9)
