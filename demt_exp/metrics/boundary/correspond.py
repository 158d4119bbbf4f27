"""One-to-one correspondence of predicted and ground-truth boundary pixels (BSDS `correspondPixels`).

What the BSDS matcher (`correspondPixels` -> `matchEdgeMaps`, used by SEISM through
`edgesEvalImg`) computes, and what carries over here:

* Tolerance: radius = maxDist * sqrt(H^2 + W^2) pixels (maxDist is a fraction of the image
  diagonal). A predicted pixel (x1, y1) and a ground-truth pixel (x2, y2) may match when
  (x1 - x2)^2 + (y1 - y2)^2 <= radius^2 on the integer pixel grid: BSDS skips a pair only
  when d2 > maxDist^2, so a pair at exactly the radius is inside. Pairs are searched in a
  (2 ceil(radius) + 1)^2 window, clipped at the image border.
* Assignment: BSDS solves a min-cost perfect matching (Goldberg's CSA) in which every pixel
  may instead take an outlier arc of cost 100 * radius, while a real pair costs its distance
  (<= radius). Each real pair replaces two outlier arcs by one pair plus one outlier-outlier
  arc, saving 100 * radius, so the optimum is a maximum-cardinality matching unless the only
  augmenting paths are so long (about 100 pairs) that their added distance exceeds that
  saving; such chains do not arise in practice, and only the number of matched pixels enters
  precision and recall. This module therefore computes the maximum number of disjoint pairs
  within tolerance (a unit-capacity max flow, `maximum_matching_size`).
  No distance-transform shortcut: a distance transform counts every predicted pixel near
  any ground truth as matched, even when two predictions compete for one ground-truth pixel.

`ToleranceGraph` is built once per ground-truth map and answers `match_count` for any number
of predicted maps, which is what the per-threshold loop of the boundary protocol needs.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_flow

__all__ = ["ToleranceGraph", "maximum_matching_size", "tolerance_offsets", "tolerance_radius"]


def tolerance_radius(shape: tuple[int, int], max_dist: float) -> float:
    """Matching radius in pixels: max_dist times the image diagonal, as correspondPixels."""
    if max_dist < 0:
        raise ValueError(f"max_dist must be >= 0, got {max_dist}")
    height, width = shape
    return max_dist * math.sqrt(height * height + width * width)


def tolerance_offsets(radius: float) -> np.ndarray:
    """(N, 2) integer (dy, dx) with dy^2 + dx^2 <= radius^2, the BSDS search disc."""
    r = math.ceil(radius)
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    inside = (dy * dy + dx * dx).astype(np.float64) <= radius * radius
    return np.stack([dy[inside], dx[inside]], axis=1).astype(np.int64)


class ToleranceGraph:
    """For every image pixel, the ground-truth boundary pixels within the tolerance (CSR rows).

    Rows are flat pixel indices (row-major), columns are ground-truth pixels in row-major
    order. `match_count(pred)` restricts the rows to the predicted pixels and returns the
    size of a maximum matching.
    """

    def __init__(self, gt_boundary: np.ndarray, max_dist: float) -> None:
        gt = np.asarray(gt_boundary)
        if gt.ndim != 2:
            raise ValueError(f"ground-truth boundary map must be 2-D, got shape {gt.shape}")
        self.shape: tuple[int, int] = (int(gt.shape[0]), int(gt.shape[1]))
        self.radius = tolerance_radius(self.shape, max_dist)
        gy, gx = np.nonzero(gt)
        self.num_gt = int(gy.size)
        self.graph = self._build(gy, gx)
        self.reachable = np.diff(self.graph.indptr) > 0

    def _build(self, gy: np.ndarray, gx: np.ndarray) -> csr_matrix:
        height, width = self.shape
        rows, cols = [], []
        gt_index = np.arange(gy.size, dtype=np.int64)
        for dy, dx in tolerance_offsets(self.radius):
            py, px = gy + dy, gx + dx
            inside = (py >= 0) & (py < height) & (px >= 0) & (px < width)
            rows.append(py[inside] * width + px[inside])
            cols.append(gt_index[inside])
        row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        col = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        data = np.ones(row.size, dtype=np.int8)
        return csr_matrix((data, (row, col)), shape=(height * width, max(self.num_gt, 1)))

    def match_count(self, pred_boundary: np.ndarray) -> int:
        """Number of predicted pixels matched one-to-one to ground-truth pixels within tolerance."""
        pred = np.asarray(pred_boundary)
        if pred.shape != self.shape:
            raise ValueError(f"predicted map {pred.shape} does not match ground truth {self.shape}")
        pixels = np.flatnonzero(pred.reshape(-1))
        return self.match_count_flat(pixels)

    def match_count_flat(self, pixels: np.ndarray) -> int:
        """As `match_count`, given the flat indices of the predicted pixels."""
        if self.num_gt == 0 or pixels.size == 0:
            return 0
        pixels = pixels[self.reachable[pixels]]
        if pixels.size == 0:
            return 0
        return maximum_matching_size(self.graph[pixels])


def maximum_matching_size(pairs: csr_matrix) -> int:
    """Size of a maximum matching of a bipartite graph (rows x columns, non-zero = edge).

    Solved as a unit-capacity max flow (source -> rows -> columns -> sink) with Dinic's
    algorithm, which is Hopcroft-Karp's O(E sqrt(V)) on such networks. scipy's
    `maximum_bipartite_matching` gives the same number but can take minutes on the long
    parallel chains that near-miss edge curves produce, so it is not used.
    """
    pairs = pairs.tocsr()
    pairs.sum_duplicates()
    # Keep only the columns that occur, renumbered in order (no sort needed).
    used = np.bincount(pairs.indices, minlength=pairs.shape[1]) > 0
    columns = (np.cumsum(used) - 1)[pairs.indices]
    n1, n2 = pairs.shape[0], int(used.sum())
    if n1 == 0 or n2 == 0:
        return 0
    sink = n1 + n2 + 1
    indices = np.concatenate(
        [
            np.arange(1, n1 + 1),  # source -> every row
            columns + n1 + 1,  # row -> its columns
            np.full(n2, sink),  # every column -> sink
        ]
    ).astype(np.int32)
    indptr = np.concatenate(
        [
            [0],
            n1 + pairs.indptr.astype(np.int64),
            n1 + pairs.nnz + np.arange(1, n2 + 1),
            [n1 + pairs.nnz + n2],
        ]
    ).astype(np.int32)
    capacity = csr_matrix((np.ones(indices.size, np.int32), indices, indptr), shape=(sink + 1, sink + 1))
    return int(maximum_flow(capacity, 0, sink, method="dinic").flow_value)
