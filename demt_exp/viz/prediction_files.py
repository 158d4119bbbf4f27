"""Per-image files of a model's predictions, at each image's original size: one file per task
(SEISM's layout for edges) and prediction panels. Shared by `evaluate` and `predict`; under
several processes each writes the images of its own shard, so no file is written twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from demt_exp.data.crop import crop_to_original, image_id
from demt_exp.tasks.registry import get_task
from demt_exp.viz.panels import prediction_panel

PANEL_DIR = "panels"


def save_task_file(task: str, pred: Tensor, stem: Path) -> list[Path]:
    """One image's prediction (C, H, W) for `task` as the task's files (`Task.save`): `<stem>.png`, and for
    depth or a task of one's own with float values also `<stem>.npy`."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    spec = get_task(task)
    return spec.save(spec.predicted_map(pred), stem)


class PredictionWriter:
    """Writes task files for `task_dirs` ({task: folder name}) and panels for the first `panels` images.

    `panels=None` draws a panel for every image. Ground truth enters a panel when the batch has it.
    """

    def __init__(self, out_dir: str | Path, task_dirs: Mapping[str, str], panels: int | None) -> None:
        self.out_dir = Path(out_dir)
        self.task_dirs = dict(task_dirs)
        self.panels = panels

    def write_batch(self, batch: Mapping[str, Any], preds: Mapping[str, Tensor], positions: Sequence[int]) -> None:
        """`positions`: each image's index in the whole data set (decides which get a panel)."""
        meta = batch["meta"]
        for i, position in enumerate(positions):
            name = image_id(meta, i)
            cropped = {t: crop_to_original(p, meta, i) for t, p in preds.items()}
            for task, folder in self.task_dirs.items():
                save_task_file(task, cropped[task], self.out_dir / folder / name)
            if self.panels is None or position < self.panels:
                targets = {t: crop_to_original(_channels(batch[t]), meta, i) for t in preds if t in batch}
                image = crop_to_original(batch["image"], meta, i)
                path = self.out_dir / PANEL_DIR / f"{name}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                prediction_panel(image, cropped, targets).save(path)


def _channels(target: Tensor) -> Tensor:
    """(B, H, W) index maps -> (B, 1, H, W), so every map crops alike."""
    return target.unsqueeze(1) if target.dim() == 3 else target
