"""Cityscapes loader: labelId -> trainId, depth from disparity, split listing, resizing, named
errors and the config (the short real training run: integration/test_cityscapes_training.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_cityscapes import frame_name, write_fake_cityscapes, write_frame
from paths import REPO_ROOT
from PIL import Image
from torch.utils.data import DataLoader

from demt_exp.data.cityscapes import (
    CITYSCAPES_TASKS,
    LABEL_TO_TRAIN,
    Cityscapes,
    decode_train_ids,
)
from demt_exp.data.nyud import DatasetFileError
from demt_exp.data.tasks import IGNORE_INDEX

REPO = REPO_ROOT
# cityscapesScripts labels.py, the 19 evaluated classes: (labelId, name, trainId).
STANDARD = [
    (7, "road", 0),
    (8, "sidewalk", 1),
    (11, "building", 2),
    (12, "wall", 3),
    (13, "fence", 4),
    (17, "pole", 5),
    (19, "traffic light", 6),
    (20, "traffic sign", 7),
    (21, "vegetation", 8),
    (22, "terrain", 9),
    (23, "sky", 10),
    (24, "person", 11),
    (25, "rider", 12),
    (26, "car", 13),
    (27, "truck", 14),
    (28, "bus", 15),
    (31, "train", 16),
    (32, "motorcycle", 17),
    (33, "bicycle", 18),
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_cityscapes(tmp_path_factory.mktemp("cityscapes") / "cityscapes")


def test_label_ids_map_to_the_19_train_ids(tmp_path: Path) -> None:
    assert LABEL_TO_TRAIN == {label: train for label, _, train in STANDARD}
    every = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(every).save(tmp_path / "labels.png")
    decoded = decode_train_ids(tmp_path / "labels.png")
    expected = np.full(256, IGNORE_INDEX)
    for label, _, train in STANDARD:
        expected[label] = train
    assert decoded.dtype == np.int64
    np.testing.assert_array_equal(decoded.ravel(), expected)  # unlabeled, parking, caravan, ... -> 255


def test_depth_from_disparity_by_hand(tmp_path: Path) -> None:
    root = tmp_path / "cityscapes"
    camera = {"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 2000.0}}
    raw = np.array([[0, 1, 257, 513], [2561, 5121, 10241, 20481]], np.uint16)  # d = (p - 1) / 256
    labels = np.full((2, 4), 7, np.uint8)
    for split in ("train", "val"):
        write_frame(root, split, "ulm", "ulm_000000_000019", (2, 4), np.random.default_rng(0), labels, raw, camera)
    raw_sample = Cityscapes(root, "val", resolution=None, image_size=(2, 4), transform=None)[0]
    # depth = baseline * fx / d = 400 / d: d = 1, 2, 10, 20, 40, 80 px; p = 0 and p = 1 are invalid
    expected = np.array([[0, 0, 400, 200], [40, 20, 10, 5]], np.float32)[..., None]
    np.testing.assert_allclose(raw_sample["depth"], expected, rtol=1e-6)
    sample = Cityscapes(root, "val", resolution=None, image_size=(2, 4))[0]
    assert sample["depth"].shape == (1, 2, 4)
    assert (sample["depth"][0, 0, :2] == IGNORE_INDEX).all() and sample["depth"][0, 1, 0] == pytest.approx(40)
    capped = Cityscapes(root, "val", resolution=None, image_size=(2, 4), max_depth=300.0, transform=None)[0]
    assert capped["depth"][0, 2, 0] == 0 and capped["depth"][0, 3, 0] == pytest.approx(200)


def test_splits_are_found_by_listing_the_folders(root: Path) -> None:
    train, val = Cityscapes(root, "train"), Cityscapes(root, "val")
    assert [f.name for f in train.frames] == [frame_name("aachen", 0), frame_name("bochum", 0)]
    assert [f.name for f in val.frames] == [frame_name("frankfurt", 0)]
    frame = val.frames[0]
    assert frame.labels == root / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000019_gtFine_labelIds.png"
    assert frame.camera == root / "camera" / "val" / "frankfurt" / "frankfurt_000000_000019_camera.json"
    with pytest.raises(ValueError, match="split must be one of"):
        Cityscapes(root, "test")


def test_resizing_samples_labels_and_depth_at_the_same_pixels(root: Path) -> None:
    full = Cityscapes(root, "val", resolution=None, image_size=(32, 64), transform=None)[0]
    half = Cityscapes(root, "val", resolution=(16, 32), transform=None)[0]
    assert half["image"].shape == (16, 32, 3) and half["meta"]["size"] == (16, 32)
    assert full["meta"]["size"] == (32, 64) and full["meta"]["id"] == frame_name("frankfurt", 0)
    np.testing.assert_array_equal(half["semseg"], full["semseg"][1::2, 1::2])  # pixel centres 2 i + 1
    np.testing.assert_array_equal(half["depth"], full["depth"][1::2, 1::2])


def test_batches_have_the_task_layout(root: Path) -> None:
    batch = next(iter(DataLoader(Cityscapes(root, "train", image_size=(32, 32)), batch_size=2)))
    assert set(batch) == {"image", "semseg", "depth", "meta"}
    assert batch["image"].shape == (2, 3, 32, 32) and batch["semseg"].dtype == torch.int64
    assert batch["semseg"].shape == (2, 32, 32) and batch["depth"].shape == (2, 1, 32, 32)
    assert batch["meta"]["size"].tolist() == [[128, 256]] * 2
    labels = batch["semseg"][batch["semseg"] != IGNORE_INDEX]
    assert labels.numel() and int(labels.max()) < 19
    sample = Cityscapes(root, "val", tasks=["semseg"])[0]
    assert set(sample) == {"image", "semseg", "meta"} and sample["image"].shape == (3, 128, 256)


def test_missing_and_malformed_files_are_named(tmp_path: Path) -> None:
    root = write_fake_cityscapes(tmp_path / "cityscapes")
    data = Cityscapes(root, "train", transform=None)
    (data.frames[0].camera).unlink()
    with pytest.raises(DatasetFileError, match=r"aachen_000000_000019_camera\.json: missing; expected a JSON"):
        data[0]
    data.frames[1].camera.write_text(json.dumps({"extrinsic": {"baseline": 0.2}, "intrinsic": {}}))
    with pytest.raises(DatasetFileError, match=r"camera\.json: intrinsic\.fx = None; expected .*intrinsic\.fx"):
        data[1]
    val = Cityscapes(root, "val", transform=None)
    val.frames[0].labels.unlink()
    with pytest.raises(DatasetFileError, match=r"frankfurt_000000_000019_gtFine_labelIds\.png: missing"):
        val[0]
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(val.frames[0].disparity)
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(val.frames[0].labels)
    with pytest.raises(DatasetFileError, match=r"_disparity\.png: image mode L; expected a 16-bit"):
        val[0]
    with pytest.raises(FileNotFoundError, match=r"looked for the folder .*nowhere/leftImg8bit/train"):
        Cityscapes(tmp_path / "nowhere", "train")


def test_config_selects_cityscapes_tasks(compose, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMT_DATA", "/data")
    cfg = compose(["dataset=cityscapes"])
    assert list(cfg.tasks.names) == list(CITYSCAPES_TASKS) and cfg.dataset.num_semseg_classes == 19
    assert cfg.dataset.train.root == "/data/cityscapes" and cfg.dataset.name == "cityscapes"
    assert list(cfg.dataset.train.resolution) == [128, 256] and list(cfg.dataset.val.image_size) == [128, 256]
    assert dict(cfg.tasks.loss.weights) == {"semseg": 1.0, "depth": 1.0}
    assert list(compose(["dataset=cityscapes", "dataset.resolution=[512,1024]"]).dataset.val.image_size) == [512, 1024]
