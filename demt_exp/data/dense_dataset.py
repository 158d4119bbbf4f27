"""What every real dense-prediction data set shares: root lookup, id lists, task and size checks,
named file errors, and the load -> official transform -> sample step."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from demt_exp.data.decoded_cache import DecodedCache
from demt_exp.data.transforms import Sample, build_eval_transform, build_train_transform

ROOT_ENV = "DEMT_DATA"
SPLITS = ("train", "val")
ID_LIST = "a text file with one image id per line"


class DatasetFileError(ValueError):
    """A data file that is missing, unreadable or not in the documented format."""

    def __init__(self, path: Path | str, problem: str, expected: str) -> None:
        self.path, self.problem, self.expected = Path(path), problem, expected
        super().__init__(f"{path}: {problem}; expected {expected}")


def default_root(folder: str, label: str) -> Path:
    """$DEMT_DATA/<folder>, or an error saying how to point at the data."""
    base = os.environ.get(ROOT_ENV)
    if not base:
        raise FileNotFoundError(
            f"no {label} root given and ${ROOT_ENV} is not set; pass root= "
            f"(dataset.root=PATH) or set {ROOT_ENV} to the folder holding {folder}/"
        )
    return Path(base) / folder


def check_root(root: Path, label: str, contents: str) -> Path:
    """The data set folder must exist; the error says what belongs inside and how to set it."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"{label} root not found: looked for the folder {root}; expected {contents} "
            f"inside (set dataset.root=PATH or ${ROOT_ENV})"
        )
    return root


def open_image(path: Path, expected: str) -> Image.Image:
    """Open and decode an image file, or a DatasetFileError saying missing / corrupt."""
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise DatasetFileError(path, "missing", expected) from None
    except (OSError, SyntaxError, ValueError) as err:  # PIL reports corrupt files with these
        raise DatasetFileError(path, f"unreadable image ({err})", expected) from None
    return image


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    return split


def read_id_list(path: Path, label: str) -> list[str]:
    """Non-empty lines of a split file, with errors naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{label} split file not found: looked for {path}; expected {ID_LIST}")
    try:
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetFileError(path, f"unreadable ({err})", ID_LIST) from None
    if not ids:
        raise DatasetFileError(path, "no ids", ID_LIST)
    return ids


def validate_tasks(value: Any, allowed: Sequence[str], label: str) -> tuple[str, ...]:
    """Distinct task names that the data set provides."""
    if isinstance(value, str):
        raise ValueError(f"tasks must be a list of task names, not the string {value!r}")
    tasks = tuple(str(t) for t in value)
    unknown = [t for t in tasks if t not in allowed]
    if unknown or not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must be distinct names from {list(allowed)} ({label}), got {list(tasks)}")
    return tasks


def check_same_size(array: np.ndarray, path: Path, image: Path, size: tuple[int, int]) -> np.ndarray:
    """A label map must cover its image pixel for pixel."""
    if array.shape[:2] != size:
        raise DatasetFileError(
            path, f"size {array.shape[0]}x{array.shape[1]}", f"the size of its image {image} ({size[0]}x{size[1]})"
        )
    return array


def pick_transform(
    transform: str | Callable[[Sample], Any] | None, split: str, image_size: tuple[int, int], tasks: Sequence[str]
) -> Callable[[Sample], Any] | None:
    """ "auto": the official training pipeline for train, normalise-and-pad for val (SPEC 3.4)."""
    if transform == "auto":
        build = build_train_transform if split == "train" else build_eval_transform
        return build(image_size, tasks)
    if isinstance(transform, str):
        raise ValueError(f"transform must be 'auto', None or a callable, got {transform!r}")
    return transform


class DenseDataset(Dataset):
    """Base of the real data sets: subclasses decode a sample in `load`; this applies the transform.

    With transform=None a sample is the decoded HWC arrays of the requested tasks (for inspection).
    `extra_maps` names maps a sample carries besides its tasks (e.g. the evaluation's boundary labels).
    """

    tasks: tuple[str, ...]
    ids: list[str]
    transform: Callable[[Sample], Any] | None
    extra_maps: tuple[str, ...] = ()
    decoded: DecodedCache | None = None  # decoded items on local disk (`decoded_cache=FOLDER`)

    def load(self, index: int) -> Sample:  # pragma: no cover - interface
        raise NotImplementedError

    def keep_decoded(self, folder: str | Path | None, dataset: str, root: Path, split: str) -> None:
        """Read decoded items from `folder` after their first load (None: decode every time)."""
        if folder is not None:
            self.decoded = DecodedCache(folder, dataset, root, split, ("semseg", *self.tasks, *self.extra_maps))

    def __getitem__(self, index: int) -> Sample:
        index = int(index)
        if self.decoded is None:
            sample = self.load(index)
        else:
            sample = self.decoded.get(self.ids[index], lambda: self.load(index))
        if self.transform is None:
            return {k: v for k, v in sample.items() if k in ("image", "meta", *self.tasks, *self.extra_maps)}
        return self.transform(sample)
