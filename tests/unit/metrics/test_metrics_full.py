"""The extra numbers of every task (pixel accuracy, depth errors, normals distribution, saliency
mIoU) against hand-derived values and independent NumPy implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from demt_exp.data.tasks import IGNORE_INDEX
from demt_exp.metrics import (
    DepthRelativeErrors,
    MeanIoU,
    NormalsAngleDistribution,
    SaliencyMeanIoU,
)

# ---------------------------------------------------------------- semseg pixel accuracy


def test_pixel_accuracy_hand_value_and_numpy() -> None:
    # gt (0, 0, 1, 1, ignore), pred (0, 1, 1, 1, 2): 3 of 4 valid pixels right.
    logits = torch.zeros(1, 3, 1, 5)
    for j, c in enumerate([0, 1, 1, 1, 2]):
        logits[0, c, 0, j] = 1.0
    gt = torch.tensor([[[0, 0, 1, 1, IGNORE_INDEX]]])
    metric = MeanIoU(3)
    metric.update(logits, gt)
    assert metric.compute()["pixel_acc"] == pytest.approx(75.0)

    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=(3, 4, 6, 7)), rng.integers(0, 4, (3, 6, 7))
    labels[rng.random(labels.shape) < 0.3] = IGNORE_INDEX
    metric = MeanIoU(4)
    for b in range(3):
        metric.update(torch.tensor(scores[b : b + 1]), torch.tensor(labels[b : b + 1]))
    valid = labels != IGNORE_INDEX
    expected = 100.0 * np.mean(scores.argmax(1)[valid] == labels[valid])
    assert metric.compute()["pixel_acc"] == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- depth


def np_depth_errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Pixel by pixel in float64, with a Python loop (a different formulation)."""
    rel, logs, below = [], [], {1: 0, 2: 0, 3: 0}
    for p, g in zip(pred.ravel().astype(np.float64), gt.ravel().astype(np.float64)):
        if g in (0.0, float(IGNORE_INDEX)):
            continue
        p = max(p, 1e-9)
        rel.append(abs(p - g) / g)
        logs.append(abs(math.log10(p) - math.log10(g)))
        for k in below:
            below[k] += max(p / g, g / p) < 1.25**k
    n = len(rel)
    return {"abs_rel": sum(rel) / n, "log10": sum(logs) / n, **{f"delta{k}": 100.0 * v / n for k, v in below.items()}}


def test_depth_errors_hand_value() -> None:
    # Valid pixels: ratios 2, 1.1, 1.5; the fourth (target 255) and fifth (target 0) are ignored.
    pred = torch.tensor([1.0, 2.2, 3.0, 5.0, 7.0]).view(1, 1, 1, 5)
    gt = torch.tensor([2.0, 2.0, 2.0, IGNORE_INDEX, 0.0]).view(1, 1, 1, 5)
    metric = DepthRelativeErrors()
    metric.update(pred, gt)
    got = metric.compute()
    assert got["abs_rel"] == pytest.approx((0.5 + 0.1 + 0.5) / 3, rel=1e-6)
    assert got["log10"] == pytest.approx((math.log10(2) + math.log10(1.1) + math.log10(1.5)) / 3, rel=1e-6)
    # 1.25^1 = 1.25 admits 1.1; 1.25^2 = 1.5625 also admits 1.5; 1.25^3 = 1.953 still excludes 2.
    assert (got["delta1"], got["delta2"], got["delta3"]) == pytest.approx((100 / 3, 200 / 3, 200 / 3))


def test_depth_errors_match_numpy_and_pool_over_batches() -> None:
    rng = np.random.default_rng(1)
    pred, gt = rng.uniform(-0.5, 9.0, (4, 1, 5, 6)), rng.uniform(0.5, 8.0, (4, 1, 5, 6))
    gt[rng.random(gt.shape) < 0.2] = IGNORE_INDEX
    gt[rng.random(gt.shape) < 0.1] = 0.0
    metric = DepthRelativeErrors()
    for b in range(4):
        metric.update(torch.tensor(pred[b : b + 1]), torch.tensor(gt[b : b + 1]))
    got, want = metric.compute(), np_depth_errors(pred, gt)
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key


def test_depth_errors_without_valid_pixels_are_nan() -> None:
    metric = DepthRelativeErrors()
    metric.update(torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), float(IGNORE_INDEX)))
    assert all(math.isnan(v) for v in metric.compute().values())


# ---------------------------------------------------------------- normals


def np_angles(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """arccos of the clipped dot product of unit vectors, over valid pixels."""
    out = []
    for b, i, j in np.ndindex(pred.shape[0], pred.shape[2], pred.shape[3]):
        t = gt[b, :, i, j].astype(np.float64)
        if np.any(t == IGNORE_INDEX):
            continue
        p = pred[b, :, i, j].astype(np.float64)
        p, t = p / np.linalg.norm(p), t / np.linalg.norm(t)
        out.append(np.degrees(np.arccos(np.clip(np.dot(p, t), -1.0, 1.0))))
    return np.array(out)


def normals_at(angles_deg: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets along z, predictions rotated about x by the given angles (one pixel each)."""
    a = np.radians(np.array(angles_deg))
    pred = np.stack([np.zeros_like(a), np.sin(a), np.cos(a)])[None, :, None, :]
    gt = np.stack([np.zeros_like(a), np.zeros_like(a), np.ones_like(a)])[None, :, None, :]
    return torch.tensor(pred, dtype=torch.float32), torch.tensor(gt, dtype=torch.float32)


def test_normals_distribution_hand_value() -> None:
    pred, gt = normals_at([5.0, 10.0, 20.0, 25.0, 40.0])
    metric = NormalsAngleDistribution()
    metric.update(pred, gt)
    got = metric.compute()
    assert got["median_angle"] == pytest.approx(20.0, abs=6e-4)
    assert got["mean_angle"] == pytest.approx(20.0, rel=1e-5)
    assert got["rmse_angle"] == pytest.approx(math.sqrt((25 + 100 + 400 + 625 + 1600) / 5), rel=1e-5)
    assert (got["within_11_25"], got["within_22_5"], got["within_30"]) == pytest.approx((40.0, 60.0, 80.0))
    # An even count: np.median's mean of the two middle values.
    pred, gt = normals_at([3.0, 7.0, 90.0, 130.0])
    metric = NormalsAngleDistribution()
    metric.update(pred, gt)
    assert metric.compute()["median_angle"] == pytest.approx(48.5, abs=6e-4)


def test_normals_distribution_matches_numpy_and_pools_over_batches() -> None:
    rng = np.random.default_rng(2)
    gt = rng.normal(size=(3, 3, 7, 9))
    gt[:, :, rng.random((7, 9)) < 0.2] = IGNORE_INDEX
    pred = np.where(gt == IGNORE_INDEX, rng.normal(size=gt.shape), gt + 0.6 * rng.normal(size=gt.shape))
    pred, gt = pred.astype(np.float32), gt.astype(np.float32)
    parts = [NormalsAngleDistribution() for _ in range(2)]
    for b in range(3):
        parts[b % 2].update(torch.tensor(pred[b : b + 1]), torch.tensor(gt[b : b + 1]))
    parts[0].state += parts[1].state  # what all_reduce(SUM) does across two processes
    got, angles = parts[0].compute(), np_angles(pred, gt)
    assert got["mean_angle"] == pytest.approx(np.mean(angles), rel=1e-5)
    assert got["median_angle"] == pytest.approx(np.median(angles), abs=6e-4)
    assert got["rmse_angle"] == pytest.approx(np.sqrt(np.mean(angles**2)), rel=1e-4)
    for t, key in [(11.25, "within_11_25"), (22.5, "within_22_5"), (30.0, "within_30")]:
        assert got[key] == pytest.approx(100.0 * np.mean(angles < t)), key


# ---------------------------------------------------------------- saliency mIoU


def np_sal_miou(prob: np.ndarray, gt: np.ndarray) -> float:
    """Per-image Jaccard at each of 15 thresholds, averaged over images, best threshold."""
    best = 0.0
    for t in np.linspace(0.2, 0.9, 15):
        scores = []
        for p, g in zip(prob, gt):
            valid = g != IGNORE_INDEX
            pm, gm = (p > t) & valid, (g == 1) & valid
            union = np.sum(pm | gm)
            scores.append(np.sum(pm & gm) / union if union else 1.0)
        best = max(best, float(np.mean(scores)))
    return 100.0 * best


def test_saliency_miou_hand_value() -> None:
    # Image 1: gt (1, 1, 0, 0), prob (0.95, 0.5, 0.5, 0.1): at t < 0.5, P = {0, 1, 2} -> J = 2/3;
    # at t >= 0.5, P = {0} -> J = 1/2. Image 2: gt all 0, prob all 0.1 -> both empty -> J = 1.
    prob = torch.tensor([[0.95, 0.5, 0.5, 0.1], [0.1, 0.1, 0.1, 0.1]]).view(2, 1, 1, 4)
    logits = torch.log(prob / (1 - prob))
    gt = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]).view(2, 1, 4)
    metric = SaliencyMeanIoU()
    metric.update(logits, gt)
    assert metric.compute()["mIoU"] == pytest.approx(100.0 * (2 / 3 + 1) / 2, rel=1e-6)


def test_saliency_miou_matches_numpy_with_ignore() -> None:
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 2, (5, 6, 8))
    gt[rng.random(gt.shape) < 0.2] = IGNORE_INDEX
    gt[4] = IGNORE_INDEX  # an image without a valid pixel is not counted
    prob = np.clip(np.where(gt == 1, 0.6, 0.35) + 0.3 * rng.normal(size=gt.shape), 0.01, 0.99)
    logits = torch.tensor(np.stack([np.zeros_like(prob), np.log(prob / (1 - prob))], axis=1), dtype=torch.float64)
    metric = SaliencyMeanIoU()
    metric.update(logits[:2], torch.tensor(gt[:2]))
    metric.update(logits[2:], torch.tensor(gt[2:]))
    assert metric.compute()["mIoU"] == pytest.approx(np_sal_miou(prob[:4], gt[:4]), rel=1e-9)
