"""ODS / OIS / AP pooling on hand-computed counts, with SEISM's rules for empty maps."""

from __future__ import annotations

import numpy as np
import pytest

from demt_exp.metrics.boundary.counts import BoundaryMetric
from demt_exp.metrics.boundary.pooling import (
    general_ap,
    ods_ois_ap,
    pooled_precision_recall,
)
from demt_exp.metrics.boundary.protocol import BoundaryProtocol

# Two images x two thresholds; fields (matched pred, pred, matched GT, GT).
IMAGE_A = np.array([[8, 10, 8, 10], [4, 5, 4, 10]])
IMAGE_B = np.array([[2, 10, 2, 4], [2, 2, 2, 4]])


def test_ods_ois_and_ap_from_hand_computed_counts() -> None:
    metric = BoundaryMetric(BoundaryProtocol("test", (0.3, 0.6), "ge", False, 0.011))
    metric.add_counts(IMAGE_A)
    metric.add_counts(IMAGE_B)
    scores = metric.compute()
    # Pooled t1 = (10, 20, 10, 14): P 1/2, R 5/7, F 10/17; t2 = (6, 7, 6, 14): P 6/7, R 3/7, F 4/7.
    assert scores["odsF"] == pytest.approx(100 * 10 / 17) and scores["ods_threshold"] == 0.3
    # Per image: A is best at t1 (F .8 vs .533), B at t2 (F .667 vs .286); pooled
    # (8, 10, 8, 10) + (2, 2, 2, 4) = (10, 12, 10, 14): P 5/6, R 5/7, F 10/13.
    assert scores["oisF"] == pytest.approx(100 * 10 / 13)
    # AP: precision on recall, linear between (3/7, 6/7) and (5/7, 1/2), slope -5/4, read at
    # recall 0.43 .. 0.71 (29 points, sum of k/100 = 16.53), divided by 100.
    expected_ap = (29 * 6 / 7 - 1.25 * (16.53 - 29 * 3 / 7)) / 100
    assert scores["AP"] == pytest.approx(100 * expected_ap)


def test_thresholds_without_predictions_count_as_precision_one_for_ap() -> None:
    pooled = np.array([[5, 10, 5, 10], [0, 0, 0, 10]])
    precision, recall = pooled_precision_recall(pooled)
    assert precision.tolist() == [0.5, 1.0] and recall.tolist() == [0.5, 0.0]
    # p(r) = 1 - r on recall 0 .. 0.5: sum over k = 0..50 of (1 - k / 100) = 38.25.
    assert general_ap(precision, recall) == pytest.approx(0.3825)
    # One distinct recall value gives AP 0, as general_ap.m.
    assert general_ap(np.array([0.5, 0.7]), np.array([0.4, 0.4])) == 0.0


def test_empty_ground_truth_gives_recall_one_precision_zero() -> None:
    precision, recall = pooled_precision_recall(np.array([[0, 5, 0, 0]]))
    assert (precision.tolist(), recall.tolist()) == ([0.0], [1.0])
    scores = ods_ois_ap(np.array([[0, 5, 0, 0]]), np.array([0, 5, 0, 0]), np.array([0.5]))
    assert scores["odsF"] == 0.0 and scores["oisF"] == 0.0


def test_counts_of_the_wrong_shape_are_refused() -> None:
    metric = BoundaryMetric(BoundaryProtocol("test", (0.3, 0.6), "ge", False, 0.011))
    with pytest.raises(ValueError, match="do not fit protocol 'test'"):
        metric.add_counts(np.zeros((3, 4)))
