"""Mixed precision in training and evaluation: the autocast context and fp16 loss scaling.

bf16 keeps fp32's exponent range and needs no loss scaling. fp16 does: small gradients
underflow to zero in fp16, so the loss is multiplied by a scale S before backward, the
gradients are divided by S before clipping and the step, and a step whose scaled gradients
overflowed is not applied and S is lowered (torch.amp.GradScaler). Such a skip is the scaler
searching for its range, not a diverging run: the loss itself was finite, so it is not a
non-finite loss for `trainer.nonfinite` (which looks at the unscaled per-task losses); a loss
that is itself inf or NaN still is one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from functools import partial
from typing import Any

import torch
from torch import nn

from demt_exp.config.checks import SCALER_ENABLED

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
SCALER_SETTINGS = ("init_scale", "growth_factor", "backoff_factor", "growth_interval")


def autocast_factory(precision: str, device: torch.device) -> Callable[[], Any]:
    """A context-manager factory for the requested precision (fp32 means no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision={precision!r}; expected one of {sorted(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return nullcontext
    if dtype == torch.float16 and device.type != "cuda":
        raise ValueError("trainer.precision=fp16 needs a CUDA device; use bf16 on CPU")
    return partial(torch.autocast, device_type=device.type, dtype=dtype)


def no_scaling() -> torch.amp.GradScaler:
    """A disabled scaler: scale() returns the loss, step() is optimizer.step()."""
    return torch.amp.GradScaler("cpu", enabled=False)


def grad_scaler(
    precision: str, device: torch.device, settings: Mapping[str, Any] | None = None
) -> torch.amp.GradScaler:
    """`trainer.grad_scaler`: enabled auto (on for fp16 only), true or false, and GradScaler's settings."""
    settings = dict(settings or {})
    enabled = settings.pop("enabled", "auto")
    if enabled not in SCALER_ENABLED:
        raise ValueError(f"trainer.grad_scaler.enabled={enabled!r}; expected auto, true or false")
    unknown = sorted(set(settings) - set(SCALER_SETTINGS))
    if unknown:
        raise ValueError(
            f"trainer.grad_scaler has unknown keys {unknown}; expected enabled and {', '.join(SCALER_SETTINGS)}"
        )
    if not (precision == "fp16" if enabled == "auto" else enabled):
        return no_scaling()
    return torch.amp.GradScaler(device.type, **settings)


def optimizer_step(
    scaler: torch.amp.GradScaler,
    optimizer: torch.optim.Optimizer,
    params: Iterable[nn.Parameter],
    grad_clip: float | None,
) -> bool:
    """Unscale, clip, step and update the scale; False when the scaled gradients overflowed
    and the step was not applied (the scaler lowered its scale)."""
    if grad_clip:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if not scaler.is_enabled():
        optimizer.step()
        return True
    before = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    return scaler.get_scale() >= before
