"""Prediction panels of a small fixed set of validation images, for the trackers that show images.

Uses `demt_exp.visualize.prediction_panel` (image, each task's prediction and ground truth)
when that module is present, and the stand-in in `minimal_panel` otherwise.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

try:  # the evaluation suite's panels, when installed with it
    from demt_exp.visualize import prediction_panel
except ImportError:  # pragma: no cover - depends on which modules are present
    from demt_exp.tracking.minimal_panel import prediction_panel


@torch.no_grad()
def validation_panels(model: nn.Module, dataset: Dataset, tasks: Sequence[str], device: torch.device,
                      count: int) -> list[tuple[str, Any]]:
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
