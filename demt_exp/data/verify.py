"""Check a data set folder before training: every split entry, every file, decoded and compared.

Runs the loaders' own decoders, so a folder that passes here loads in training, and lists every
problem by path instead of stopping at the first. NYUD-v2 gets a file-by-file check of both
layouts; PASCAL-Context and Cityscapes are checked by decoding every sample through their loader.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from demt_exp.data import nyud
from demt_exp.data.dense_dataset import SPLITS, DatasetFileError


@dataclass
class SplitCount:
    entries: int = 0
    with_problems: int = 0


@dataclass
class VerifyReport:
    root: Path
    items: tuple[str, ...]
    label: str = "NYUD-v2"
    layout: str | None = None
    splits: dict[str, SplitCount] = field(default_factory=dict)
    sizes: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_entry(
    root: Path, layout: str, sample_id: str, items: Sequence[str]
) -> tuple[list[str], tuple[int, int] | None]:
    """Problems of one id (one line per file) and its image size when the image decodes."""
    problems: list[str] = []
    shapes: dict[str, tuple[int, int]] = {}
    for item in items:
        try:
            shapes[item] = nyud.read_item(root, layout, item, sample_id).shape[:2]
        except nyud.DatasetFileError as err:
            problems.append(str(err))
    size = shapes.get("image")
    if size is not None:
        image_path = nyud.item_path(root, layout, "image", sample_id)
        for item, shape in shapes.items():
            if shape != size:
                path = nyud.item_path(root, layout, item, sample_id)
                problems.append(
                    f"{path}: size {shape[0]}x{shape[1]}; expected the size of its image "
                    f"{image_path} ({size[0]}x{size[1]})"
                )
    return problems, size


def _split_ids(report: VerifyReport) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {}
    for split in SPLITS:
        try:
            ids[split] = nyud.read_split(report.root, split)
        except (FileNotFoundError, nyud.DatasetFileError) as err:
            report.problems.append(str(err))
            continue
        repeated = sorted(i for i, n in Counter(ids[split]).items() if n > 1)
        if repeated:
            report.problems.append(
                f"{nyud.split_file(report.root, split)}: ids listed more than once "
                f"({', '.join(repeated[:5])}); expected each id once"
            )
    if len(ids) == 2:
        shared = sorted(set(ids["train"]) & set(ids["val"]))
        if shared:
            report.problems.append(
                f"{nyud.split_file(report.root, 'val')}: {len(shared)} ids also in train.txt "
                f"(e.g. {shared[0]}); expected disjoint splits"
            )
    return ids


def verify_nyud(root: str | Path, tasks: Sequence[str] = nyud.NYUD_TASKS) -> VerifyReport:
    """Every file of every entry of both splits: present, decodable, in range, same H x W."""
    unknown = [t for t in tasks if t not in nyud.NYUD_TASKS]
    items = tuple(dict.fromkeys(("image", "semseg", *(t for t in tasks if t in nyud.NYUD_TASKS))))
    report = VerifyReport(Path(root), items)
    if unknown:
        report.problems.append(
            f"tasks.names: {unknown} do not exist in NYUD-v2; expected names from {list(nyud.NYUD_TASKS)}"
        )
    try:
        nyud.check_root(report.root)
    except FileNotFoundError as err:
        report.problems.append(str(err))
        return report
    ids = _split_ids(report)
    all_ids = [i for split_ids in ids.values() for i in split_ids]
    if not all_ids:
        return report
    try:
        report.layout = nyud.detect_layout(report.root, all_ids)
    except nyud.DatasetFileError as err:
        report.problems.append(str(err))
        return report
    for split, split_ids in ids.items():
        count = report.splits.setdefault(split, SplitCount())
        for sample_id in split_ids:
            problems, size = check_entry(report.root, report.layout, sample_id, items)
            count.entries += 1
            count.with_problems += bool(problems)
            report.problems.extend(problems)
            if size is not None:
                report.sizes[size] += 1
    return report


def format_report(report: VerifyReport) -> str:
    """Human-readable summary: layout, counts per split, image sizes, then every problem."""
    exts = nyud.LAYOUTS.get(report.layout or "", {})
    layout = (
        f"{report.layout} (images .{exts['image']}, normals .{exts['normals']}, edge .{exts['edge']})"
        if report.layout
        else "not detected"
    )
    lines = [f"{report.label} at {report.root}"]
    if report.label == "NYUD-v2":
        lines.append(f"  layout: {layout}")
    lines.append(f"  checked: {', '.join(report.items)}")
    for split, count in report.splits.items():
        lines.append(
            f"  {split}: {count.entries} entries, {count.entries - count.with_problems} clean, "
            f"{count.with_problems} with problems"
        )
    if report.sizes:
        sizes = ", ".join(f"{h}x{w} ({n})" for (h, w), n in report.sizes.most_common())
        lines.append(f"  image sizes: {sizes}")
    if report.problems:
        lines.append(f"problems ({len(report.problems)}):")
        lines.extend(f"  {p}" for p in report.problems)
    else:
        lines.append("no problems found")
    return "\n".join(lines)


LABELS = {"pascal_context": "PASCAL-Context", "cityscapes": "Cityscapes"}


def verify_by_loading(cfg: DictConfig) -> VerifyReport:
    """Decode every sample of both splits with the configured loader (no augmentation)."""
    tasks = [str(t) for t in cfg.tasks.names]
    name = str(cfg.dataset.name)
    report = VerifyReport(
        Path(str(cfg.dataset.root)), tuple(dict.fromkeys(("image", "semseg", *tasks))), label=LABELS.get(name, name)
    )
    for split in SPLITS:
        try:
            dataset = instantiate(cfg.dataset[split], transform=None)
        except (FileNotFoundError, DatasetFileError, ValueError) as err:
            report.problems.append(str(err))
            continue
        count = report.splits.setdefault(split, SplitCount())
        for index in range(len(dataset)):
            count.entries += 1
            try:
                report.sizes[tuple(dataset.load(index)["image"].shape[:2])] += 1
            except DatasetFileError as err:
                count.with_problems += 1
                report.problems.append(str(err))
    return report


def verify_config(cfg: DictConfig) -> VerifyReport:
    """Verify the data set a composed config points at."""
    name = str(cfg.dataset.get("name"))
    if name == "nyud":
        return verify_nyud(str(cfg.dataset.root), [str(t) for t in cfg.tasks.names])
    if name in LABELS:
        return verify_by_loading(cfg)
    raise ValueError(
        f"verify checks on-disk data sets; dataset={name} has no files "
        f"(expected dataset=nyud, pascal_context or cityscapes)"
    )
