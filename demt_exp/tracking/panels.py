"""Prediction panels of a small fixed set of validation images, for the trackers that show images.

Each panel is `demt_exp.viz.panels.prediction_panel` (image, each task's prediction and ground
truth), the same picture `python -m demt_exp.viz.panels` writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from demt_exp.viz.panels import prediction_panel


@torch.no_grad()
def validation_panels(
    model: nn.Module, dataset: Dataset, tasks: Sequence[str], device: torch.device, count: int
) -> list[tuple[str, Any]]:
    """[(sample id, panel)] for the first `count` validation samples: the same images at every evaluation."""
    was_training = model.training
    model.eval()
    panels = []
    for index in range(min(count, len(dataset))):
        sample = dataset[index]
        preds = model(sample["image"].unsqueeze(0).to(device))
        image = sample["image"]
        pred = {t: preds[t][0].float().cpu() for t in tasks}
        target = {t: sample[t] for t in tasks if t in sample}
        caption = str(sample.get("meta", {}).get("id", index))
        panels.append((caption, prediction_panel(image, pred, target)))
    model.train(was_training)
    return panels
