"""Thinning against the plain Lam-Lee-Suen formulation and matching against brute force."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix

from demt_exp.data.edges import thin as plain_thin
from demt_exp.metrics.boundary.correspond import (
    ToleranceGraph,
    maximum_matching_size,
    tolerance_offsets,
)
from demt_exp.metrics.boundary.thinning import bwmorph_thin


def _random_masks(count: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        h, w = (int(v) for v in rng.integers(1, 24, 2))
        if rng.random() < 0.5:
            yield ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(0.5, 2.5)) > rng.uniform(0.4, 0.6)
        else:
            yield rng.random((h, w)) < rng.uniform(0.1, 0.9)


def test_fast_thinning_equals_the_full_image_algorithm() -> None:
    for mask in _random_masks(150, seed=0):
        assert np.array_equal(bwmorph_thin(mask), plain_thin(mask))


def test_thinning_keeps_lines_and_points_and_reduces_a_2x2_block_to_one_pixel() -> None:
    mask = np.zeros((7, 7), dtype=bool)
    mask[1, 1:6] = True  # a 1-px line: every pixel is an end (G2) or joins two runs (G1)
    mask[4, 4] = True  # an isolated point: no foreground neighbour run (G1)
    assert np.array_equal(bwmorph_thin(mask), mask)
    block = np.zeros((4, 4), dtype=bool)
    block[1:3, 1:3] = True
    # Subiteration 1 deletes the east column and the north-west pixel (G3 holds: east neighbour
    # off, or no north / north-east neighbour with the south-east on); (2, 1) survives.
    assert np.argwhere(bwmorph_thin(block)).tolist() == [[2, 1]]


def _brute_force_matching(pred: np.ndarray, gt: np.ndarray, radius: float) -> int:
    p = np.argwhere(pred)
    g = np.argwhere(gt)
    if not len(p) or not len(g):
        return 0
    within = ((p[:, None, :] - g[None, :, :]) ** 2).sum(-1) <= radius * radius
    rows, cols = linear_sum_assignment(-within.astype(float))
    return int(within[rows, cols].sum())


def test_matching_count_equals_a_brute_force_maximum_assignment() -> None:
    rng = np.random.default_rng(1)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(4, 18, 2))
        pred = rng.random((h, w)) < rng.uniform(0.02, 0.4)
        gt = rng.random((h, w)) < rng.uniform(0.02, 0.4)
        max_dist = float(rng.uniform(0.02, 0.15))
        graph = ToleranceGraph(gt, max_dist)
        assert graph.match_count(pred) == _brute_force_matching(pred, gt, graph.radius)


def test_matching_size_on_small_bipartite_graphs() -> None:
    rng = np.random.default_rng(2)
    for _ in range(100):
        n1, n2 = (int(v) for v in rng.integers(0, 10, 2))
        edges = (rng.random((n1, n2)) < rng.uniform(0.0, 0.6)).astype(np.int8)
        rows, cols = linear_sum_assignment(-edges) if edges.size else ([], [])
        expected = int(edges[rows, cols].sum()) if edges.size else 0
        assert maximum_matching_size(csr_matrix(edges, shape=(n1, n2))) == expected


def test_tolerance_disc_includes_its_rim() -> None:
    offsets = {tuple(o) for o in tolerance_offsets(2.0).tolist()}
    assert (0, 2) in offsets and (2, 0) in offsets and (1, 1) in offsets
    assert (1, 2) not in offsets and len(offsets) == 13  # d^2 in {0, 1, 2, 4}: 1 + 4 + 4 + 4


def _bsds_min_cost_real_pairs(pred: np.ndarray, gt: np.ndarray, radius: float) -> int:
    """BSDS's formulation solved exactly: a min-cost perfect matching in which a pixel pair
    costs its distance (if within radius) and every pixel may take an outlier at 100 * radius
    (outliers also match each other); returns how many real pairs the optimum uses."""
    p, g = np.argwhere(pred), np.argwhere(gt)
    n1, n2 = len(p), len(g)
    outlier = 100.0 * radius
    blocked = 1e9
    cost = np.full((n1 + n2, n2 + n1), blocked)
    if n1 and n2:
        d = np.sqrt(((p[:, None, :] - g[None, :, :]) ** 2).sum(-1))
        cost[:n1, :n2] = np.where(d <= radius, np.rint(d * 100) / 100, blocked)
    cost[:n1, n2:] = outlier  # predicted pixel -> outlier
    cost[n1:, :n2] = outlier  # outlier -> ground-truth pixel
    cost[n1:, n2:] = outlier  # outlier -> outlier
    rows, cols = linear_sum_assignment(cost)
    return int(np.count_nonzero((rows < n1) & (cols < n2)))


def test_maximum_matching_equals_the_bsds_min_cost_assignment() -> None:
    rng = np.random.default_rng(3)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(6, 16, 2))
        gt = np.zeros((h, w), dtype=bool)
        gt[rng.integers(0, h), :] = True  # a GT line and a noisy, partly displaced prediction
        pred = np.roll(gt, int(rng.integers(-2, 3)), axis=0) & (rng.random((h, w)) < 0.7)
        pred |= rng.random((h, w)) < 0.05
        graph = ToleranceGraph(gt, 0.1)
        assert graph.match_count(pred) == _bsds_min_cost_real_pairs(pred, gt, graph.radius)
