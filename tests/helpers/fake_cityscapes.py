"""Tiny Cityscapes folders in the official on-disk formats, for loader and CLI tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

BASELINE, FX = 0.209313, 2262.52  # typical values of the Cityscapes camera files
CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt",)}


def frame_name(city: str, index: int) -> str:
    return f"{city}_{index:06d}_000019"


def _label_ids(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Bands of road (7), building (11), car (26) and unlabeled (0), plus a few random labelIds."""
    band = np.array([7, 11, 26, 0], np.uint8)[np.arange(w) * 4 // w]
    labels = np.broadcast_to(band, (h, w)).copy()
    labels[: h // 4, : w // 4] = rng.integers(0, 34, (h // 4, w // 4), dtype=np.uint8)
    return labels


def _disparity(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """uint16 p = 256 d + 1 with d in [5, 100) px; the top rows invalid (0), one pixel p = 1."""
    raw = (rng.uniform(5, 100, (h, w)) * 256 + 1).astype(np.uint16)
    raw[: h // 8] = 0
    raw[-1, -1] = 1
    return raw


def write_frame(
    root: Path,
    split: str,
    city: str,
    name: str,
    size: tuple[int, int],
    rng: np.random.Generator,
    labels: np.ndarray | None = None,
    disparity: np.ndarray | None = None,
    camera: dict | None = None,
) -> None:
    """The four files of one frame (labels / disparity / camera default to generated ones)."""
    h, w = size
    folders = {kind: root / kind / split / city for kind in ("leftImg8bit", "gtFine", "disparity", "camera")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(image).save(folders["leftImg8bit"] / f"{name}_leftImg8bit.png")
    labels = _label_ids(rng, h, w) if labels is None else labels
    Image.fromarray(labels.astype(np.uint8)).save(folders["gtFine"] / f"{name}_gtFine_labelIds.png")
    disparity = _disparity(rng, h, w) if disparity is None else disparity
    Image.fromarray(disparity.astype(np.uint16)).save(folders["disparity"] / f"{name}_disparity.png")
    camera = camera or {
        "extrinsic": {"baseline": BASELINE, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1, "yaw": -0.0195, "z": 1.18},
        "intrinsic": {"fx": FX, "fy": 2265.3, "u0": 1096.98, "v0": 513.137},
    }
    (folders["camera"] / f"{name}_camera.json").write_text(json.dumps(camera, indent=2))


def write_fake_cityscapes(root: str | Path, per_city: int = 1, size: tuple[int, int] = (32, 64), seed: int = 0) -> Path:
    """Two training cities and one validation city with `per_city` frames each; returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, cities in CITIES.items():
        for city in cities:
            for index in range(per_city):
                write_frame(root, split, city, frame_name(city, index), size, rng)
    return root
