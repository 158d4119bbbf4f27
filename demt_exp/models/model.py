"""The multi-task network: backbone -> encoder -> decoder -> per-task heads -> input resolution."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from demt_exp.data.tasks import output_channels
from demt_exp.models.heads import TaskHeads


class MultiTaskModel(nn.Module):
    """image (B, 3, H, W) -> {task: (B, C_t, H, W)} (SPEC 1.1)."""

    def __init__(
        self, backbone: nn.Module, encoder: nn.Module, decoder: nn.Module, task_channels: Mapping[str, int]
    ) -> None:
        super().__init__()
        self.tasks = tuple(task_channels)
        self.backbone = backbone
        self.encoder = encoder
        self.decoder = decoder
        head_in = int(encoder.dim)
        # The official bottleneck width is floor(C_in / 8) of the concatenated backbone maps (SPEC 1.4).
        self.heads = TaskHeads(task_channels, head_in, sum(backbone.out_channels) // 8)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(image)
        return self.heads(self.decoder(self.encoder(features)), size=(image.shape[-2], image.shape[-1]))


def build_model(cfg: Any) -> MultiTaskModel:
    """Instantiate backbone, encoder and decoder from their config groups and wire them together.

    Only the values that follow from other components (backbone channels, task list) are
    passed here; everything else comes from the `_target_` entries of the config.
    """
    tasks = list(cfg.tasks.names)
    channels = output_channels(tasks, int(cfg.dataset.num_semseg_classes))
    backbone = instantiate(cfg.backbone)
    encoder = instantiate(cfg.encoder, in_channels=sum(backbone.out_channels), tasks=tasks)
    decoder = instantiate(cfg.decoder, tasks=tasks)
    return MultiTaskModel(backbone, encoder, decoder, channels)
