"""PASCAL-Context multi-task data set (SPEC 3.3): semseg (21), human_parts (7), sal, normals, edge.

Layout of <root> (the DeMT / DeGMix / InvPT release, PASCALContext.tar.gz):
  JPEGImages/<id>.jpg
  semseg/VOC12/<id>.png, else semseg/pascal-context/<id>.png   0 background, 1..20 VOC, 255 ignore
  human_parts/<id>.mat                                        PASCAL-Part `anno` (pascal_parts.py)
  sal_distill/<id>.png                                        saliency, v / 255 > 0.5
  normals_distill/<id>.png                                    normals, n = 2 v / 255 - 1
  pascal-context/trainval/<id>.mat                            `LabelMap`, 459 Context classes
  ImageSets/Context/{train,val}.txt                           4,998 / 5,105 ids
  json/context_classes.json, json/nyu_classes.json            class-name tables (normals only)

Edges are computed from LabelMap (edges.py). Normals are kept only on pixels whose Context class
also names an NYU class (plus "tvmonitor"), since the distilled normals come from an NYU-trained
network; elsewhere they are zero, which AddIgnoreRegions turns into ignore. Every file is checked
as it is decoded, so a broken folder fails with the file's path and what was expected.
"""

from __future__ import annotations

import json
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
from demt_exp.data.edges import edges_from_labels
from demt_exp.data.nyud import decode_normals
from demt_exp.data.pascal_parts import (
    PERSON_CLASS,
    human_part_map,
    load_mat,
    load_part_index,
    read_part_objects,
)
from demt_exp.data.tasks import IGNORE_INDEX
from demt_exp.data.transforms import BOUNDARY_LABELS, Sample, parse_size

PASCAL_TASKS: tuple[str, ...] = ("semseg", "human_parts", "sal", "normals", "edge")
NUM_CLASSES = 21
IMAGE_SIZE = (512, 512)
ROOT_NAME = "PASCALContext"
# The InvPT / DeGMix data release ships the class-name tables in <root>/json; the DeMT / ATRC code
# keeps identical copies in src/data/db_info, so a copy under <root>/db_info is accepted as well.
CLASS_TABLE_DIRS = ("json", "db_info")
CONTEXT_TABLE = "context_classes.json"
NYU_TABLE = "nyu_classes.json"
EXTRA_NORMALS_CLASSES = ("tvmonitor",)  # added by hand in the reference loader

EXPECTED = {
    "image": "an RGB JPEG image",
    "semseg": "a single-channel PNG of labels 0..20 (0 = background) or 255 (ignore)",
    "sal": "a single-channel PNG of saliency values 0..255",
    "labels": "a .mat file with the 2-D integer array 'LabelMap' (459 PASCAL-Context classes)",
    CONTEXT_TABLE: "a JSON object mapping the 459 PASCAL-Context class names to their LabelMap ids",
    NYU_TABLE: "a JSON list of the NYU class names",
}


def decode_image(path: Path) -> np.ndarray:
    """RGB float32 (H, W, 3) in [0, 255]; grey or CMYK JPEGs are converted, as the reference does."""
    image = open_image(path, EXPECTED["image"])
    if image.mode not in ("RGB", "L", "CMYK"):
        raise DatasetFileError(path, f"image mode {image.mode}", EXPECTED["image"])
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def _single_channel(path: Path, expected: str) -> np.ndarray:
    image = open_image(path, expected)
    if image.mode not in ("L", "P"):
        raise DatasetFileError(path, f"image mode {image.mode}", expected)
    return np.asarray(image)


def decode_semseg(path: Path) -> np.ndarray:
    """int64 (H, W): 0..20, 255 = ignore."""
    labels = _single_channel(path, EXPECTED["semseg"]).astype(np.int64)
    bad = np.unique(labels[(labels >= NUM_CLASSES) & (labels != IGNORE_INDEX)])
    if bad.size:
        raise DatasetFileError(path, f"label values {bad[:6].tolist()}", EXPECTED["semseg"])
    return labels


def decode_sal(path: Path) -> np.ndarray:
    """int64 (H, W) in {0, 1}: v / 255 > 0.5 (float32 arithmetic, as the reference)."""
    raw = _single_channel(path, EXPECTED["sal"])
    return (raw.astype(np.float32) / np.float32(255.0) > 0.5).astype(np.int64)


def decode_context_labels(path: Path) -> np.ndarray:
    """int64 (H, W) LabelMap of pascal-context/trainval/<id>.mat."""
    contents = load_mat(path, EXPECTED["labels"])
    if "LabelMap" not in contents:
        raise DatasetFileError(path, "no variable 'LabelMap'", EXPECTED["labels"])
    labels = np.asarray(contents["LabelMap"])
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.number):
        raise DatasetFileError(path, f"LabelMap of shape {labels.shape} and dtype {labels.dtype}", EXPECTED["labels"])
    return labels.astype(np.int64)


def masked_normals(normals: np.ndarray, labels: np.ndarray, valid_classes: np.ndarray) -> np.ndarray:
    """Normals where the Context label is NYU-compatible, zero vectors elsewhere."""
    keep = np.isin(labels, valid_classes)
    return np.where(keep[..., None], normals, np.float32(0.0)).astype(np.float32)


def class_table_dirs(root: Path, tables_dir: Path | None = None) -> list[Path]:
    """Where the class-name tables are looked for: `tables_dir` if given, else <root>/json, <root>/db_info."""
    return [tables_dir] if tables_dir is not None else [root / folder for folder in CLASS_TABLE_DIRS]


def find_class_table(folders: Sequence[Path], name: str) -> Path:
    """The first folder's <name> that exists; an error naming every candidate when none does."""
    candidates = [folder / name for folder in folders]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"PASCAL-Context class-name table {name} not found: looked for "
        f"{' and '.join(str(p) for p in candidates)}; expected {EXPECTED[name]} "
        f"(it ships in the data release's json/ folder and in the DeMT code's src/data/db_info/)"
    )


def _read_json(path: Path, expected: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetFileError(path, f"unreadable JSON ({err})", expected) from None


def normals_valid_classes(folders: Sequence[Path]) -> np.ndarray:
    """Context class ids whose name is also an NYU class name (except "unknown"), plus tvmonitor."""
    context_path, nyu_path = find_class_table(folders, CONTEXT_TABLE), find_class_table(folders, NYU_TABLE)
    context = _read_json(context_path, EXPECTED[CONTEXT_TABLE])
    nyu = _read_json(nyu_path, EXPECTED[NYU_TABLE])
    if not isinstance(context, dict) or not all(isinstance(v, int) for v in context.values()):
        raise DatasetFileError(
            context_path, f"a {type(context).__name__} that is not name -> integer id", EXPECTED[CONTEXT_TABLE]
        )
    if not isinstance(nyu, list) or not all(isinstance(v, str) for v in nyu):
        raise DatasetFileError(nyu_path, f"a {type(nyu).__name__} that is not a list of names", EXPECTED[NYU_TABLE])
    names = [n for n in nyu if n in context and n != "unknown"]
    for extra in EXTRA_NORMALS_CLASSES:
        if extra not in context:
            raise DatasetFileError(context_path, f"no class named {extra!r}", EXPECTED[CONTEXT_TABLE])
        names.append(extra)
    return np.array(sorted({context[n] for n in names}), np.int64)


def default_root() -> Path:
    """$DEMT_DATA/PASCALContext."""
    return data_root(ROOT_NAME, "PASCAL-Context")


def check_root(root: Path) -> Path:
    return check_data_root(
        root,
        "PASCAL-Context",
        "JPEGImages/, semseg/, human_parts/, sal_distill/, "
        "normals_distill/, pascal-context/trainval/ and ImageSets/Context/",
    )


def split_file(root: Path, split: str) -> Path:
    return root / "ImageSets" / "Context" / f"{split}.txt"


def read_split(root: Path, split: str) -> list[str]:
    """Image ids listed in ImageSets/Context/<split>.txt, one per line."""
    return read_id_list(split_file(root, check_split(split)), "PASCAL-Context")


def image_path(root: Path, sample_id: str) -> Path:
    return root / "JPEGImages" / f"{sample_id}.jpg"


def semseg_path(root: Path, sample_id: str) -> Path:
    """semseg/VOC12/<id>.png when present (the finer VOC masks), else semseg/pascal-context/<id>.png;
    an error naming both when neither exists."""
    voc = root / "semseg" / "VOC12" / f"{sample_id}.png"
    context = root / "semseg" / "pascal-context" / f"{sample_id}.png"
    if voc.is_file():
        return voc
    if not context.is_file():
        raise DatasetFileError(context, f"missing, and so is {voc}", EXPECTED["semseg"])
    return context


def parts_path(root: Path, sample_id: str) -> Path:
    return root / "human_parts" / f"{sample_id}.mat"


def sal_path(root: Path, sample_id: str) -> Path:
    return root / "sal_distill" / f"{sample_id}.png"


def normals_path(root: Path, sample_id: str) -> Path:
    return root / "normals_distill" / f"{sample_id}.png"


def labels_path(root: Path, sample_id: str) -> Path:
    return root / "pascal-context" / "trainval" / f"{sample_id}.mat"


class PascalContext(DenseDataset):
    """PASCAL-Context split as batches of tasks.py.

    transform: "auto" (train: the augmenting training pipeline; val: normalise and pad centred to
    image_size), None (the decoded HWC arrays), or a callable applied to the decoded sample.
    cache_dir: where the part index is cached (None: $XDG_CACHE_HOME or ~/.cache /demt_exp/
    pascal_parts); the data folder is written to only with write_part_index_to_root=True.
    class_tables_dir: folder holding the class-name tables when they are not in <root>/json or
    <root>/db_info. As in the reference loader, a split with human_parts as the only task keeps
    just the images that contain a person.
    boundary_labels: also carry the 459-class LabelMap as "boundary_labels" (int64, padded like the
    labels): SEISM's PASCALContext reader scores edges against its region boundaries, not against
    the edge training target. `python -m demt_exp.evaluate` turns it on; training batches never carry it.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        tasks: Sequence[str] = PASCAL_TASKS,
        image_size: Sequence[int] = IMAGE_SIZE,
        cache_dir: str | Path | None = None,
        write_part_index_to_root: bool = False,
        class_tables_dir: str | Path | None = None,
        transform: str | Callable[[Sample], Any] | None = "auto",
        boundary_labels: bool = False,
        decoded_cache: str | Path | None = None,
    ) -> None:
        self.root = check_root(Path(root) if root is not None else default_root())
        self.split = split
        self.tasks = validate_tasks(tasks, PASCAL_TASKS, "PASCAL-Context")
        self.image_size = parse_size(image_size, "image_size")
        self.ids = read_split(self.root, split)
        self.has_person: dict[str, bool] = {}
        if "human_parts" in self.tasks:
            index = load_part_index(
                self.root,
                split,
                {i: parts_path(self.root, i) for i in self.ids},
                None if cache_dir is None else Path(cache_dir).expanduser(),
                bool(write_part_index_to_root),
            )
            self.has_person = {i: PERSON_CLASS in index[i] for i in self.ids}
            if self.tasks == ("human_parts",):
                self.ids = [i for i in self.ids if self.has_person[i]]
        self.valid_normals_classes = np.zeros(0, np.int64)
        if "normals" in self.tasks:
            tables = None if class_tables_dir is None else Path(class_tables_dir).expanduser()
            self.valid_normals_classes = normals_valid_classes(class_table_dirs(self.root, tables))
        self.extra_maps = (BOUNDARY_LABELS,) if boundary_labels else ()
        self.transform = pick_transform(transform, split, self.image_size, (*self.tasks, *self.extra_maps))
        self.keep_decoded(decoded_cache, "pascal_context", self.root, split)

    def __len__(self) -> int:
        return len(self.ids)

    def _human_parts(self, sample_id: str, size: tuple[int, int]) -> np.ndarray:
        """Group map of the persons with parts; all 0 for images without persons (no file read)."""
        if not self.has_person[sample_id]:
            return np.zeros(size, np.int64)
        path = parts_path(self.root, sample_id)
        return human_part_map(read_part_objects(path), size, path)

    def load(self, index: int) -> Sample:
        """Decoded arrays of one sample: image, semseg (always, the crop needs it), the tasks."""
        sample_id = self.ids[index]
        image_file = image_path(self.root, sample_id)
        image = decode_image(image_file)
        size = (int(image.shape[0]), int(image.shape[1]))
        sample: Sample = {"image": image}
        semseg_file = semseg_path(self.root, sample_id)
        sample["semseg"] = check_same_size(decode_semseg(semseg_file), semseg_file, image_file, size)
        if "human_parts" in self.tasks:
            sample["human_parts"] = self._human_parts(sample_id, size)
        if "sal" in self.tasks:
            sal_file = sal_path(self.root, sample_id)
            sample["sal"] = check_same_size(decode_sal(sal_file), sal_file, image_file, size)
        if "normals" in self.tasks or "edge" in self.tasks or self.extra_maps:
            labels_file = labels_path(self.root, sample_id)
            labels = check_same_size(decode_context_labels(labels_file), labels_file, image_file, size)
            if "normals" in self.tasks:
                normals_file = normals_path(self.root, sample_id)
                normals = check_same_size(decode_normals(normals_file, "png"), normals_file, image_file, size)
                sample["normals"] = masked_normals(normals, labels, self.valid_normals_classes)
            if "edge" in self.tasks:
                sample["edge"] = edges_from_labels(labels)[..., None]
            if self.extra_maps:
                sample[BOUNDARY_LABELS] = labels
        sample["meta"] = {"id": sample_id, "size": size}
        return sample

    def __repr__(self) -> str:
        return (
            f"PascalContext(root={str(self.root)!r}, split={self.split!r}, tasks={list(self.tasks)}, "
            f"image_size={self.image_size}, {len(self)} images)"
        )
