"""NYUD-v2 folders of generated content in the exact on-disk formats of SPEC 3.2, at any size: for `bench data`
(full size) and the loader, verify and CLI tests (tiny)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

LAYOUTS = {"demt": ("png", "png", "png"), "atrc": ("jpg", "npy", "npy")}  # image, normals, edge


def fake_ids(n_train: int, n_val: int) -> tuple[list[str], list[str]]:
    ids = [f"{i:04d}" for i in range(1, n_train + n_val + 1)]
    return ids[:n_train], ids[n_train:]


def _semseg(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """File values 0..40 (0 = unlabelled): vertical bands of a few classes plus an unlabelled patch."""
    classes = rng.choice(np.arange(1, 41), size=4, replace=False)
    band = np.arange(w) * 4 // w
    labels = np.broadcast_to(classes[band], (h, w)).astype(np.uint8).copy()
    labels[: h // 6, : w // 6] = 0
    return labels


def _normals(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Unit vectors facing the camera (z < 0 in the OpenCV frame)."""
    n = rng.normal(size=(h, w, 3)).astype(np.float32)
    n[..., 2] = -np.abs(n[..., 2]) - 0.5
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def write_sample(root: Path, layout: str, sample_id: str, size: tuple[int, int], rng: np.random.Generator) -> None:
    """All five files of one id."""
    h, w = size
    image_ext, normals_ext, _ = LAYOUTS[layout]
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / "images" / f"{sample_id}.{image_ext}")
    semseg = _semseg(rng, h, w)
    Image.fromarray(semseg).save(root / "segmentation" / f"{sample_id}.png")
    depth = rng.uniform(0.5, 10.0, size=(h, w, 1)).astype(np.float32)
    np.save(root / "depth" / f"{sample_id}.npy", depth)
    normals = _normals(rng, h, w)
    edge = np.zeros((h, w), np.uint8)
    edge[:, 1:] = semseg[:, 1:] != semseg[:, :-1]
    if normals_ext == "png":
        Image.fromarray(np.rint((normals + 1) * 127.5).astype(np.uint8)).save(root / "normals" / f"{sample_id}.png")
        Image.fromarray(edge * 255).save(root / "edge" / f"{sample_id}.png")
    else:
        normals[h // 2 :, : w // 4] = 0  # invalid region, as the ATRC NPY normals have
        np.save(root / "normals" / f"{sample_id}.npy", normals)
        np.save(root / "edge" / f"{sample_id}.npy", edge.astype(np.float32))


def write_fake_nyud(
    root: str | Path,
    layout: str = "demt",
    n_train: int = 4,
    n_val: int = 2,
    size: tuple[int, int] = (60, 80),
    seed: int = 0,
) -> Path:
    """Write root/{images,segmentation,depth,normals,edge,gt_sets}; returns root."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    root = Path(root)
    for folder in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train, val = fake_ids(n_train, n_val)
    for sample_id in train + val:
        write_sample(root, layout, sample_id, size, rng)
    (root / "gt_sets" / "train.txt").write_text("".join(f"{i}\n" for i in train))
    (root / "gt_sets" / "val.txt").write_text("".join(f"{i}\n" for i in val))
    return root
