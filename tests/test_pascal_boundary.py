"""PASCAL-Context boundary odsF/oisF/AP in the evaluation: SEISM's ground truth (seg2bmap of the
459-class LabelMap) carried by the val set only when asked, the protocol's image list, and the
boundary counting in worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from eval_helpers import TINY_MODEL, run_evaluation, write_checkpoint
from fake_pascal import write_context_labels, write_fake_pascal
from paths import REPO_ROOT
from PIL import Image
from torch.utils.data import default_collate

from demt_exp.data.pascal_context import PascalContext
from demt_exp.data.transforms import BOUNDARY_LABELS
from demt_exp.metrics import (
    BoundaryMetric,
    BoundaryProtocol,
    MetricContext,
    MultiTaskMetrics,
    atrc_protocol,
    gt_boundary_map,
    invpt_protocol,
)
from demt_exp.metrics.boundary.edge_task import boundary_ground_truth
from demt_exp.metrics.boundary.images import read_image_list
from demt_exp.metrics.boundary.settings import boundary_settings, counting_workers

REPO = REPO_ROOT

# A 4 x 5 LabelMap and its seg2bmap, derived by hand: a pixel is on when its east, south or
# south-east neighbour has another label; the last row looks east only, the last column south only.
HAND_LABELS = np.array([[1, 1, 2, 2, 2], [1, 1, 2, 2, 2], [3, 3, 3, 2, 2], [3, 3, 3, 2, 2]])
HAND_BOUNDARY = np.array([[0, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 0, 0]], dtype=bool)


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep every default part-index cache inside the test's folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


def hand_root(tmp_path: Path) -> Path:
    """One val image of 4 x 5 whose LabelMap is HAND_LABELS."""
    root = write_fake_pascal(tmp_path / "PASCALContext", n_train=1, n_val=1, size=(4, 5))
    val_id = (root / "ImageSets" / "Context" / "val.txt").read_text().split()[0]
    write_context_labels(root / "pascal-context" / "trainval" / f"{val_id}.mat", HAND_LABELS)
    return root


def test_only_an_evaluation_val_set_carries_the_label_map(tmp_path: Path) -> None:
    root = hand_root(tmp_path)
    for split in ("train", "val"):
        assert BOUNDARY_LABELS not in PascalContext(root, split, image_size=(8, 8))[0]
    sample = PascalContext(root, "val", image_size=(8, 8), boundary_labels=True)[0]
    labels = sample[BOUNDARY_LABELS]
    assert labels.dtype == torch.int64 and labels.shape == (8, 8)
    # Padded centred like every map: 2 rows above, 1 column left (SPEC 3.4), the label values untouched.
    assert torch.equal(labels[2:6, 1:6], torch.from_numpy(HAND_LABELS))
    raw = PascalContext(root, "val", boundary_labels=True, transform=None)[0]
    assert np.array_equal(raw[BOUNDARY_LABELS], HAND_LABELS)


def test_pascal_ground_truth_boundary_is_seg2bmap_of_the_label_map_by_hand(tmp_path: Path) -> None:
    val = PascalContext(hand_root(tmp_path), "val", image_size=(8, 8), boundary_labels=True)
    batch = default_collate([val[0]])
    gt = boundary_ground_truth(batch, "edge", "pascal_context", 0)
    assert gt.dtype == bool and np.array_equal(gt, HAND_BOUNDARY)
    # The edge training target (thinned Laplacian of the same labels) is another map.
    edge_target = batch["edge"][0, 0, 2:6, 1:6].numpy() == 1
    assert not np.array_equal(edge_target, HAND_BOUNDARY)


def test_a_batch_without_the_label_map_is_refused_by_name(tmp_path: Path) -> None:
    batch = default_collate([PascalContext(hand_root(tmp_path), "val", image_size=(8, 8))[0]])
    with pytest.raises(KeyError, match="boundary_labels.*'boundary_labels': True"):
        boundary_ground_truth(batch, "edge", "pascal_context", 0)


def test_image_list_errors_name_the_file_and_the_missing_ids(tmp_path: Path) -> None:
    listed = tmp_path / "test_new.txt"
    listed.write_text("a\n\nb\na\n")
    assert read_image_list(listed, ["a", "b", "c"], "pascal_context") == ("a", "b")
    listed.write_text("a\nzz1\nb\nzz2\n")
    with pytest.raises(
        ValueError,
        match=r"test_new.txt: 2 of its 4 ids are not in the pascal_context val split "
        r"\(3 images\): zz1, zz2",
    ):
        read_image_list(listed, ["a", "b", "c"], "pascal_context")
    with pytest.raises(FileNotFoundError, match="boundary image list not found.*nothing.txt"):
        read_image_list(tmp_path / "nothing.txt", ["a"], "pascal_context")
    # A data set without the boundary metric cannot take a list that would restrict nothing.
    with pytest.raises(ValueError, match="eval.boundary_image_list=.*'synthetic'"):
        boundary_settings("atrc", "synthetic", ["semseg", "edge"], listed, 0, ["a"])


def _edge_batches(root: Path, seed: int) -> list[tuple[torch.Tensor, dict]]:
    val = PascalContext(root, "val", tasks=["edge"], image_size=(64, 64), boundary_labels=True)
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for i in range(0, len(val), 2):
        batch = default_collate([val[j] for j in range(i, min(i + 2, len(val)))])
        batches.append((torch.randn(batch["image"].shape[0], 1, 64, 64, generator=generator), batch))
    return batches


def test_worker_processes_count_exactly_as_in_process(tmp_path: Path) -> None:
    root = write_fake_pascal(tmp_path / "PASCALContext", n_train=1, n_val=3)
    states = {}
    for workers in (0, 2):
        options = {"boundary": {"protocol": "atrc-fast-9thr", "workers": workers}}
        metrics = MultiTaskMetrics(["edge"], 21, MetricContext(21, "pascal_context", options))
        for logits, batch in _edge_batches(root, seed=0):
            metrics.update({"edge": logits}, batch)
        boundary = metrics.metrics["edge"][1]
        assert boundary.counter.workers == workers
        metrics.sync()  # drains the pool before pooling
        assert boundary.num_images == 3 and boundary.counter._pool is None
        states[workers] = boundary.state.clone()
    assert torch.equal(states[0], states[2])


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
        checkpoint, [*TINY_MODEL, "dataset=pascal_context", f"dataset.root={root}", "dataset.image_size=[64,64]"]
    )
    return checkpoint, root, val_ids


@pytest.mark.slow
def test_evaluate_command_scores_pascal_boundaries_with_worker_processes(pascal_run, tmp_path: Path) -> None:
    checkpoint, root, val_ids = pascal_run
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    run = tmp_path / "eval"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
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
        ],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
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


def test_the_record_names_the_tolerance_where_the_boundary_metric_runs() -> None:
    def record(protocol: str, dataset: str, tasks: list[str]) -> dict[str, str]:
        return boundary_settings(protocol, dataset, tasks, None, 0, None)[1]

    assert record("atrc", "nyud", ["semseg", "edge"]) == {"boundary": "atrc", "boundary_max_dist": "0.011"}
    assert record("invpt", "pascal_context", ["edge"]) == {"boundary": "invpt", "boundary_max_dist": "0.0075"}
    assert record("atrc", "pascal_context", ["semseg"]) == {"boundary": "atrc"}  # no edge task
    assert record("atrc", "synthetic", ["edge"]) == {"boundary": "atrc"}  # no SEISM ground truth


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


def test_boundary_workers_default_to_this_process_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun with two processes on this node
    assert counting_workers(None) == max(1, cores // 2)
    assert counting_workers(0) == 0 and counting_workers(3) == 3
    with pytest.raises(ValueError, match="eval.boundary_workers=-1"):
        counting_workers(-1)
