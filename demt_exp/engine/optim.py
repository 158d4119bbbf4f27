"""Optimiser with backbone/head parameter groups and the per-iteration poly schedule (SPEC 5.1)."""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn


def parameter_groups(model: nn.Module, lr: float, head_lr_mult: float) -> list[dict[str, Any]]:
    """Two groups as the official code: names containing 'backbone' and everything else.

    Parameters that do not require gradients (a frozen backbone) are left out entirely.
    Weight decay applies to all parameters, norms and biases included, as in the official recipe.
    """
    backbone, head = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (backbone if "backbone" in name else head).append(param)
    groups = [
        {"params": backbone, "lr": lr, "name": "backbone"},
        {"params": head, "lr": lr * head_lr_mult, "name": "head"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(optimizer_cfg: DictConfig, model: nn.Module, head_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    """Instantiate the `optimizer` config group (a `_partial_` torch.optim class) on the parameter groups."""
    factory = instantiate(optimizer_cfg)
    return factory(parameter_groups(model, float(optimizer_cfg.lr), head_lr_mult))


def poly_factor(step: int, total_steps: int, power: float) -> float:
    """lr_i / base_lr = (1 - i / total)^power, reaching 0 at i = total, no warm-up.

    total_steps = 0 (evaluate only) keeps the base rate, which is never used.
    """
    if total_steps <= 0:
        return 1.0
    return max(0.0, 1.0 - step / total_steps) ** power


def build_poly_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9
) -> torch.optim.lr_scheduler.LambdaLR:
    """Poly decay stepped once per iteration."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: poly_factor(step, total_steps, power))
