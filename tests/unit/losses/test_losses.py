"""Loss values against hand-derived numbers and independent NumPy implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from demt_exp.data.tasks import IGNORE_INDEX
from demt_exp.losses.task_losses import (
    MultiTaskLoss,
    balanced_cross_entropy_loss,
    cross_entropy_loss,
    depth_loss,
    edge_loss,
    normals_loss,
)

LOG2 = math.log(2.0)


# ---------------------------------------------------------------- NumPy references


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    """Log-softmax over axis 1 of (B, C, H, W)."""
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def np_ce(z: np.ndarray, y: np.ndarray) -> float:
    logp = np_log_softmax(z.astype(np.float64))
    total, count = 0.0, 0
    for b, i, j in np.ndindex(*y.shape):
        if y[b, i, j] != IGNORE_INDEX:
            total -= logp[b, y[b, i, j], i, j]
            count += 1
    return total / count


def np_sal(z: np.ndarray, y: np.ndarray) -> float:
    logp = np_log_softmax(z.astype(np.float64))
    valid = y != IGNORE_INDEX
    w_pos = np.sum(valid & (y == 0)) / np.sum(valid)
    total = 0.0
    for b, i, j in np.ndindex(*y.shape):
        if valid[b, i, j]:
            w = w_pos if y[b, i, j] == 1 else 1.0 - w_pos
            total -= w * logp[b, y[b, i, j], i, j]
    return total / np.sum(valid)


def np_normals(z: np.ndarray, n: np.ndarray) -> float:
    total, count = 0.0, 0
    for b, i, j in np.ndindex(z.shape[0], z.shape[2], z.shape[3]):
        if np.all(n[b, :, i, j] != IGNORE_INDEX):
            v = z[b, :, i, j].astype(np.float64)
            v = v / max(np.linalg.norm(v), 1e-12)
            total += np.abs(v - n[b, :, i, j]).sum()
            count += 1
    return total / count


def np_depth(d_hat: np.ndarray, d: np.ndarray) -> float:
    valid = d != IGNORE_INDEX
    return float(np.abs(d_hat[valid].astype(np.float64) - d[valid]).sum() / valid.sum())


def np_edge(z: np.ndarray, y: np.ndarray, w: float) -> float:
    """Explicit balanced BCE; log sigma(z) = -logaddexp(0, -z), log(1 - sigma(z)) = -logaddexp(0, z)."""
    valid = y != IGNORE_INDEX
    zv, yv = z[valid].astype(np.float64), y[valid].astype(np.float64)
    log_s = -np.logaddexp(0.0, -zv)
    log_1ms = -np.logaddexp(0.0, zv)
    return float(np.sum(-w * yv * log_s - (1 - w) * (1 - yv) * log_1ms) / valid.sum())


def random_batch(rng: np.random.Generator, b: int = 2, h: int = 5, w: int = 6, classes: int = 4) -> dict:
    """Random predictions and targets with about 20 % ignored pixels per task."""
    ignore = lambda shape: rng.random(shape) < 0.2  # noqa: E731
    semseg = rng.integers(0, classes, (b, h, w))
    semseg[ignore(semseg.shape)] = IGNORE_INDEX
    sal = rng.integers(0, 2, (b, h, w))
    sal[ignore(sal.shape)] = IGNORE_INDEX
    normals = rng.normal(size=(b, 3, h, w))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    normals[:, :, ignore((h, w))] = IGNORE_INDEX
    depth = rng.uniform(0.5, 10.0, (b, 1, h, w))
    depth[ignore(depth.shape)] = IGNORE_INDEX
    edge = (rng.random((b, 1, h, w)) < 0.3).astype(np.float64)
    edge[ignore(edge.shape)] = IGNORE_INDEX
    preds = {
        "semseg": rng.normal(size=(b, classes, h, w)) * 3,
        "sal": rng.normal(size=(b, 2, h, w)) * 3,
        "normals": rng.normal(size=(b, 3, h, w)),
        "depth": rng.uniform(-1.0, 11.0, (b, 1, h, w)),
        "edge": rng.normal(size=(b, 1, h, w)) * 4,
    }
    targets = {"semseg": semseg, "sal": sal, "normals": normals, "depth": depth, "edge": edge}
    return {"np_preds": preds, "np_targets": targets}


def to_torch(batch: dict) -> tuple[dict, dict]:
    preds = {k: torch.tensor(v, dtype=torch.float32) for k, v in batch["np_preds"].items()}
    targets = {
        k: torch.tensor(v, dtype=torch.int64 if k in ("semseg", "sal") else torch.float32)
        for k, v in batch["np_targets"].items()
    }
    return preds, targets


# ---------------------------------------------------------------- hand-derived values


def test_cross_entropy_hand_value_and_ignored_pixel() -> None:
    # Pixel 0: logits (0, 0), label 0 -> -log(1/2) = log 2. Pixel 1: ignored. Mean over |V|=1: log 2.
    pred = torch.tensor([[[[0.0, 5.0]], [[0.0, -3.0]]]])
    target = torch.tensor([[[0, IGNORE_INDEX]]])
    assert cross_entropy_loss(pred, target).item() == pytest.approx(LOG2, rel=1e-6)
    pred2 = pred.clone()
    pred2[0, :, 0, 1] = torch.tensor([-40.0, 40.0])
    assert cross_entropy_loss(pred2, target).item() == pytest.approx(LOG2, rel=1e-6)


def test_sal_loss_divides_by_pixel_count_not_weight_sum() -> None:
    # 4 valid pixels, labels (0, 0, 0, 1), all logits 0 so CE_i = log 2; one ignored pixel.
    # w_pos = #neg/|V| = 3/4; weights: negatives 1 - 3/4 = 1/4, positive 3/4.
    # Sum w_i CE_i = (3 * 1/4 + 3/4) log 2 = 1.5 log 2.
    # Pixel-count normalisation: 1.5 log 2 / 4 = 0.375 log 2.
    # Weight-sum normalisation would give 1.5 log 2 / 1.5 = log 2.
    pred = torch.zeros(1, 2, 1, 5)
    pred[0, :, 0, 4] = torch.tensor([9.0, -9.0])  # the ignored pixel: must not matter
    target = torch.tensor([[[0, 0, 0, 1, IGNORE_INDEX]]])
    loss = balanced_cross_entropy_loss(pred, target).item()
    assert loss == pytest.approx(0.375 * LOG2, rel=1e-6)
    assert abs(loss - LOG2) > 0.1


def test_normals_loss_sums_channels_and_divides_by_pixels() -> None:
    # Pixel a: z = (2, 0, 0) -> n_hat = (1, 0, 0); n = (0, 1, 0): |1| + |-1| + 0 = 2.
    # Pixel b: z = (0, 0, 3) -> (0, 0, 1) = n: 0.
    # Pixel c: all channels 255 -> invalid. Pixel d: only one channel 255 -> also invalid.
    # Loss = (2 + 0) / 2 valid pixels = 1 (a per-component mean would be 2/6).
    pred = torch.tensor([[[[2.0, 0.0, 1.0, 1.0]], [[0.0, 0.0, 1.0, 1.0]], [[0.0, 3.0, 1.0, 1.0]]]])
    target = torch.tensor([[[[0.0, 0.0, 255.0, 255.0]], [[1.0, 0.0, 255.0, 0.0]], [[0.0, 1.0, 255.0, 1.0]]]])
    assert normals_loss(pred, target).item() == pytest.approx(1.0, rel=1e-6)


def test_depth_loss_hand_value() -> None:
    # |1 - 2| = 1, pixel 2 ignored, |5 - 4| = 1 -> (1 + 1) / 2 = 1. Negative predictions are not clamped:
    # |-1 - 1| = 2 on a second example -> 2.
    pred = torch.tensor([[[[1.0, 100.0, 5.0]]]])
    target = torch.tensor([[[[2.0, 255.0, 4.0]]]])
    assert depth_loss(pred, target).item() == pytest.approx(1.0)
    assert depth_loss(torch.tensor([[[[-1.0]]]]), torch.tensor([[[[1.0]]]])).item() == pytest.approx(2.0)


def test_edge_loss_hand_value() -> None:
    # w = 0.8. z = 0 -> sigma = 1/2. y = 1: -0.8 log(1/2) = 0.8 log 2; y = 0: -0.2 log(1/2) = 0.2 log 2.
    # Third pixel ignored. Mean over 2 valid pixels = 0.5 log 2.
    pred = torch.tensor([[[[0.0, 0.0, 7.0]]]])
    target = torch.tensor([[[[1.0, 0.0, 255.0]]]])
    assert edge_loss(pred, target, 0.8).item() == pytest.approx(0.5 * LOG2, rel=1e-6)


def test_edge_loss_equals_explicit_formula_including_large_logits() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(size=(2, 1, 4, 5)) * 30.0  # saturated logits: naive log(sigmoid) would be -inf
    y = (rng.random(z.shape) < 0.4).astype(np.float64)
    y[rng.random(z.shape) < 0.2] = IGNORE_INDEX
    for w in (0.8, 0.95):
        got = edge_loss(torch.tensor(z, dtype=torch.float64), torch.tensor(y), w).item()
        assert math.isfinite(got)
        assert got == pytest.approx(np_edge(z, y, w), rel=1e-9)


# ---------------------------------------------------------------- random data vs NumPy


@pytest.mark.parametrize("seed", [0, 1])
def test_losses_match_numpy_references(seed: int) -> None:
    batch = random_batch(np.random.default_rng(seed))
    preds, targets = to_torch(batch)
    p, t = batch["np_preds"], batch["np_targets"]
    assert cross_entropy_loss(preds["semseg"], targets["semseg"]).item() == pytest.approx(
        np_ce(p["semseg"], t["semseg"]), rel=1e-5
    )
    assert balanced_cross_entropy_loss(preds["sal"], targets["sal"]).item() == pytest.approx(
        np_sal(p["sal"], t["sal"]), rel=1e-5
    )
    assert normals_loss(preds["normals"], targets["normals"]).item() == pytest.approx(
        np_normals(p["normals"], t["normals"]), rel=1e-5
    )
    assert depth_loss(preds["depth"], targets["depth"]).item() == pytest.approx(
        np_depth(p["depth"], t["depth"]), rel=1e-5
    )
    assert edge_loss(preds["edge"], targets["edge"], 0.95).item() == pytest.approx(
        np_edge(p["edge"], t["edge"], 0.95), rel=1e-5
    )


def test_changing_ignored_predictions_leaves_losses_unchanged() -> None:
    batch = random_batch(np.random.default_rng(5))
    preds, targets = to_torch(batch)
    crit = MultiTaskLoss({"semseg": 1.0, "sal": 1.0, "normals": 1.0, "depth": 1.0, "edge": 1.0}, 0.8)
    _, before = crit(preds, targets)
    changed = {k: v.clone() for k, v in preds.items()}
    for task, pred in changed.items():
        target = targets[task]
        invalid = (target == IGNORE_INDEX) if target.dim() == 3 else (target == IGNORE_INDEX).any(dim=1)
        mask = invalid.unsqueeze(1).expand_as(pred)
        pred[mask] = pred[mask] * -7.0 + 3.0
    _, after = crit(changed, targets)
    for task in before:
        assert after[task].item() == pytest.approx(before[task].item(), rel=1e-6), task


# ---------------------------------------------------------------- multi-task sum


def test_multitask_loss_weighting() -> None:
    batch = random_batch(np.random.default_rng(7))
    preds, targets = to_torch(batch)
    p, t = batch["np_preds"], batch["np_targets"]
    weights = {"semseg": 1.0, "sal": 5.0, "normals": 10.0, "depth": 1.0, "edge": 50.0}
    total, per_task = MultiTaskLoss(weights, edge_pos_weight=0.95)(preds, targets)
    expected = {
        "semseg": np_ce(p["semseg"], t["semseg"]),
        "sal": np_sal(p["sal"], t["sal"]),
        "normals": np_normals(p["normals"], t["normals"]),
        "depth": np_depth(p["depth"], t["depth"]),
        "edge": np_edge(p["edge"], t["edge"], 0.95),
    }
    assert set(per_task) == set(weights)
    for task, value in expected.items():
        assert per_task[task].item() == pytest.approx(value, rel=1e-5), task
    assert total.item() == pytest.approx(sum(weights[k] * expected[k] for k in weights), rel=1e-5)


def test_multitask_loss_only_uses_weighted_tasks() -> None:
    batch = random_batch(np.random.default_rng(8))
    preds, targets = to_torch(batch)
    total, per_task = MultiTaskLoss({"depth": 2.0})(preds, targets)
    assert set(per_task) == {"depth"}
    expected = 2.0 * np_depth(batch["np_preds"]["depth"], batch["np_targets"]["depth"])
    assert total.item() == pytest.approx(expected, rel=1e-5)


def test_multitask_loss_rejects_unknown_task_and_missing_edge_weight() -> None:
    with pytest.raises(ValueError, match="'segsem'.*semseg"):
        MultiTaskLoss({"segsem": 1.0}, 0.8)
    with pytest.raises(ValueError, match="edge_pos_weight"):
        MultiTaskLoss({"edge": 1.0})
    with pytest.raises(ValueError):
        MultiTaskLoss({"edge": 1.0}, 1.0)


def test_multitask_loss_from_hydra_config() -> None:
    hydra_utils = pytest.importorskip("hydra.utils")
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create(
        {
            "_target_": "demt_exp.losses.MultiTaskLoss",
            "weights": {"semseg": 1.0, "depth": 2},
            "edge_pos_weight": 0.8,
        }
    )
    crit = hydra_utils.instantiate(cfg)
    assert isinstance(crit, MultiTaskLoss)
    assert crit.weights == {"semseg": 1.0, "depth": 2.0}
    assert all(type(v) is float for v in crit.weights.values())
    assert crit.edge_pos_weight == 0.8


# ---------------------------------------------------------------- no valid pixel


def test_all_ignored_batch_gives_zero_loss_with_working_backward() -> None:
    b, h, w = 2, 3, 4
    preds = {
        "semseg": torch.randn(b, 5, h, w, requires_grad=True),
        "human_parts": torch.randn(b, 7, h, w, requires_grad=True),
        "sal": torch.randn(b, 2, h, w, requires_grad=True),
        "normals": torch.randn(b, 3, h, w, requires_grad=True),
        "depth": torch.randn(b, 1, h, w, requires_grad=True),
        "edge": torch.randn(b, 1, h, w, requires_grad=True),
    }
    targets = {
        "semseg": torch.full((b, h, w), IGNORE_INDEX),
        "human_parts": torch.full((b, h, w), IGNORE_INDEX),
        "sal": torch.full((b, h, w), IGNORE_INDEX),
        "normals": torch.full((b, 3, h, w), float(IGNORE_INDEX)),
        "depth": torch.full((b, 1, h, w), float(IGNORE_INDEX)),
        "edge": torch.full((b, 1, h, w), float(IGNORE_INDEX)),
    }
    weights = {"semseg": 1.0, "human_parts": 2.0, "sal": 5.0, "normals": 10.0, "depth": 1.0, "edge": 50.0}
    total, per_task = MultiTaskLoss(weights, 0.95)(preds, targets)
    assert total.item() == 0.0
    assert all(v.item() == 0.0 for v in per_task.values())
    assert total.requires_grad
    total.backward()
    for task, pred in preds.items():
        assert pred.grad is not None, task
        assert torch.all(pred.grad == 0), task
