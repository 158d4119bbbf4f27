"""`python -m demt_exp.predict`: per-task files at the input's size, palette PNGs that decode to the
predicted classes, and panels that really show the input, predictions and ground truth."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from commands import run_module
from eval_helpers import TINY_SYNTHETIC, write_checkpoint
from paths import REPO_ROOT
from PIL import Image

from demt_exp.data.image_files import ImageFiles, image_files
from demt_exp.engine.from_checkpoint import inference_config, load_inference_model
from demt_exp.predict import predict
from demt_exp.viz.panels import GAP, MIN_TILE, PALETTE, TITLE_HEIGHT, denormalise

REPO = REPO_ROOT
TASKS = ["semseg", "human_parts", "sal", "normals", "edge", "depth"]
SIZES = {"wide": (45, 70), "small": (33, 50)}  # (H, W), neither a multiple of 32


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("run") / "last.pt"
    write_checkpoint(path, TINY_SYNTHETIC)
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in SIZES.items():
        yy, xx = np.mgrid[:h, :w]
        picture = np.stack([xx * 255 // w, yy * 255 // h, rng.integers(0, 256, (h, w))], axis=-1).astype(np.uint8)
        Image.fromarray(picture).save(folder / f"{name}.png")
    return folder


def run_predict(checkpoint: Path, *overrides: str) -> tuple:
    args = [f"checkpoint={checkpoint}", *overrides]
    cfg, payload = inference_config(str(checkpoint), args, "predict")
    return predict(cfg, payload, Path(str(cfg.out))), cfg, payload


def tile(panel: np.ndarray, row: int, column: int, h: int, w: int, scale: int) -> np.ndarray:
    """One tile of a panel, shrunk back to the image's own pixels."""
    x, y = column * (w * scale + GAP), row * (h * scale + TITLE_HEIGHT + GAP) + TITLE_HEIGHT
    return panel[y : y + h * scale : scale, x : x + w * scale : scale]


@pytest.mark.slow
def test_files_sizes_palette_round_trip_and_panels(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    count, cfg, payload = run_predict(checkpoint, f"input={images}", f"out={out}")
    assert count == 2
    model = load_inference_model(checkpoint, cfg, payload)
    dataset = ImageFiles(image_files(str(images)), pad_multiple=32)
    for index, (name, (h, w)) in enumerate(sorted(SIZES.items(), key=lambda kv: kv[0] == "wide")):
        sample = dataset[index]
        assert sample["meta"]["id"] == name
        for task in TASKS:
            assert Image.open(out / task / f"{name}.png").size == (w, h), task
        assert np.load(out / "depth" / f"{name}.npy").shape == (h, w)
        # The semseg file is a palette PNG whose pixel values are the predicted classes.
        top, left = (int(v) for v in sample["meta"]["pad"])
        with torch.no_grad():
            logits = model(sample["image"][None])
        classes = logits["semseg"][0].argmax(0)[top : top + h, left : left + w].numpy()
        semseg = Image.open(out / "semseg" / f"{name}.png")
        assert semseg.mode == "P"
        assert np.array_equal(np.asarray(semseg), classes)
        # The panel: input, then each task; the input tile shows the picture, the semseg tile its colours.
        panel = np.asarray(Image.open(out / "panels" / f"{name}.png").convert("RGB"))
        scale = -(-MIN_TILE // min(h, w))
        assert panel.shape == (h * scale + TITLE_HEIGHT, 7 * (w * scale + GAP) - GAP, 3)
        original = np.asarray(Image.open(images / f"{name}.png"))
        assert np.abs(tile(panel, 0, 0, h, w, scale).astype(int) - original).max() <= 1
        assert np.array_equal(tile(panel, 0, 1, h, w, scale), PALETTE[classes])
        for column in range(7):
            assert tile(panel, 0, column, h, w, scale).std() > 0 or column in (1, 2), column  # label maps may be flat


@pytest.mark.slow
def test_val_split_panels_show_the_ground_truth(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    count, cfg, _ = run_predict(checkpoint, f"out={out}", "limit=2")
    assert count == 2
    panels = sorted((out / "panels").iterdir())
    assert [p.name for p in panels] == ["synthetic_val_000000.png", "synthetic_val_000001.png"]
    panel = np.asarray(Image.open(panels[0]).convert("RGB"))
    scale = -(-MIN_TILE // 32)
    assert panel.shape[0] == 2 * (32 * scale + TITLE_HEIGHT) + GAP  # predictions above, ground truth below
    from hydra.utils import instantiate

    sample = instantiate(cfg.dataset.val)[0]
    assert np.array_equal(tile(panel, 1, 1, 32, 32, scale), PALETTE[sample["semseg"].numpy().astype(np.uint8)])
    assert np.array_equal(tile(panel, 1, 0, 32, 32, scale), denormalise(sample["image"]))


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        image_files(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image"):
        image_files(str(tmp_path / "empty"))
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / folder / "x.png")
    with pytest.raises(ValueError, match="share the names.*x"):
        image_files([str(tmp_path / "a"), str(tmp_path / "b")])


@pytest.mark.slow
def test_predict_command_writes_into_out(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = run_module(
        "demt_exp.predict",
        f"checkpoint={checkpoint}",
        f"input=[{images / 'wide.png'}]",
        f"out={out}",
        "trainer.device=cpu",
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (out / "panels").iterdir()) == ["wide.png"]
    assert Image.open(out / "normals" / "wide.png").size == (70, 45)


def run_command(*args: str) -> subprocess.CompletedProcess:
    return run_module("demt_exp.predict", *args, "trainer.device=cpu", check=False, env={"OMP_NUM_THREADS": "1"})


def test_inputs_are_checked_before_the_output_folder_exists(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    # Each mistake: exit code 2, one `error:` line naming the file, and no <out> folder left behind.
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not a picture")
    cases = {
        "missing checkpoint": ([f"checkpoint={tmp_path / 'missing.pt'}", f"input={images}"], tmp_path / "missing.pt"),
        "missing input": ([f"checkpoint={checkpoint}", f"input={tmp_path / 'nowhere'}"], tmp_path / "nowhere"),
        "not an image": ([f"checkpoint={checkpoint}", f"input=[{not_an_image}]"], not_an_image),
        "not a checkpoint": ([f"checkpoint={not_an_image}", f"input={images}"], not_an_image),
        "no checkpoint": ([f"input={images}"], "checkpoint=PATH"),
    }
    for case, (args, named) in cases.items():
        out = tmp_path / f"out_{case.replace(' ', '_')}"
        result = run_command(*args, f"out={out}")
        assert result.returncode == 2, (case, result.stderr[-3000:])
        assert "Traceback" not in result.stderr, (case, result.stderr[-3000:])
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and str(named) in errors[0], (case, result.stderr[-3000:])
        assert not out.exists(), case
