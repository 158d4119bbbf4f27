"""The two SEISM boundary protocols of the literature, as one frozen description each.

A protocol says how a predicted edge map becomes one binary map per threshold; everything
after that (thinning, matching, pooling) is shared. The two in use are not comparable, so
every result records `protocol.name`:

* `atrc` (MTI-Net's `read_one_png.m`, used by ATRC and therefore DeMT/DeGMix): the 8-bit PNG
  value v is on at threshold t when `double(v) / 255 >= t`; thresholds 0.01..0.99 (99), as
  written with '%.2f' into SEISM's parameter file; no NMS.
* `invpt` (SEISM's current `read_one_cont_png.m`, used by InvPT, TaskPrompter, MLoRE,
  TaskDiffusion): the PNG is read as single precision v / 255, thinned by structured-edge NMS
  (`edgesNms`, radius 1, border suppression 5, multiplier 1.01, orientation from a radius-4
  triangle blur), then on when `value >= max(eps, t)` in single precision; the 101 thresholds
  of SEISM's HED parameter file (0.001, 0.01..0.99, 0.999). The commented-out line in that
  file shows an older `value > t`; `comparison="gt"` expresses it.

Tolerance maxDist is a fraction of the image diagonal: 0.011 for NYUD-v2, 0.0075 for
PASCAL-Context (SEISM `eval_method.m`). A cheaper setting for evaluation during training keeps
every other rule and says so in its name (`atrc-fast-9thr`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "ATRC_THRESHOLDS",
    "INVPT_THRESHOLDS",
    "MAX_DIST",
    "BoundaryProtocol",
    "atrc_protocol",
    "boundary_protocol",
    "invpt_protocol",
]

# SEISM maxDist per data set (fraction of the image diagonal).
MAX_DIST: dict[str, float] = {"nyud": 0.011, "pascal_context": 0.0075}

# Thresholds as SEISM reads them: str2double of the '%.2f' / parameter-file strings.
ATRC_THRESHOLDS: tuple[float, ...] = tuple(float(f"{k / 100:.2f}") for k in range(1, 100))
INVPT_THRESHOLDS: tuple[float, ...] = (0.001, *ATRC_THRESHOLDS, 0.999)

# MATLAB eps: `max(eps, t)` guards a zero threshold in read_one_cont_png.
MATLAB_EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class BoundaryProtocol:
    """How edge maps are binarised and matched; `name` goes into every result.

    comparison: "ge" turns a pixel on when value >= t, "gt" when value > t.
    nms: apply structured-edge NMS to v / 255 (float32) before thresholding.
    max_dist: matching tolerance as a fraction of the image diagonal.
    """

    name: str
    thresholds: tuple[float, ...]
    comparison: Literal["ge", "gt"]
    nms: bool
    max_dist: float

    def __post_init__(self) -> None:
        if self.comparison not in ("ge", "gt"):
            raise ValueError(f"protocol {self.name!r}: comparison must be 'ge' or 'gt', got {self.comparison!r}")
        if not self.thresholds:
            raise ValueError(f"protocol {self.name!r}: needs at least one threshold")
        if any(not 0.0 <= t <= 1.0 for t in self.thresholds) or list(self.thresholds) != sorted(self.thresholds):
            raise ValueError(f"protocol {self.name!r}: thresholds must be increasing values in [0, 1]")
        if not self.max_dist > 0:
            raise ValueError(f"protocol {self.name!r}: max_dist must be positive, got {self.max_dist}")

    @property
    def num_thresholds(self) -> int:
        return len(self.thresholds)

    def fast(self, num_thresholds: int) -> BoundaryProtocol:
        """Same rules on the thresholds nearest to i / (N + 1), i = 1..N, named e.g. 'atrc-fast-9thr'."""
        if not 1 <= num_thresholds <= self.num_thresholds:
            raise ValueError(f"fast protocol needs 1..{self.num_thresholds} thresholds, got {num_thresholds}")
        available = np.asarray(self.thresholds)
        targets = np.arange(1, num_thresholds + 1) / (num_thresholds + 1)
        picks = sorted({int(np.abs(available - t).argmin()) for t in targets})
        if len(picks) != num_thresholds:
            raise ValueError(f"protocol {self.name!r} has no {num_thresholds} distinct evenly spread thresholds")
        base = self.name.split("-fast-")[0]
        return dataclasses.replace(
            self, name=f"{base}-fast-{num_thresholds}thr", thresholds=tuple(self.thresholds[i] for i in picks)
        )

    def pixel_on(self, values: np.ndarray, threshold: float) -> np.ndarray:
        """Binary map of one threshold (values as the protocol compares them)."""
        if self.nms:
            limit = np.float32(max(MATLAB_EPS, threshold))
            values = values.astype(np.float32, copy=False)
        else:
            limit = threshold
        return values >= limit if self.comparison == "ge" else values > limit


def _max_dist(dataset: str) -> float:
    if dataset not in MAX_DIST:
        raise ValueError(f"unknown data set {dataset!r} for the boundary tolerance; known: {sorted(MAX_DIST)}")
    return MAX_DIST[dataset]


def atrc_protocol(dataset: str = "nyud") -> BoundaryProtocol:
    """ATRC / MTI-Net / DeMT: 99 thresholds, v/255 >= t, no NMS."""
    return BoundaryProtocol("atrc", ATRC_THRESHOLDS, "ge", False, _max_dist(dataset))


def invpt_protocol(dataset: str = "pascal_context") -> BoundaryProtocol:
    """InvPT / TaskPrompter / MLoRE: edge NMS, then value >= max(eps, t) on 101 thresholds."""
    return BoundaryProtocol("invpt", INVPT_THRESHOLDS, "ge", True, _max_dist(dataset))


def boundary_protocol(name: str, dataset: str) -> BoundaryProtocol:
    """Protocol by name: 'atrc', 'invpt', or a fast variant such as 'atrc-fast-9thr'."""
    base, _, fast = name.partition("-fast-")
    presets = {"atrc": atrc_protocol, "invpt": invpt_protocol}
    if base not in presets:
        raise ValueError(f"unknown boundary protocol {name!r}; known: atrc, invpt (optionally '-fast-<N>thr')")
    protocol = presets[base](dataset)
    if not fast:
        return protocol
    if not (fast.endswith("thr") and fast[:-3].isdigit()):
        raise ValueError(f"boundary protocol {name!r}: expected '<name>-fast-<N>thr', e.g. 'atrc-fast-9thr'")
    return protocol.fast(int(fast[:-3]))
