"""The multi-task network: backbone -> encoder -> decoder -> per-task heads -> input resolution."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from demt_exp.models.contract import check_attributes, check_decoded, check_features
from demt_exp.models.heads import TaskHeads
from demt_exp.tasks import output_channels


class MultiTaskModel(nn.Module):
    """image (B, 3, H, W) -> {task: (B, C_t, H, W)} (SPEC 1.1).

    The heads' bottleneck is `bottleneck_channels` wide, or floor(C_in / decoder.bottleneck_divisor)
    of the concatenated backbone channels as the official head computes it (SPEC 1.4).
    With `freeze_backbone` the backbone gets no gradient and stays in eval mode (its norms and
    stochastic depth behave as at inference), the "DeGMix-Tuning" setting.
    `activation_checkpointing` recomputes the heads in backward (the other parts take the same
    switch from their own configs, all set by `trainer.activation_checkpointing`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        encoder: nn.Module,
        decoder: nn.Module,
        task_channels: Mapping[str, int],
        bottleneck_channels: int | None = None,
        freeze_backbone: bool = False,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.tasks = tuple(task_channels)
        self.backbone = backbone
        self.encoder = encoder
        self.decoder = decoder
        channels = check_attributes(backbone, encoder)
        width = bottleneck_channels or sum(channels) // int(getattr(decoder, "bottleneck_divisor", 8))
        self.heads = TaskHeads(task_channels, int(encoder.dim), width, activation_checkpointing)
        self.backbone_frozen = freeze_backbone
        self.contract_checked = False  # the components' outputs are checked on the first forward
        if freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> MultiTaskModel:
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.contract_checked and not torch.compiler.is_compiling():
            return self._checked_forward(image)
        features = self.backbone(image)
        return self.heads(self.decoder(self.encoder(features)), size=(image.shape[-2], image.shape[-1]))

    def _checked_forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The forward, holding each component to its contract (models/contract.py) once."""
        features = self.backbone(image)
        check_features(self.backbone, features, image)
        decoded = self.decoder(self.encoder(features))
        check_decoded(self.decoder, decoded, self.tasks, int(self.encoder.dim), image.shape[0])
        self.contract_checked = True
        return self.heads(decoded, size=(image.shape[-2], image.shape[-1]))


def build_model(cfg: Any) -> MultiTaskModel:
    """Instantiate backbone, encoder and decoder from their config groups and wire them together.

    Only the values that follow from other components (backbone channels, task list) are
    passed here; everything else comes from the `_target_` entries of the config. Weights are
    not loaded here: `demt_exp.models.load_weights.apply_init(model, cfg)` loads `model.init`.
    """
    tasks = list(cfg.tasks.names)
    channels = output_channels(tasks, int(cfg.dataset.num_semseg_classes))
    backbone = instantiate(cfg.backbone)
    encoder = instantiate(cfg.encoder, in_channels=list(backbone.out_channels), tasks=tasks)
    decoder = instantiate(cfg.decoder, tasks=tasks)
    model_cfg = cfg.get("model", {}) or {}
    model = MultiTaskModel(
        backbone,
        encoder,
        decoder,
        channels,
        bottleneck_channels=model_cfg.get("bottleneck_channels"),
        freeze_backbone=bool(model_cfg.get("freeze_backbone", False)),
        activation_checkpointing=bool(OmegaConf.select(cfg, "trainer.activation_checkpointing", default=False)),
    )
    return model
