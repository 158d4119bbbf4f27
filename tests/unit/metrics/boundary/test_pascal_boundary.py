"""PASCAL-Context boundary odsF/oisF/AP in the evaluation: SEISM's ground truth (seg2bmap of the
459-class LabelMap) carried by the val set only when asked, the protocol's image list, and the
boundary counting in worker processes. (The evaluate command on a fake data set:
integration/test_pascal_boundary_evaluate.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from demt_exp.data.example_pascal import write_context_labels, write_fake_pascal
from demt_exp.data.pascal_context import PascalContext
from demt_exp.data.transforms import BOUNDARY_LABELS
from demt_exp.metrics import MetricContext, MultiTaskMetrics
from demt_exp.metrics.boundary.edge_task import boundary_ground_truth
from demt_exp.metrics.boundary.images import read_image_list
from demt_exp.metrics.boundary.settings import boundary_settings, counting_workers

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


def test_the_record_names_the_tolerance_where_the_boundary_metric_runs() -> None:
    def record(protocol: str, dataset: str, tasks: list[str]) -> dict[str, str]:
        return boundary_settings(protocol, dataset, tasks, None, 0, None)[1]

    assert record("atrc", "nyud", ["semseg", "edge"]) == {"boundary": "atrc", "boundary_max_dist": "0.011"}
    assert record("invpt", "pascal_context", ["edge"]) == {"boundary": "invpt", "boundary_max_dist": "0.0075"}
    assert record("atrc", "pascal_context", ["semseg"]) == {"boundary": "atrc"}  # no edge task
    assert record("atrc", "synthetic", ["edge"]) == {"boundary": "atrc"}  # no SEISM ground truth


def test_boundary_workers_default_to_this_process_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun with two processes on this node
    assert counting_workers(None) == max(1, cores // 2)
    assert counting_workers(0) == 0 and counting_workers(3) == 3
    with pytest.raises(ValueError, match="eval.boundary_workers=-1"):
        counting_workers(-1)
