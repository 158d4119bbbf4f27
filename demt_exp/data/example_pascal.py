"""PASCAL-Context folders of generated content in the on-disk formats of SPEC 3.3, at any size: for `bench data`
(full size) and the loader and CLI tests (tiny).

Part annotations are written with scipy.io.savemat in the structure of the PASCAL-Part release
(anno -> imname, objects -> class, class_ind, mask, parts -> part_name, mask), the Context labels
as pascal-context/trainval/<id>.mat with `LabelMap`, and small class-name tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

# Small stand-ins for the 459-name Context table and the NYU name list. NYU-compatible Context
# classes here: wall (1), floor (2), person (5), plus tvmonitor (4) added by hand.
CONTEXT_CLASSES = {"wall": 1, "floor": 2, "sky": 3, "tvmonitor": 4, "person": 5, "grass": 6, "unknown": 7}
NYU_CLASSES = ["bed", "wall", "floor", "person", "unknown", "lamp"]
NORMALS_VALID = (1, 2, 4, 5)
PERSON, CAT = 15, 8


@dataclass
class FakeObject:
    """One PASCAL-Part object: class name and id, instance mask, (part name, mask) list."""

    name: str
    class_ind: int
    mask: np.ndarray
    parts: list[tuple[str, np.ndarray]] = field(default_factory=list)


def write_part_annotation(path: Path, objects: Sequence[FakeObject], imname: str = "fake") -> None:
    """human_parts/<id>.mat: struct anno with a 1 x N struct array of objects, each with a 1 x M
    struct array of parts, or an empty array when it has none."""
    records = np.zeros(
        (1, len(objects)), dtype=[("class", object), ("class_ind", object), ("mask", object), ("parts", object)]
    )
    for i, obj in enumerate(objects):
        if obj.parts:
            parts = np.zeros((1, len(obj.parts)), dtype=[("part_name", object), ("mask", object)])
            for j, (name, mask) in enumerate(obj.parts):
                parts[0, j] = (name, mask.astype(np.uint8))
        else:
            parts = np.zeros((0, 0))
        records[0, i] = (obj.name, float(obj.class_ind), obj.mask.astype(np.uint8), parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"anno": {"imname": imname, "objects": records}})


def write_context_labels(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"LabelMap": labels.astype(np.uint16)})


def write_class_tables(root: Path, folder: str = "json") -> None:
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / "context_classes.json").write_text(json.dumps(CONTEXT_CLASSES))
    (root / folder / "nyu_classes.json").write_text(json.dumps(NYU_CLASSES))


def person_objects(h: int, w: int) -> list[FakeObject]:
    """A person with head / torso / upper-arm parts and a cat (with a part) beside it."""
    body = np.zeros((h, w), bool)
    body[h // 4 :, : w // 2] = True
    head, torso, arm = np.zeros_like(body), np.zeros_like(body), np.zeros_like(body)
    head[h // 4 : h // 2, : w // 4] = True
    torso[h // 2 :, : w // 2] = True
    arm[h // 2 :, w // 4 : w // 2] = True  # overlaps the torso, written later
    cat = np.zeros_like(body)
    cat[: h // 4, w // 2 :] = True
    return [
        FakeObject("person", PERSON, body, [("head", head), ("torso", torso), ("luarm", arm)]),
        FakeObject("cat", CAT, cat, [("head", cat)]),
    ]


def cat_objects(h: int, w: int) -> list[FakeObject]:
    cat = np.zeros((h, w), bool)
    cat[h // 2 :, w // 2 :] = True
    return [FakeObject("cat", CAT, cat, [("head", cat)])]


def _semseg(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Vertical bands of 3 classes (0..20) and an ignore patch."""
    classes = rng.choice(np.arange(0, 21), size=3, replace=False)
    labels = np.broadcast_to(classes[np.arange(w) * 3 // w], (h, w)).astype(np.uint8).copy()
    labels[: h // 8, : w // 8] = 255
    return labels


def _context_labels(h: int, w: int) -> np.ndarray:
    """Four quadrants: wall, sky (not NYU), tvmonitor, grass (not NYU)."""
    labels = np.full((h, w), CONTEXT_CLASSES["wall"], np.uint16)
    labels[: h // 2, w // 2 :] = CONTEXT_CLASSES["sky"]
    labels[h // 2 :, : w // 2] = CONTEXT_CLASSES["tvmonitor"]
    labels[h // 2 :, w // 2 :] = CONTEXT_CLASSES["grass"]
    return labels


def write_sample(
    root: Path, sample_id: str, size: tuple[int, int], rng: np.random.Generator, with_person: bool, semseg_folder: str
) -> None:
    """Every file of one id."""
    h, w = size
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{sample_id}.jpg")
    semseg_dir = root / "semseg" / semseg_folder
    semseg_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_semseg(rng, h, w)).save(semseg_dir / f"{sample_id}.png")
    objects = person_objects(h, w) if with_person else cat_objects(h, w)
    write_part_annotation(root / "human_parts" / f"{sample_id}.mat", objects, sample_id)
    for folder, array in (
        ("sal_distill", rng.integers(0, 256, (h, w), dtype=np.uint8)),
        ("normals_distill", rng.integers(0, 256, (h, w, 3), dtype=np.uint8)),
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / folder / f"{sample_id}.png")
    write_context_labels(root / "pascal-context" / "trainval" / f"{sample_id}.mat", _context_labels(h, w))


def fake_ids(n_train: int, n_val: int) -> tuple[list[str], list[str]]:
    ids = [f"2008_{i:06d}" for i in range(1, n_train + n_val + 1)]
    return ids[:n_train], ids[n_train:]


def write_fake_pascal(
    root: str | Path,
    n_train: int = 3,
    n_val: int = 2,
    size: tuple[int, int] = (40, 48),
    seed: int = 0,
    tables: str | None = "json",
) -> Path:
    """Write a PASCALContext folder; ids alternate person / no person and VOC12 / pascal-context
    semseg (the first id has a person and VOC12 semseg). Returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    train, val = fake_ids(n_train, n_val)
    for k, sample_id in enumerate(train + val):
        write_sample(
            root,
            sample_id,
            size,
            rng,
            with_person=k % 2 == 0,
            semseg_folder="VOC12" if k % 2 == 0 else "pascal-context",
        )
    if tables is not None:
        write_class_tables(root, tables)
    (root / "ImageSets" / "Context").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Context" / "train.txt").write_text("".join(f"{i}\n" for i in train))
    (root / "ImageSets" / "Context" / "val.txt").write_text("".join(f"{i}\n" for i in val))
    return root
