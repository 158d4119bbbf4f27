"""NYUD-v2 multi-task data set (SPEC 3.2): semseg (40 classes), depth, normals, edge.

Two on-disk layouts hold the same data and are told apart by the image extension:
  demt (DeMT / DeGMix / InvPT release): images/<id>.png, normals/<id>.png, edge/<id>.png
  atrc (ATRC's NYUD_MT):                images/<id>.jpg, normals/<id>.npy, edge/<id>.npy
Both: segmentation/<id>.png, depth/<id>.npy, gt_sets/train.txt and gt_sets/val.txt.

Every file is checked as it is decoded, so a broken data set fails with the file's path and what
was expected rather than deep inside a loss; `python -m demt_exp.data verify` runs the same checks
over a whole folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from demt_exp.data.dense_dataset import (
    DatasetFileError,
    DenseDataset,
    check_same_size,
    check_split,
    open_image,
    pick_transform,
    read_id_list,
    validate_tasks,
)
from demt_exp.data.dense_dataset import check_root as check_data_root
from demt_exp.data.dense_dataset import default_root as data_root
from demt_exp.data.tasks import IGNORE_INDEX
from demt_exp.data.transforms import Sample, parse_size

NYUD_TASKS: tuple[str, ...] = ("semseg", "depth", "normals", "edge")
NUM_CLASSES = 40
IMAGE_SIZE = (425, 560)

ROOT_NAME = "NYUDv2"
FOLDERS = {"image": "images", "semseg": "segmentation", "depth": "depth", "normals": "normals", "edge": "edge"}
LAYOUTS: dict[str, dict[str, str]] = {
    "demt": {"image": "png", "semseg": "png", "depth": "npy", "normals": "png", "edge": "png"},
    "atrc": {"image": "jpg", "semseg": "png", "depth": "npy", "normals": "npy", "edge": "npy"},
}
NORMALS_TOLERANCE = 1e-3  # NPY normals are unit vectors up to storage rounding


EXPECTED = {
    ("image", "png"): "an RGB PNG image",
    ("image", "jpg"): "an RGB JPEG image",
    ("semseg", "png"): "a single-channel PNG of labels 0..40 (0 = unlabelled)",
    ("depth", "npy"): "a float .npy of depth in metres, shape (H, W) or (H, W, 1), finite and >= 0 (0 = invalid)",
    ("normals", "png"): "an RGB PNG of normals encoded as v = 255 (n + 1) / 2",
    ("normals", "npy"): "a float .npy of normals, shape (H, W, 3), components in [-1, 1] (zero vector = invalid)",
    ("edge", "png"): "a single-channel PNG of edges with values 0 or 255",
    ("edge", "npy"): "a .npy of edges, shape (H, W) or (H, W, 1), values 0 or 1",
}


def _load_npy(path: Path, expected: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetFileError(path, "missing", expected) from None
    except (OSError, ValueError, EOFError) as err:
        raise DatasetFileError(path, f"unreadable .npy ({err})", expected) from None
    if not isinstance(array, np.ndarray):
        raise DatasetFileError(path, f"holds a {type(array).__name__}, not one array", expected)
    return array


def _single_channel(array: np.ndarray, path: Path, expected: str) -> np.ndarray:
    """(H, W) from (H, W) or (H, W, 1)."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise DatasetFileError(path, f"shape {array.shape}", expected)
    return array


def decode_image(path: Path, ext: str) -> np.ndarray:
    """RGB float32 (H, W, 3) in [0, 255]."""
    expected = EXPECTED[("image", ext)]
    image = open_image(path, expected)
    if image.mode != "RGB":
        raise DatasetFileError(path, f"image mode {image.mode}", expected)
    return np.asarray(image, dtype=np.float32)


def decode_semseg(path: Path, ext: str = "png") -> np.ndarray:
    """int64 (H, W): file value v -> class v - 1, 0 (unlabelled) -> 255."""
    expected = EXPECTED[("semseg", ext)]
    image = open_image(path, expected)
    if image.mode not in ("L", "P", "I", "I;16"):
        raise DatasetFileError(path, f"image mode {image.mode}", expected)
    labels = np.asarray(image).astype(np.int64)
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi > NUM_CLASSES:
        raise DatasetFileError(path, f"label values span {lo}..{hi}", expected)
    return np.where(labels == 0, IGNORE_INDEX, labels - 1)


def decode_depth(path: Path, ext: str = "npy") -> np.ndarray:
    """float32 (H, W, 1) metres; zeros stay (AddIgnoreRegions turns them into 255)."""
    expected = EXPECTED[("depth", ext)]
    depth = _single_channel(_load_npy(path, expected), path, expected)
    if not np.issubdtype(depth.dtype, np.floating):
        raise DatasetFileError(path, f"dtype {depth.dtype}", expected)
    if not np.isfinite(depth).all():
        raise DatasetFileError(path, "non-finite depth values", expected)
    if depth.size and float(depth.min()) < 0:
        raise DatasetFileError(path, f"negative depth (min {float(depth.min()):.4g})", expected)
    return depth.astype(np.float32)[..., None]


def decode_normals(path: Path, ext: str) -> np.ndarray:
    """float32 (H, W, 3). PNG: n = 2 v / 255 - 1, not renormalised (so never a zero vector, SPEC 8
    item 17). NPY: the stored vectors, zeros where invalid."""
    expected = EXPECTED[("normals", ext)]
    if ext == "png":
        image = open_image(path, expected)
        if image.mode != "RGB":
            raise DatasetFileError(path, f"image mode {image.mode}", expected)
        return np.asarray(image, dtype=np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
    normals = _load_npy(path, expected)
    if normals.ndim != 3 or normals.shape[2] != 3:
        raise DatasetFileError(path, f"shape {normals.shape}", expected)
    if not np.issubdtype(normals.dtype, np.floating):
        raise DatasetFileError(path, f"dtype {normals.dtype}", expected)
    if not np.isfinite(normals).all():
        raise DatasetFileError(path, "non-finite values", expected)
    if normals.size and float(np.abs(normals).max()) > 1 + NORMALS_TOLERANCE:
        raise DatasetFileError(path, f"components up to {float(np.abs(normals).max()):.4g} in magnitude", expected)
    return normals.astype(np.float32)


def decode_edge(path: Path, ext: str) -> np.ndarray:
    """float32 (H, W, 1) in {0, 1}. PNG: v / 255."""
    expected = EXPECTED[("edge", ext)]
    if ext == "png":
        image = open_image(path, expected)
        if image.mode == "1":
            image = image.convert("L")
        if image.mode not in ("L", "P"):
            raise DatasetFileError(path, f"image mode {image.mode}", expected)
        raw = np.asarray(image)
        if not ((raw == 0) | (raw == 255)).all():
            raise DatasetFileError(path, f"values {_some_values(raw)}", expected)
        return (raw.astype(np.float32) / np.float32(255.0))[..., None]
    edge = _single_channel(_load_npy(path, expected), path, expected)
    if not (np.issubdtype(edge.dtype, np.number) or edge.dtype == np.bool_):
        raise DatasetFileError(path, f"dtype {edge.dtype}", expected)
    if not ((edge == 0) | (edge == 1)).all():
        raise DatasetFileError(path, f"values {_some_values(edge)}", expected)
    return edge.astype(np.float32)[..., None]


def _some_values(array: np.ndarray, limit: int = 6) -> str:
    values = np.unique(array)
    shown = ", ".join(f"{v:g}" for v in values[:limit].tolist())
    return f"{{{shown}{', ...' if len(values) > limit else ''}}}"


DECODERS: dict[str, Callable[[Path, str], np.ndarray]] = {
    "image": decode_image,
    "semseg": decode_semseg,
    "depth": decode_depth,
    "normals": decode_normals,
    "edge": decode_edge,
}


def item_path(root: Path, layout: str, item: str, sample_id: str) -> Path:
    """Where `item` (image or a task) of `sample_id` lives in `layout`."""
    return root / FOLDERS[item] / f"{sample_id}.{LAYOUTS[layout][item]}"


def read_item(root: Path, layout: str, item: str, sample_id: str) -> np.ndarray:
    """Decode one file; DatasetFileError names it when it is missing or malformed."""
    return DECODERS[item](item_path(root, layout, item, sample_id), LAYOUTS[layout][item])


def default_root() -> Path:
    """$DEMT_DATA/NYUDv2."""
    return data_root(ROOT_NAME, "NYUD-v2")


def check_root(root: Path) -> Path:
    return check_data_root(root, "NYUD-v2", f"{', '.join(f'{f}/' for f in FOLDERS.values())} and gt_sets/")


def split_file(root: Path, split: str) -> Path:
    return root / "gt_sets" / f"{split}.txt"


def read_split(root: Path, split: str) -> list[str]:
    """Image ids listed in gt_sets/<split>.txt, one per line."""
    return read_id_list(split_file(root, check_split(split)), "NYUD-v2")


def detect_layout(root: Path, ids: Sequence[str]) -> str:
    """'demt' when images are PNG, 'atrc' when JPEG, decided by the first id whose image exists
    (normals' extension breaks a tie when both exist)."""
    for sample_id in ids:
        found = [name for name in LAYOUTS if item_path(root, name, "image", sample_id).is_file()]
        if len(found) == 2:
            found = [n for n in LAYOUTS if item_path(root, n, "normals", sample_id).is_file()] or found
        if found:
            return found[0]
    first = ids[0]
    raise DatasetFileError(
        root / FOLDERS["image"],
        f"no image for any listed id (e.g. {first}.png / {first}.jpg)",
        "images/<id>.png (DeMT/DeGMix layout) or images/<id>.jpg (ATRC layout)",
    )


class NYUDv2(DenseDataset):
    """NYUD-v2 split as batches of tasks.py. transform: "auto" (train split: the augmenting training
    pipeline; val: normalise and pad only), None (the decoded HWC arrays, for inspection), or a
    callable applied to the decoded sample. image_size: crop/pad size, 425x560 in the official
    code; 448x576 pads centred with ignore labels (SPEC 8 item 24)."""

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        tasks: Sequence[str] = NYUD_TASKS,
        image_size: Sequence[int] = IMAGE_SIZE,
        transform: str | Callable[[Sample], Any] | None = "auto",
        layout: str = "auto",
        decoded_cache: str | Path | None = None,
    ) -> None:
        self.root = check_root(Path(root) if root is not None else default_root())
        self.split = split
        self.tasks = validate_tasks(tasks, NYUD_TASKS, "NYUD-v2")
        self.image_size = parse_size(image_size, "image_size")
        self.ids = read_split(self.root, split)
        if layout not in ("auto", *LAYOUTS):
            raise ValueError(f"layout must be 'auto' or one of {list(LAYOUTS)}, got {layout!r}")
        self.layout = detect_layout(self.root, self.ids) if layout == "auto" else layout
        self.transform = pick_transform(transform, split, self.image_size, self.tasks)
        self.keep_decoded(decoded_cache, "nyud", self.root, split)

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> Sample:
        """Decoded arrays of one sample: image, semseg (always, the crop needs it), the tasks."""
        sample_id = self.ids[index]
        image_path = item_path(self.root, self.layout, "image", sample_id)
        sample: Sample = {"image": read_item(self.root, self.layout, "image", sample_id)}
        height, width = sample["image"].shape[:2]
        for item in dict.fromkeys(("semseg", *self.tasks)):
            array = read_item(self.root, self.layout, item, sample_id)
            sample[item] = check_same_size(
                array, item_path(self.root, self.layout, item, sample_id), image_path, (height, width)
            )
        sample["meta"] = {"id": sample_id, "size": (height, width)}
        return sample

    def __repr__(self) -> str:
        return (
            f"NYUDv2(root={str(self.root)!r}, split={self.split!r}, layout={self.layout!r}, "
            f"tasks={list(self.tasks)}, image_size={self.image_size}, {len(self)} images)"
        )
