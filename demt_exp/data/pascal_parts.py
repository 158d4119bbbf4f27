"""PASCAL-Part person annotations (SPEC 3.3): the 6-group human-part map and the part index.

An annotation file human_parts/<id>.mat holds the struct `anno` with fields `imname` and
`objects`; `objects` is a struct array with fields `class` (name), `class_ind` (VOC class id,
15 = person), `mask` (instance mask) and `parts`, itself a struct array with `part_name` and
`mask` (an empty array for objects without parts).

The part index (ImageSets/Parts/<split>.txt in the reference code) maps each image id to the
class ids of its objects, -1 for an object of zero area. The loader uses it to skip the .mat of
images without persons. The reference code writes it into the data folder on first use; here a
copy shipped with the data is read if valid, otherwise the index is built once and cached under
a user cache folder, and written into the data folder only on request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from demt_exp.data.nyud import DatasetFileError

log = logging.getLogger(__name__)

PERSON_CLASS = 15
NUM_PART_CLASSES = 7  # background + 6 groups
# 6-group person-part map of the reference loaders: 1 head, 2 torso and neck, 3 upper arms,
# 4 lower arms and hands, 5 upper legs, 6 lower legs and feet.
HUMAN_PART_GROUPS: dict[str, int] = {
    "hair": 1,
    "head": 1,
    "lear": 1,
    "rear": 1,
    "lebrow": 1,
    "rebrow": 1,
    "leye": 1,
    "reye": 1,
    "mouth": 1,
    "nose": 1,
    "neck": 2,
    "torso": 2,
    "luarm": 3,
    "ruarm": 3,
    "llarm": 4,
    "rlarm": 4,
    "lhand": 4,
    "rhand": 4,
    "luleg": 5,
    "ruleg": 5,
    "llleg": 6,
    "rlleg": 6,
    "lfoot": 6,
    "rfoot": 6,
}
ANNOTATION_EXPECTED = (
    "a PASCAL-Part .mat file with the struct 'anno' holding 'objects' "
    "(fields class, class_ind, mask, parts; parts: part_name, mask)"
)
INDEX_EXPECTED = "a JSON object mapping every image id of the split to a list of integer class ids"
CACHE_ENV = "XDG_CACHE_HOME"


@dataclass(frozen=True)
class PartObject:
    """One annotated object: VOC class id, instance mask and its (part name, mask) list."""

    class_id: int
    mask: np.ndarray
    parts: list[tuple[str, np.ndarray]] = field(default_factory=list)


def _field(record: Any, name: str, path: Path) -> Any:
    """A named field of a loadmat struct record, or an error naming the missing field."""
    names = getattr(getattr(record, "dtype", None), "names", None) or ()
    if name not in names:
        raise DatasetFileError(path, f"struct without the field {name!r} (fields: {list(names)})", ANNOTATION_EXPECTED)
    return record[name]


def _records(array: Any) -> list[Any]:
    """The elements of a loadmat struct array (1 x N, or empty)."""
    array = np.asarray(array)
    return [] if array.size == 0 or array.dtype.names is None else list(array.ravel())


def _string(value: Any) -> str:
    """A MATLAB char array as loadmat returns it (array(['head'])) -> 'head'."""
    array = np.asarray(value).ravel()
    return str(array[0]) if array.size else ""


def _mask(value: Any, path: Path, what: str) -> np.ndarray:
    mask = np.asarray(value)
    if mask.ndim != 2:
        raise DatasetFileError(path, f"{what} of shape {mask.shape}", ANNOTATION_EXPECTED)
    return mask.astype(bool)


def load_mat(path: Path, expected: str) -> dict[str, Any]:
    """scipy.io.loadmat with the file's path in every failure."""
    try:
        return scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise DatasetFileError(path, "missing", expected) from None
    except (OSError, ValueError, TypeError, NotImplementedError, scipy.io.matlab.MatReadError) as err:
        raise DatasetFileError(path, f"unreadable .mat ({err})", expected) from None


def read_part_objects(path: Path) -> list[PartObject]:
    """All objects of one PASCAL-Part annotation file."""
    contents = load_mat(path, ANNOTATION_EXPECTED)
    if "anno" not in contents:
        variables = sorted(k for k in contents if not k.startswith("__"))
        raise DatasetFileError(path, f"no variable 'anno' (variables: {variables})", ANNOTATION_EXPECTED)
    anno = _records(contents["anno"])
    if not anno:
        raise DatasetFileError(path, "'anno' is not a struct", ANNOTATION_EXPECTED)
    objects = []
    for record in _records(_field(anno[0], "objects", path)):
        class_id = np.asarray(_field(record, "class_ind", path)).ravel()
        if class_id.size != 1:
            raise DatasetFileError(path, f"class_ind with {class_id.size} values", ANNOTATION_EXPECTED)
        parts = [
            (_string(_field(p, "part_name", path)), _mask(_field(p, "mask", path), path, "part mask"))
            for p in _records(_field(record, "parts", path))
        ]
        objects.append(PartObject(int(class_id[0]), _mask(_field(record, "mask", path), path, "object mask"), parts))
    return objects


def human_part_map(objects: Sequence[PartObject], shape: tuple[int, int], path: Path | str = "<objects>") -> np.ndarray:
    """int64 (H, W): part groups of all persons that have parts, 0 elsewhere; later parts overwrite
    earlier ones where masks overlap (file order, as the reference loop)."""
    target = np.zeros(shape, np.int64)
    for obj in objects:
        if obj.class_id != PERSON_CLASS:
            continue
        for name, mask in obj.parts:
            if name not in HUMAN_PART_GROUPS:
                raise DatasetFileError(path, f"person part {name!r}", f"a part name from {sorted(HUMAN_PART_GROUPS)}")
            if mask.shape != shape:
                raise DatasetFileError(
                    path,
                    f"part mask {name!r} of size {mask.shape[0]}x{mask.shape[1]}",
                    f"the image size {shape[0]}x{shape[1]}",
                )
            target[mask] = HUMAN_PART_GROUPS[name]
    return target


def object_classes(objects: Sequence[PartObject]) -> list[int]:
    """Index entry of one image: class id per object, -1 where the instance mask is empty."""
    return [obj.class_id if obj.mask.any() else -1 for obj in objects]


def build_part_index(annotation_paths: dict[str, Path]) -> dict[str, list[int]]:
    """Index entries of every id (reads every annotation file once)."""
    log.info("building the PASCAL-Part index over %d annotation files (done once, then cached)", len(annotation_paths))
    return {sample_id: object_classes(read_part_objects(path)) for sample_id, path in annotation_paths.items()}


def read_part_index(path: Path, ids: Sequence[str]) -> dict[str, list[int]] | None:
    """The index stored at `path` if it exists, parses and lists exactly `ids`; None otherwise."""
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("%s: unreadable part index (%s); expected %s; rebuilding it", path, err, INDEX_EXPECTED)
        return None
    valid = isinstance(index, dict) and all(
        isinstance(v, list) and all(isinstance(c, int) for c in v) for v in index.values()
    )
    if not valid or set(index) != set(ids):
        log.warning("%s: part index does not match the split (%s); rebuilding it", path, INDEX_EXPECTED)
        return None
    return {str(k): list(v) for k, v in index.items()}


def write_part_index(path: Path, index: dict[str, list[int]]) -> None:
    """Write atomically (temporary file + rename), so concurrent processes never read half a file.
    Same text layout as the reference code: one `"id": [...]` line per image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = ",\n".join(f"\t{json.dumps(k)}: {json.dumps(v)}" for k, v in index.items())
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("{\n" + body + "\n}\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/demt_exp/pascal_parts, or ~/.cache/demt_exp/pascal_parts."""
    base = os.environ.get(CACHE_ENV)
    return (Path(base) if base else Path.home() / ".cache") / "demt_exp" / "pascal_parts"


def cached_index_path(cache_dir: Path, root: Path, split: str) -> Path:
    """One sub-folder per data folder (name + hash of its absolute path), so roots never collide."""
    resolved = str(root.resolve())
    tag = hashlib.sha1(resolved.encode()).hexdigest()[:12]
    return cache_dir / f"{root.name or 'root'}-{tag}" / f"{split}.txt"


def root_index_path(root: Path, split: str) -> Path:
    return root / "ImageSets" / "Parts" / f"{split}.txt"


def load_part_index(
    root: Path,
    split: str,
    annotation_paths: dict[str, Path],
    cache_dir: Path | None = None,
    write_to_root: bool = False,
) -> dict[str, list[int]]:
    """The split's part index: the data folder's copy if valid, else the cached one if valid, else
    built and cached (and written into the data folder only when `write_to_root`)."""
    ids = list(annotation_paths)
    in_root = root_index_path(root, split)
    index = read_part_index(in_root, ids)
    if index is not None:
        return index
    cached = cached_index_path(cache_dir if cache_dir is not None else default_cache_dir(), root, split)
    index = read_part_index(cached, ids)
    if index is None:
        index = build_part_index(annotation_paths)
        write_part_index(cached, index)
    if write_to_root:
        write_part_index(in_root, index)
    return index
