"""ODS, OIS and AP from boundary counts, with SEISM's rules for empty maps.

Counts per threshold are (matched predicted, predicted, matched ground truth, ground truth),
the (cntP, sumP, cntR, sumR) of SEISM. Precision = cntP / sumP, recall = cntR / sumR, except:

* per image (`eval_cont.m`) and for OIS (`general_ois.m`): sumR == 0 gives recall 1,
  precision 0; otherwise sumP == 0 gives recall 0, precision 1;
* pooled per threshold (`gather_measure.m`): every threshold starts at (0, 0); sumR == 0 with
  cntP == 0 gives (1, 0); then sumP == 0 with cntR == 0 gives (0, 1); the ratios apply only
  where sumP != 0 and cntR != 0. These points also feed AP.

F = 2PR / (P + R), 0 when P + R = 0. ODS is the best pooled F (first maximum); OIS takes, per
image, the first threshold of best F as SEISM stores it ('%f', 6 decimals) and pools those
counts; AP (`general_ap.m`) keeps the first threshold of each distinct recall, interpolates
precision linearly over recall at 0:0.01:1 and sums the points inside the recall range / 100.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "COUNT_FIELDS",
    "best_threshold_counts",
    "f_measure",
    "general_ap",
    "image_precision_recall",
    "ods_ois_ap",
    "pooled_precision_recall",
]

COUNT_FIELDS = ("matched_pred", "pred", "matched_gt", "gt")


def f_measure(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """2PR / (P + R), and 0 where P + R = 0."""
    p, r = np.asarray(precision, np.float64), np.asarray(recall, np.float64)
    total = p + r
    return np.where(total > 0, 2 * p * r / np.where(total > 0, total, 1), 0.0)


def _split(counts: np.ndarray) -> tuple[np.ndarray, ...]:
    c = np.asarray(counts, dtype=np.float64)
    if c.shape[-1] != 4:
        raise ValueError(f"boundary counts need 4 fields {COUNT_FIELDS} in the last axis, got shape {c.shape}")
    return c[..., 0], c[..., 1], c[..., 2], c[..., 3]


def image_precision_recall(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall with eval_cont's rules (per image, and for the OIS pool)."""
    cnt_p, sum_p, cnt_r, sum_r = _split(counts)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(sum_r == 0, 0.0, np.where(sum_p == 0, 1.0, cnt_p / sum_p))
        recall = np.where(sum_r == 0, 1.0, np.where(sum_p == 0, 0.0, cnt_r / sum_r))
    return precision, recall


def pooled_precision_recall(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall with gather_measure's rules (pooled counts per threshold)."""
    cnt_p, sum_p, cnt_r, sum_r = _split(counts)
    precision = np.zeros_like(sum_p)
    recall = np.zeros_like(sum_p)
    no_gt = (sum_r == 0) & (cnt_p == 0)
    recall[no_gt], precision[no_gt] = 1.0, 0.0
    no_pred = (sum_p == 0) & (cnt_r == 0)
    recall[no_pred], precision[no_pred] = 0.0, 1.0
    both = (sum_p != 0) & (cnt_r != 0)
    recall[both] = cnt_r[both] / sum_r[both]
    precision[both] = cnt_p[both] / sum_p[both]
    return precision, recall


def best_threshold_counts(counts: np.ndarray) -> np.ndarray:
    """One image's counts (K, 4) at its best threshold: the OIS contribution (4,)."""
    precision, recall = image_precision_recall(counts)
    stored = np.round(f_measure(precision, recall), 6)  # SEISM keeps '%f' text per image
    return np.asarray(counts, dtype=np.float64)[int(np.argmax(stored))]


def _matlab_percent_grid() -> np.ndarray:
    """0:0.01:1 as MATLAB's colon builds it (from both ends towards the middle)."""
    k = np.arange(101)
    return np.where(k <= 50, k * 0.01, 1.0 - (100 - k) * 0.01)


def general_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """SEISM general_ap: mean interpolated precision at recall 0:0.01:1 inside the recall range."""
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    unique_recall, first = np.unique(recall, return_index=True)
    if unique_recall.size <= 1:
        return 0.0
    grid = _matlab_percent_grid()
    inside = (grid >= unique_recall[0]) & (grid <= unique_recall[-1])
    values = np.interp(grid[inside], unique_recall, precision[first])
    return float(values.sum() / 100.0)


def ods_ois_ap(pooled_counts: np.ndarray, ois_counts: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """odsF, oisF, AP (fractions in [0, 1]) and the ODS threshold from the summed counts."""
    precision, recall = pooled_precision_recall(pooled_counts)
    f = f_measure(precision, recall)
    best = int(np.argmax(f))
    ois_p, ois_r = image_precision_recall(np.asarray(ois_counts, np.float64)[None])
    return {
        "odsF": float(f[best]),
        "oisF": float(f_measure(ois_p, ois_r)[0]),
        "AP": general_ap(precision, recall),
        "ods_threshold": float(np.asarray(thresholds)[best]),
    }
