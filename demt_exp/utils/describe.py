"""What a component or data set handed over, in words, for contract errors that name it."""

from __future__ import annotations

from typing import Any

import torch


def describe(value: Any) -> str:
    """`a torch.float32 tensor of shape (2, 3)` for a tensor, `a list` for anything else."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
