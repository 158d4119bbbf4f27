"""Depth error statistics beyond RMSE (abs-rel, log10, delta thresholds), pooled over the set.

The papers report RMSE only (SPEC 4); these are the other standard monocular-depth numbers
(Eigen et al.), computed over the same valid pixels as `DepthRMSE` (target not 0 and not 255).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from demt_exp.data.tasks import IGNORE_INDEX
from demt_exp.metrics.dense import Metric, _check_spatial

# Ratios and logarithms need a positive prediction; as in the common depth meters, clamp to this.
MIN_DEPTH = 1e-9
DELTA_BASE = 1.25
DELTA_POWERS = (1, 2, 3)


class DepthRelativeErrors(Metric):
    """abs_rel = mean |d^ - d| / d, log10 = mean |log10 d^ - log10 d|, deltaK = % of pixels with
    max(d^/d, d/d^) < 1.25^K (K = 1, 2, 3), all pooled over every valid pixel of the set.

    Predictions are clamped to >= 1e-9 first. State: [sum abs-rel, sum |log10 ratio|,
    count below 1.25, 1.25^2, 1.25^3, pixel count]; NaN if no valid pixel was seen.
    """

    higher_is_better: ClassVar[dict[str, bool]] = {
        "abs_rel": False,
        "log10": False,
        **{f"delta{k}": True for k in DELTA_POWERS},
    }

    def __init__(self) -> None:
        super().__init__(3 + len(DELTA_POWERS))

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred, target: (B, 1, H, W) depth in metres."""
        _check_spatial(pred, target, "DepthRelativeErrors")
        valid = (target != IGNORE_INDEX) & (target != 0)
        d_hat = pred.detach().double().clamp(min=MIN_DEPTH)[valid]
        d = target.double()[valid]
        ratio = torch.maximum(d_hat / d, d / d_hat)
        below = [(ratio < DELTA_BASE**k).sum().double() for k in DELTA_POWERS]
        sums = [((d_hat - d).abs() / d).sum(), (torch.log10(d_hat) - torch.log10(d)).abs().sum()]
        self._accumulate(torch.stack([*sums, *below, valid.sum().double()]))

    def compute(self) -> dict[str, float]:
        count = float(self.state[-1])
        if count == 0:
            return {name: float("nan") for name in self.higher_is_better}
        values = (self.state[:-1] / count).tolist()
        result = {"abs_rel": values[0], "log10": values[1]}
        result.update({f"delta{k}": 100.0 * v for k, v in zip(DELTA_POWERS, values[2:])})
        return result
