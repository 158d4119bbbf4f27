"""`trainer.compile=true`: torch.compile around the model, the one place the trainer calls.

The model code has no data-dependent Python control flow in its forward (the fast paths batch
all tasks with fixed shapes), so the head compiles without graph breaks (tests/unit/engine/test_compile.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def maybe_compile(model: nn.Module, cfg: Any) -> nn.Module:
    """torch.compile(model) when `trainer.compile` is true, the model itself otherwise.

    The compiled wrapper shares parameters and state dict (with an `_orig_mod.` prefix in its
    own state_dict), so checkpoints should keep being written from the original module.
    """
    trainer = cfg.get("trainer", {}) or {}
    if not bool(trainer.get("compile", False)):
        return model
    return torch.compile(model)
