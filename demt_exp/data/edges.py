"""Edge maps from label maps (SPEC 3.3): Laplacian response != 0, then thinning to 1-px lines.

The reference loader calls `cv2.Laplacian(LabelMap, cv2.CV_64F)` and `skimage.morphology.thin`.
Neither library is a dependency here, so both are reproduced with numpy / scipy.ndimage:

* Laplacian: OpenCV's ksize=1 aperture [[0, 1, 0], [1, -4, 1], [0, 1, 0]] in float64 with
  OpenCV's default border (BORDER_REFLECT_101, which is scipy's "mirror" mode).
* Thinning: the Guo-Hall two-subiteration algorithm that `skimage.morphology.thin` implements,
  with the same neighbourhood bit coding, the same lookup-table rules, zero ("constant")
  padding outside the image and the same stop rule (an iteration that deletes nothing). It is
  not Zhang-Suen: that algorithm erodes 2x2 blocks and diagonal lines differently, so it would
  move the edge pixels. With identical tables and update order the output matches skimage's
  `thin(mask)` pixel for pixel; the tests check the example published in skimage's docstring.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

LAPLACIAN_KERNEL = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], np.float64)

# Weight of each neighbour in the 8-bit neighbourhood code (bit 0 east, then counter-clockwise:
# NE, N, NW, W, SW, S, SE), as skimage's thin() correlates the image with it.
NEIGHBOUR_WEIGHTS = np.array([[8, 4, 2], [16, 0, 1], [32, 64, 128]], np.uint8)


def laplacian(labels: np.ndarray) -> np.ndarray:
    """float64 Laplacian of a 2-D map, as cv2.Laplacian(labels, cv2.CV_64F) with ksize=1."""
    values = np.asarray(labels, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"laplacian expects a 2-D label map, got shape {values.shape}")
    return ndimage.correlate(values, LAPLACIAN_KERNEL, mode="mirror")


def _bits(code: int) -> list[bool]:
    """Neighbours of an 8-bit code, index 0 = east, counter-clockwise."""
    return [bool(code >> i & 1) for i in range(8)]


def _crossing_condition(b: list[bool]) -> bool:
    """G1: exactly one 4-connected run of foreground neighbours (so deletion keeps connectivity)."""
    return sum(not b[i] and (b[i + 1] or b[(i + 2) % 8]) for i in (0, 2, 4, 6)) == 1


def _end_point_condition(b: list[bool]) -> bool:
    """G2: 2 <= min(N1, N2) <= 3, which keeps end points and avoids over-erosion."""
    n1 = sum(b[k] or b[k - 1] for k in (1, 3, 5, 7))
    n2 = sum(b[k] or b[(k + 1) % 8] for k in (1, 3, 5, 7))
    return min(n1, n2) in (2, 3)


def _first_subiteration(b: list[bool]) -> bool:
    """G3: delete only from the south-east side in subiteration 1."""
    return not ((b[1] or b[2] or not b[7]) and b[0])


def _second_subiteration(b: list[bool]) -> bool:
    """G3': delete only from the north-west side in subiteration 2."""
    return not ((b[5] or b[6] or not b[3]) and b[4])


def _deletion_tables() -> tuple[np.ndarray, np.ndarray]:
    """The two 256-entry lookup tables: delete the centre pixel for this neighbourhood code?"""
    codes = [_bits(code) for code in range(256)]
    common = np.array([_crossing_condition(b) and _end_point_condition(b) for b in codes])
    first = common & np.array([_first_subiteration(b) for b in codes])
    second = common & np.array([_second_subiteration(b) for b in codes])
    return first, second


DELETE_FIRST, DELETE_SECOND = _deletion_tables()


def thin(mask: np.ndarray, max_iterations: int | None = None) -> np.ndarray:
    """Guo-Hall thinning of a 2-D binary mask to 1-px wide, 8-connected lines (bool)."""
    skeleton = np.asarray(mask, dtype=bool).astype(np.uint8)
    if skeleton.ndim != 2:
        raise ValueError(f"thin expects a 2-D mask, got shape {skeleton.shape}")
    iterations, before, after = 0, -1, int(skeleton.sum())
    while before != after and (max_iterations is None or iterations < max_iterations):
        before = after
        for table in (DELETE_FIRST, DELETE_SECOND):
            codes = ndimage.correlate(skeleton, NEIGHBOUR_WEIGHTS, mode="constant")
            skeleton[table[codes]] = 0
        after = int(skeleton.sum())
        iterations += 1
    return skeleton.astype(bool)


def edges_from_labels(labels: np.ndarray) -> np.ndarray:
    """float32 (H, W) in {0, 1}: thinned boundaries between different labels (SPEC 3.3 edge)."""
    return thin(np.abs(laplacian(labels)) > 0).astype(np.float32)
