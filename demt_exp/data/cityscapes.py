"""Cityscapes multi-task data set: 19-class semseg and metric depth from the stereo disparity.

Layout of <root> (the official release, leftImg8bit + gtFine + disparity + camera packages):
  leftImg8bit/<split>/<city>/<name>_leftImg8bit.png     RGB 1024x2048
  gtFine/<split>/<city>/<name>_gtFine_labelIds.png      labelIds 0..33 -> trainIds 0..18, else 255
  disparity/<split>/<city>/<name>_disparity.png         uint16 p: disparity (p - 1) / 256 px, p = 0 invalid
  camera/<split>/<city>/<name>_camera.json              extrinsic.baseline (m), intrinsic.fx (px)
Splits train (2,975) and val (500) are found by listing leftImg8bit/<split>/*/.

Depth = baseline * fx / disparity in metres. Pixels with p <= 1 carry no depth (p = 1 would be a
zero disparity, an infinite depth) and become 0, which AddIgnoreRegions turns into ignore; so do
depths beyond `max_depth` when one is given. Frames are resized once on load to `resolution`
(image: PIL bilinear, which filters when shrinking; labels and depth: nearest neighbour at pixel
centres, so both sample the same pixels and depth values stay metric), then go through the
official transforms with crop/pad size `image_size`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from demt_exp.data.dense_dataset import (
    ROOT_ENV,
    DatasetFileError,
    DenseDataset,
    check_same_size,
    check_split,
    open_image,
    pick_transform,
    validate_tasks,
)
from demt_exp.data.dense_dataset import default_root as data_root
from demt_exp.data.tasks import IGNORE_INDEX
from demt_exp.data.transforms import Sample, parse_size

CITYSCAPES_TASKS: tuple[str, ...] = ("semseg", "depth")
NUM_CLASSES = 19
RESOLUTION = (128, 256)
ROOT_NAME = "cityscapes"
IMAGE_SUFFIX = "_leftImg8bit.png"
# cityscapesScripts labels.py: labelId -> trainId of the 19 evaluated classes; all others 255.
LABEL_TO_TRAIN: dict[int, int] = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
TRAIN_ID_LUT = np.full(256, IGNORE_INDEX, np.int64)
TRAIN_ID_LUT[list(LABEL_TO_TRAIN)] = list(LABEL_TO_TRAIN.values())
DISPARITY_SCALE = 256.0

EXPECTED = {
    "semseg": "a single-channel 8-bit PNG of Cityscapes labelIds",
    "disparity": "a 16-bit single-channel PNG of disparities stored as p = 256 d + 1 (0 = invalid)",
    "camera": "a JSON file with numbers extrinsic.baseline (metres) and intrinsic.fx (pixels), both > 0",
}


@dataclass(frozen=True)
class Frame:
    """The files of one Cityscapes frame."""

    name: str
    image: Path
    labels: Path
    disparity: Path
    camera: Path


def decode_image(path: Path) -> Image.Image:
    """The RGB frame (kept as a PIL image until resized)."""
    image = open_image(path, "an RGB PNG image")
    if image.mode != "RGB":
        raise DatasetFileError(path, f"image mode {image.mode}", "an RGB PNG image")
    return image


def decode_train_ids(path: Path) -> np.ndarray:
    """int64 (H, W) trainIds 0..18, 255 for every other labelId."""
    image = open_image(path, EXPECTED["semseg"])
    if image.mode not in ("L", "P"):
        raise DatasetFileError(path, f"image mode {image.mode}", EXPECTED["semseg"])
    return TRAIN_ID_LUT[np.asarray(image)]


def read_camera(path: Path) -> tuple[float, float]:
    """(baseline in metres, fx in pixels) of one frame."""
    expected = EXPECTED["camera"]
    try:
        camera = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetFileError(path, "missing", expected) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetFileError(path, f"unreadable JSON ({err})", expected) from None
    values = []
    for group, key in (("extrinsic", "baseline"), ("intrinsic", "fx")):
        section = camera.get(group) if isinstance(camera, dict) else None
        value = section.get(key) if isinstance(section, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise DatasetFileError(path, f"{group}.{key} = {value!r}", expected)
        values.append(float(value))
    return values[0], values[1]


def disparity_to_depth(raw: np.ndarray, baseline: float, fx: float, max_depth: float | None = None) -> np.ndarray:
    """float32 depth in metres from the stored uint16 values; 0 where p <= 1 or beyond max_depth."""
    raw = np.asarray(raw, np.float64)
    valid = raw > 1
    disparity = (raw - 1.0) / DISPARITY_SCALE
    depth = np.where(valid, baseline * fx / np.where(valid, disparity, 1.0), 0.0)
    if max_depth is not None:
        depth[depth > max_depth] = 0.0
    return depth.astype(np.float32)


def decode_depth(disparity_path: Path, camera_path: Path, max_depth: float | None = None) -> np.ndarray:
    """float32 (H, W) depth in metres, 0 = invalid."""
    image = open_image(disparity_path, EXPECTED["disparity"])
    if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise DatasetFileError(disparity_path, f"image mode {image.mode}", EXPECTED["disparity"])
    raw = np.asarray(image)
    if raw.size and (int(raw.min()) < 0 or int(raw.max()) > 65535):
        raise DatasetFileError(disparity_path, f"values {int(raw.min())}..{int(raw.max())}", EXPECTED["disparity"])
    baseline, fx = read_camera(camera_path)
    return disparity_to_depth(raw, baseline, fx, max_depth)


def nearest_indices(source: int, target: int) -> np.ndarray:
    """Source rows/columns sampled by nearest-neighbour resizing at pixel centres (PIL's rule)."""
    return np.minimum(((np.arange(target) + 0.5) * source / target).astype(np.int64), source - 1)


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    rows, cols = nearest_indices(array.shape[0], size[0]), nearest_indices(array.shape[1], size[1])
    return array[rows[:, None], cols[None, :]]


def resize_image(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """float32 (H, W, 3) in [0, 255] at `size` = (H, W)."""
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def default_root() -> Path:
    """$DEMT_DATA/cityscapes."""
    return data_root(ROOT_NAME, "Cityscapes")


def list_frames(root: Path, split: str) -> list[Frame]:
    """Every leftImg8bit/<split>/<city>/<name>_leftImg8bit.png, sorted by city and name."""
    folder = root / "leftImg8bit" / check_split(split)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Cityscapes images not found: looked for the folder {folder}; expected "
            f"leftImg8bit/, gtFine/, disparity/ and camera/ with {split}/<city>/ folders under "
            f"{root} (set dataset.root=PATH or ${ROOT_ENV})"
        )
    frames = []
    for path in sorted(folder.glob(f"*/*{IMAGE_SUFFIX}")):
        city, name = path.parent.name, path.name[: -len(IMAGE_SUFFIX)]
        frames.append(
            Frame(
                name,
                path,
                root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png",
                root / "disparity" / split / city / f"{name}_disparity.png",
                root / "camera" / split / city / f"{name}_camera.json",
            )
        )
    if not frames:
        raise DatasetFileError(folder, "no images", f"<city>/<name>{IMAGE_SUFFIX} files")
    return frames


class Cityscapes(DenseDataset):
    """Cityscapes split as batches of tasks.py.

    resolution: (H, W) every frame is resized to on load, None to keep the full 1024x2048.
    image_size: crop (train) / pad (val) size of the official transforms; None = resolution.
    max_depth: depths beyond it (metres) are ignored; None keeps every valid disparity.
    transform: "auto" (train: the augmenting pipeline; val: normalise and pad), None (decoded HWC
    arrays), or a callable applied to the decoded sample.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        tasks: Sequence[str] = CITYSCAPES_TASKS,
        image_size: Sequence[int] | None = None,
        resolution: Sequence[int] | None = RESOLUTION,
        max_depth: float | None = None,
        transform: str | Callable[[Sample], Any] | None = "auto",
    ) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.split = split
        self.tasks = validate_tasks(tasks, CITYSCAPES_TASKS, "Cityscapes")
        self.resolution = None if resolution is None else parse_size(resolution, "resolution")
        if image_size is None and self.resolution is None:
            raise ValueError("image_size is needed when resolution is None (full-resolution frames)")
        self.image_size = parse_size(image_size if image_size is not None else self.resolution, "image_size")
        if max_depth is not None and not float(max_depth) > 0:
            raise ValueError(f"max_depth must be a positive number of metres or None, got {max_depth!r}")
        self.max_depth = None if max_depth is None else float(max_depth)
        self.frames = list_frames(self.root, split)
        self.transform = pick_transform(transform, split, self.image_size, self.tasks)

    def __len__(self) -> int:
        return len(self.frames)

    def load(self, index: int) -> Sample:
        """Decoded arrays of one frame at `resolution`: image, semseg (always, the crop needs it), depth."""
        frame = self.frames[index]
        image = decode_image(frame.image)
        full = (image.height, image.width)
        size = self.resolution or full
        sample: Sample = {"image": resize_image(image, size)}
        labels = check_same_size(decode_train_ids(frame.labels), frame.labels, frame.image, full)
        sample["semseg"] = resize_nearest(labels, size)
        if "depth" in self.tasks:
            depth = check_same_size(
                decode_depth(frame.disparity, frame.camera, self.max_depth), frame.disparity, frame.image, full
            )
            sample["depth"] = resize_nearest(depth, size)[..., None]
        sample["meta"] = {"id": frame.name, "size": size}
        return sample

    def __repr__(self) -> str:
        return (
            f"Cityscapes(root={str(self.root)!r}, split={self.split!r}, tasks={list(self.tasks)}, "
            f"resolution={self.resolution}, image_size={self.image_size}, {len(self)} frames)"
        )
