"""A constant predictor fitted on training labels: the chance level every metric is compared with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from demt_exp.engine.rng import seeded
from demt_exp.tasks import get_task, output_channels


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
        constants = {task: get_task(task).constant([s[task] for s in samples], channels[task]) for task in tasks}
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
