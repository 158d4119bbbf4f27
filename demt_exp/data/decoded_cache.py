"""Decoded items kept on local disk, so an epoch after the first skips the decoding.

Decoding is most of a PASCAL-Context item's cost (JPEG, the MATLAB part and Context files, the edge map
thinned out of the Context labels: `python -m demt_exp.bench data`); the random transforms stay per item.
Each item's arrays go into one uncompressed `.npz` written atomically on its first load and read back
without pickle (`allow_pickle=False`: data only); arrays whose values are bytes (the RGB image, class
maps, 0/1 edges) are stored as uint8 and given back in their own dtype, bit for bit. The folder name
carries the data set, root, split and tasks, so another selection never reads these files; delete the
folder when the data files change.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SIZE_KEY = "__size__"  # the original (H, W) of meta; ids are the file names
DTYPES_KEY = "__dtypes__"  # name=dtype of each array stored narrower than it is


def narrowed(array: np.ndarray) -> np.ndarray:
    """The array as uint8 when that loses nothing (integral values in [0, 255]), else itself."""
    if array.dtype == np.uint8 or array.dtype.kind not in "iuf" or array.size == 0:
        return array
    if array.min() < 0 or array.max() > 255:
        return array
    small = array.astype(np.uint8)
    return small if np.array_equal(small, array) else array


def _read(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of one item in their own dtypes; None for a file that is absent, cut short or not ours."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        size, changed = arrays[SIZE_KEY], arrays.pop(DTYPES_KEY).tolist()
        for entry in changed:
            name, _, dtype = str(entry).partition("=")
            if np.dtype(dtype).kind not in "biuf" or name not in arrays or name == SIZE_KEY:
                return None
            arrays[name] = arrays[name].astype(dtype)
    except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return arrays if size.shape == (2,) and size.dtype.kind in "iu" else None


class DecodedCache:
    """One data set split's decoded items, a file per id under a folder named by the selection."""

    def __init__(self, folder: str | Path, dataset: str, root: Path, split: str, maps: Sequence[str]) -> None:
        selection = repr((dataset, str(Path(root).resolve()), split, tuple(maps)))
        digest = hashlib.sha256(selection.encode()).hexdigest()[:16]
        self.folder = Path(folder).expanduser() / f"{dataset}-{split}-{digest}"
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, sample_id: str) -> Path:
        return self.folder / f"{sample_id}.npz"

    def get(self, sample_id: str, load: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The decoded sample of `sample_id`: read back, or loaded and written for the next epoch (also in
        place of a file that is cut short or was not written here)."""
        path = self.path(sample_id)
        arrays = _read(path)
        if arrays is None:
            sample = load()
            self._write(path, sample)
            return sample
        size = tuple(int(v) for v in arrays.pop(SIZE_KEY))
        return {**arrays, "meta": {"id": sample_id, "size": size}}

    def _write(self, path: Path, sample: dict[str, Any]) -> None:
        arrays = {name: np.asarray(value) for name, value in sample.items() if name != "meta"}
        stored = {name: narrowed(array) for name, array in arrays.items()}
        changed = [f"{name}={arrays[name].dtype.str}" for name in arrays if stored[name].dtype != arrays[name].dtype]
        stored[DTYPES_KEY] = np.asarray(changed, dtype=np.str_)
        stored[SIZE_KEY] = np.asarray(sample["meta"]["size"], np.int64)
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=f".{path.stem}-", suffix=".npz")
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez(file, **stored)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
