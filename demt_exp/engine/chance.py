"""A constant predictor fitted on training labels: the chance level every metric is compared with."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from demt_exp.data.tasks import IGNORE_INDEX, output_channels
from demt_exp.engine.rng import seeded


def _class_log_frequencies(labels: list[torch.Tensor], num_classes: int) -> torch.Tensor:
    """Log of the (smoothed) class frequencies of index maps, ignoring IGNORE_INDEX."""
    counts = torch.ones(num_classes, dtype=torch.float64)
    for label in labels:
        valid = label[label != IGNORE_INDEX]
        counts += torch.bincount(valid.flatten(), minlength=num_classes)[:num_classes].double()
    return (counts / counts.sum()).log().float()


def _valid_mean(maps: list[torch.Tensor]) -> torch.Tensor:
    """Per-channel mean over pixels where no channel is IGNORE_INDEX."""
    total, count = 0.0, 0
    for m in maps:
        valid = (m != IGNORE_INDEX).all(dim=0)
        total = total + m[:, valid].double().sum(dim=1)
        count += int(valid.sum())
    return (total / max(count, 1)).float()


class ConstantPredictor(nn.Module):
    """Predicts the same value at every pixel: class priors, mean depth, mean normal, edge/saliency rates."""

    def __init__(self, constants: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.tasks = tuple(constants)
        for task, value in constants.items():
            self.register_buffer(f"const_{task}", value.view(-1, 1, 1))

    @classmethod
    def fit(
        cls, dataset: Dataset, tasks: Sequence[str], num_semseg_classes: int, max_samples: int = 64, seed: int = 0
    ) -> ConstantPredictor:
        """Estimate each task's constant from the first `max_samples` training samples, each drawn with its
        augmentation seeded from (seed, index): the same constants in every process and under any world size."""
        channels = output_channels(tasks, num_semseg_classes)
        samples = []
        for index in range(min(len(dataset), max_samples)):  # type: ignore[arg-type]
            with seeded([seed, index]):
                samples.append(dataset[index])
        constants: dict[str, torch.Tensor] = {}
        for task in tasks:
            labels = [s[task] for s in samples]
            if task in ("semseg", "human_parts", "sal"):
                constants[task] = _class_log_frequencies(labels, channels[task])
            elif task == "edge":
                rate = float(_valid_mean(labels).clamp(1e-4, 1 - 1e-4))
                constants[task] = torch.tensor([math.log(rate / (1 - rate))])
            elif task == "normals":
                mean = _valid_mean(labels)
                constants[task] = mean / mean.norm().clamp_min(1e-12)
            else:
                constants[task] = _valid_mean(labels)
        return cls(constants)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = image.shape
        return {t: getattr(self, f"const_{t}").expand(-1, h, w).unsqueeze(0).expand(b, -1, -1, -1) for t in self.tasks}


def wants_chance_reference(setting: Any, dataset: str) -> bool:
    """`trainer.chance_reference`: true, false, or auto (only the synthetic demo: a real run should not pay for it)."""
    if setting == "auto":
        return dataset == "synthetic"
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"trainer.chance_reference={setting!r}; expected auto, true or false")
