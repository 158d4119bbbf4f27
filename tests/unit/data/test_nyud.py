"""NYUD-v2 loader (both layouts, SPEC 3.2 decoding), `verify` and the config (the short real training run:
integration/test_nyud_training.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from paths import REPO_ROOT
from PIL import Image
from torch.utils.data import DataLoader

from demt_exp.data.__main__ import main as data_main
from demt_exp.data.example_nyud import write_fake_nyud
from demt_exp.data.nyud import NYUD_TASKS, DatasetFileError, NYUDv2
from demt_exp.data.tasks import IGNORE_INDEX
from demt_exp.data.transforms import build_eval_transform
from demt_exp.metrics import DepthRMSE

REPO = REPO_ROOT


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("nyud")
    return {layout: write_fake_nyud(base / layout, layout) for layout in ("demt", "atrc")}


def verify(root: Path, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = data_main(["verify", "dataset=nyud", f"dataset.root={root}"])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("layout", ["demt", "atrc"])
def test_both_layouts_load_and_are_detected(folders: dict[str, Path], layout: str) -> None:
    train = NYUDv2(folders[layout], "train", image_size=(64, 80))
    val = NYUDv2(folders[layout], "val", image_size=(64, 80))
    assert train.layout == val.layout == layout and (len(train), len(val)) == (4, 2)
    batch = next(iter(DataLoader(train, batch_size=2)))
    assert batch["image"].shape == (2, 3, 64, 80) and batch["image"].dtype == torch.float32
    assert batch["semseg"].shape == (2, 64, 80) and batch["semseg"].dtype == torch.int64
    assert batch["depth"].shape == (2, 1, 64, 80) and batch["normals"].shape == (2, 3, 64, 80)
    assert batch["edge"].shape == (2, 1, 64, 80)
    assert batch["meta"]["id"] == ["0001", "0002"] and batch["meta"]["size"].tolist() == [[60, 80]] * 2
    sample = val[0]
    assert sample["meta"]["id"] == "0005" and sample["meta"]["pad"].tolist() == [2, 0]
    assert (sample["semseg"][:2] == IGNORE_INDEX).all() and (sample["depth"][:, :2] == IGNORE_INDEX).all()


def test_only_requested_tasks_are_returned(folders: dict[str, Path]) -> None:
    sample = NYUDv2(folders["demt"], "train", tasks=["depth"], image_size=(48, 64))[0]
    assert set(sample) == {"image", "depth", "meta"} and sample["depth"].shape == (1, 48, 64)


def test_decoding_of_each_format(tmp_path: Path) -> None:
    demt = write_fake_nyud(tmp_path / "demt", "demt", n_train=1, n_val=1, size=(2, 3))
    Image.fromarray(np.array([[0, 1, 40], [2, 0, 7]], np.uint8)).save(demt / "segmentation" / "0001.png")
    normals = np.zeros((2, 3, 3), np.uint8)
    normals[0, 0], normals[0, 1], normals[0, 2] = (0, 128, 255), (255, 255, 255), (0, 0, 0)
    Image.fromarray(normals).save(demt / "normals" / "0001.png")
    Image.fromarray(np.array([[0, 255, 0], [255, 0, 0]], np.uint8)).save(demt / "edge" / "0001.png")
    np.save(demt / "depth" / "0001.npy", np.array([[1.5, 0.0, 2.0], [3.0, 4.0, 5.0]], np.float32))  # (H, W)
    raw = NYUDv2(demt, "train", transform=None)[0]
    np.testing.assert_array_equal(raw["semseg"], [[IGNORE_INDEX, 0, 39], [1, IGNORE_INDEX, 6]])
    np.testing.assert_allclose(raw["normals"][0, 0], [-1.0, 2 * 128 / 255 - 1, 1.0], atol=1e-6)
    np.testing.assert_allclose(raw["normals"][0, 2], [-1.0, -1.0, -1.0])
    np.testing.assert_array_equal(raw["edge"][..., 0], [[0, 1, 0], [1, 0, 0]])
    assert raw["depth"].shape == (2, 3, 1) and raw["image"].dtype == np.float32
    out = build_eval_transform((2, 3), NYUD_TASKS)(NYUDv2(demt, "train", transform=None).load(0))
    assert not (out["normals"] == IGNORE_INDEX).any()  # PNG normals never have a zero vector
    assert out["depth"][0, 0, 1] == IGNORE_INDEX

    atrc = write_fake_nyud(tmp_path / "atrc", "atrc", n_train=1, n_val=1, size=(2, 3))
    vectors = np.zeros((2, 3, 3), np.float32)
    vectors[0, 0] = (0.6, 0.0, -0.8)
    np.save(atrc / "normals" / "0001.npy", vectors)
    np.save(atrc / "edge" / "0001.npy", np.array([[0, 1, 1], [0, 0, 1]], np.float32)[..., None])
    out = build_eval_transform((2, 3), NYUD_TASKS)(NYUDv2(atrc, "train", transform=None).load(0))
    np.testing.assert_allclose(out["normals"][:, 0, 0], [0.6, 0.0, -0.8])
    assert (out["normals"].reshape(3, -1)[:, 1:] == IGNORE_INDEX).all()  # zero vectors -> ignore
    np.testing.assert_array_equal(out["edge"][0], [[0, 1, 1], [0, 0, 1]])


def test_verify_passes_on_a_clean_folder(folders: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    for layout, root in folders.items():
        code, out = verify(root, capsys)
        assert code == 0, out
        assert f"layout: {layout}" in out and "train: 4 entries, 4 clean" in out and "no problems" in out


def test_verify_reports_missing_and_corrupt_files_by_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_fake_nyud(tmp_path / "nyud", "demt")
    missing = root / "depth" / "0002.npy"
    missing.unlink()
    corrupt = root / "normals" / "0005.png"
    corrupt.write_bytes(b"not a png at all")
    out_of_range = root / "segmentation" / "0003.png"
    Image.fromarray(np.full((60, 80), 41, np.uint8)).save(out_of_range)
    wrong_size = root / "edge" / "0004.png"
    Image.fromarray(np.zeros((30, 80), np.uint8)).save(wrong_size)
    code, out = verify(root, capsys)
    assert code == 1
    assert f"{missing}: missing" in out
    assert f"{corrupt}: unreadable image" in out
    assert f"{out_of_range}: label values span 41..41" in out
    assert f"{wrong_size}: size 30x80" in out
    assert "train: 4 entries, 1 clean, 3 with problems" in out and "val: 2 entries, 1 clean" in out
    ds = NYUDv2(root, "train")
    with pytest.raises(DatasetFileError, match=str(missing)) as err:
        ds[1]
    assert err.value.path == missing and "expected a float .npy of depth" in str(err.value)
    with pytest.raises(DatasetFileError, match=f"{NYUDv2(root, 'val').ids[0]}.png: unreadable"):
        NYUDv2(root, "val")[0]


def test_verify_cli_exit_code(tmp_path: Path) -> None:
    root = write_fake_nyud(tmp_path / "nyud", "atrc", n_train=1, n_val=1, size=(8, 8))
    (root / "edge" / "0002.npy").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "demt_exp.data", "verify", "dataset=nyud", f"dataset.root={root}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1 and f"{root / 'edge' / '0002.npy'}: missing" in result.stdout


def test_missing_root_and_split_name_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        NYUDv2(tmp_path / "nowhere")
    root = write_fake_nyud(tmp_path / "NYUDv2", n_train=1, n_val=1, size=(8, 8))
    (root / "gt_sets" / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=str(root / "gt_sets" / "val.txt")):
        NYUDv2(root, "val")
    code, out = verify(root, capsys)
    assert code == 1 and str(root / "gt_sets" / "val.txt") in out
    monkeypatch.setenv("DEMT_DATA", str(tmp_path))
    assert NYUDv2(split="train").root == root
    monkeypatch.delenv("DEMT_DATA")
    with pytest.raises(FileNotFoundError, match="DEMT_DATA"):
        NYUDv2()


def test_config_selects_nyud_tasks(compose, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMT_DATA", "/data")
    cfg = compose(["dataset=nyud"])
    assert list(cfg.tasks.names) == list(NYUD_TASKS) and cfg.dataset.num_semseg_classes == 40
    assert cfg.dataset.train.root == "/data/NYUDv2" and list(cfg.dataset.val.image_size) == [425, 560]
    assert cfg.tasks.loss.weights.normals == 10.0


def test_448x576_padding_stays_out_of_depth_rmse(tmp_path: Path) -> None:
    root = write_fake_nyud(tmp_path / "nyud", n_train=1, n_val=1, size=(425, 560))
    sample = NYUDv2(root, "val", image_size=(448, 576))[0]
    assert sample["meta"]["pad"].tolist() == [11, 8] and sample["meta"]["size"].tolist() == [425, 560]
    depth = sample["depth"][None]
    inside = torch.zeros_like(depth, dtype=torch.bool)
    inside[..., 11:436, 8:568] = True
    assert (depth[~inside] == IGNORE_INDEX).all() and (depth[inside] < IGNORE_INDEX).all()
    assert (sample["semseg"][:11] == IGNORE_INDEX).all() and (sample["edge"][..., :8] == IGNORE_INDEX).all()
    assert (sample["normals"][:, :, -8:] == IGNORE_INDEX).all()
    pred = torch.where(inside, depth, torch.full_like(depth, 3.0))  # exact inside, wrong in the padding
    metric = DepthRMSE()
    metric.update(pred, depth)
    assert metric.compute()["rmse"] == 0.0
