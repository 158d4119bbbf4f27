"""Distribution of the normals' angular error: mean, median, RMSE and % within 11.25 / 22.5 / 30 degrees.

Not in the official code (SPEC 4) but reported by most of the field. Everything is a sum, so
the values pool exactly across processes: the median comes from a histogram of the angles
with 0.001-degree bins (180,000 bins, summed across processes like every other state), so it
is exact up to half a bin, +-0.0005 degrees, whatever the split over processes. Gathering the
raw angles instead would move ~150M values for NYUD val.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from demt_exp.metrics.dense import Metric, angular_error_degrees

WITHIN_DEGREES = (11.25, 22.5, 30.0)
BIN_DEGREES = 1e-3
NUM_BINS = int(round(180.0 / BIN_DEGREES))
_HEAD = 3 + len(WITHIN_DEGREES)  # count, sum, sum of squares, counts within each threshold


def within_key(degrees: float) -> str:
    """Stable metric name of a threshold: 11.25 -> "within_11_25", 30 -> "within_30"."""
    return "within_" + f"{degrees:g}".replace(".", "_")


def median_from_histogram(hist: Tensor, count: int, bin_width: float) -> float:
    """np.median of the binned values, each value taken at its bin centre."""
    cumulative = hist.cumsum(0)
    ranks = [(count + 1) // 2, count // 2 + 1]  # 1-based ranks of the middle value(s)
    centres = [(int(torch.searchsorted(cumulative, float(r))) + 0.5) * bin_width for r in ranks]
    return centres[0] if count % 2 else 0.5 * (centres[0] + centres[1])


class NormalsAngleDistribution(Metric):
    """mean_angle, median_angle, rmse_angle (degrees) and within_11_25 / within_22_5 / within_30 (% of pixels < t).

    Valid pixels and mean as `NormalsMeanAngle` (SPEC 4); the task's registry entry uses this
    class alone so the per-pixel angles are computed once. State: [count, sum and sum of
    squares of the angles, counts below each threshold, 180,000-bin angle histogram]. NaN if
    no valid pixel was seen.
    """

    higher_is_better: ClassVar[dict[str, bool]] = {
        "mean_angle": False,
        "median_angle": False,
        "rmse_angle": False,
        **{within_key(t): True for t in WITHIN_DEGREES},
    }

    def __init__(self) -> None:
        super().__init__(_HEAD + NUM_BINS)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred: (B, 3, H, W) raw normals; target: (B, 3, H, W) unit vectors, 255 = invalid."""
        angle, valid = angular_error_degrees(pred, target)
        selected = angle[valid].double()
        bins = (selected / BIN_DEGREES).floor().long().clamp_(0, NUM_BINS - 1)
        count = selected.numel() * torch.ones((), dtype=torch.float64, device=selected.device)
        head = [count, selected.sum(), selected.square().sum()]
        head += [(selected < t).sum().double() for t in WITHIN_DEGREES]
        self._accumulate(torch.cat([torch.stack(head), torch.bincount(bins, minlength=NUM_BINS).double()]))

    def compute(self) -> dict[str, float]:
        count = int(self.state[0])
        if count == 0:
            return {name: math.nan for name in self.higher_is_better}
        result = {
            "mean_angle": float(self.state[1]) / count,
            "median_angle": median_from_histogram(self.state[_HEAD:], count, BIN_DEGREES),
            "rmse_angle": math.sqrt(float(self.state[2]) / count),
        }
        result.update({within_key(t): 100.0 * float(self.state[3 + i]) / count for i, t in enumerate(WITHIN_DEGREES)})
        return result
