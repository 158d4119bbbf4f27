"""Metric values against hand-derived numbers and independent NumPy implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from demt_exp.data.tasks import IGNORE_INDEX
from demt_exp.metrics import (
    DepthRMSE,
    EdgePixelMaxF,
    MaxF,
    MeanIoU,
    MultiTaskMetrics,
    NormalsMeanAngle,
)

THRESHOLDS = [0.05 * k for k in range(1, 20)]


# ---------------------------------------------------------------- NumPy references


def np_miou(logits: np.ndarray, gt: np.ndarray, num_classes: int) -> float:
    pred = logits.argmax(axis=1)
    valid = gt != IGNORE_INDEX
    ious = []
    for c in range(num_classes):
        inter = np.sum(valid & (pred == c) & (gt == c))
        union = np.sum(valid & ((pred == c) | (gt == c)))
        ious.append(inter / union if union > 0 else 0.0)
    return 100.0 * float(np.mean(ious))


def np_rmse(pred: np.ndarray, gt: np.ndarray) -> float:
    errs = [
        (max(p, 0.0) - g) ** 2
        for p, g in zip(pred.ravel().astype(np.float64), gt.ravel().astype(np.float64))
        if g != IGNORE_INDEX and g != 0
    ]
    return math.sqrt(sum(errs) / len(errs))


def np_mean_angle(pred: np.ndarray, gt: np.ndarray) -> float:
    """Angle via arccos of the clipped dot product of unit vectors (a different formula)."""
    angles = []
    for b, i, j in np.ndindex(pred.shape[0], pred.shape[2], pred.shape[3]):
        t = gt[b, :, i, j].astype(np.float64)
        if np.any(t == IGNORE_INDEX):
            continue
        p = pred[b, :, i, j].astype(np.float64)
        p = p / np.linalg.norm(p) if np.linalg.norm(p) > 0 else p
        t = t / np.linalg.norm(t) if np.linalg.norm(t) > 0 else t
        angles.append(np.degrees(np.arccos(np.clip(np.dot(p, t), -1.0, 1.0))))
    return float(np.mean(angles))


def np_maxf(prob: np.ndarray, gt: np.ndarray, beta2: float = 0.3) -> float:
    valid = gt != IGNORE_INDEX
    p, y = prob[valid], gt[valid] == 1
    best = 0.0
    for tau in THRESHOLDS:
        predicted = p >= tau
        tp, pp, ap = np.sum(predicted & y), np.sum(predicted), np.sum(y)
        if pp == 0 or ap == 0 or tp == 0:
            continue  # P or R undefined or zero -> F = 0
        prec, rec = tp / pp, tp / ap
        best = max(best, (1 + beta2) * prec * rec / (beta2 * prec + rec))
    return 100.0 * best


def np_sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def two_class_logits(prob: np.ndarray) -> torch.Tensor:
    """(B, H, W) probabilities -> (B, 2, H, W) logits whose class-1 softmax equals prob."""
    logit = np.log(prob / (1.0 - prob))
    return torch.tensor(np.stack([np.zeros_like(logit), logit], axis=1), dtype=torch.float32)


# ---------------------------------------------------------------- MeanIoU


def test_miou_hand_value_with_absent_class() -> None:
    # 3 classes; gt (0, 0, 1, 1), pred (0, 1, 1, 1), plus an ignored pixel predicted as class 2.
    # class 0: I = 1, U = 2 -> 1/2; class 1: I = 2, U = 3 -> 2/3; class 2: U = 0 -> NaN -> 0.
    # mIoU = 100 * (1/2 + 2/3 + 0) / 3 = 38.888...  (averaging present classes only would give 58.33)
    pred_labels = [0, 1, 1, 1, 2]
    logits = torch.zeros(1, 3, 1, 5)
    for j, c in enumerate(pred_labels):
        logits[0, c, 0, j] = 1.0
    gt = torch.tensor([[[0, 0, 1, 1, IGNORE_INDEX]]])
    metric = MeanIoU(3)
    metric.update(logits, gt)
    assert metric.compute()["mIoU"] == pytest.approx(100.0 * (0.5 + 2.0 / 3.0) / 3.0)

    # The ignored pixel's prediction does not matter.
    logits2 = logits.clone()
    logits2[0, :, 0, 4] = torch.tensor([5.0, 0.0, 0.0])
    metric2 = MeanIoU(3)
    metric2.update(logits2, gt)
    assert metric2.compute()["mIoU"] == pytest.approx(metric.compute()["mIoU"])


def test_miou_matches_numpy_and_is_pooled() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 5, 6, 7))
    gt = rng.integers(0, 4, size=(4, 6, 7))  # class 4 never in gt
    gt[rng.random(gt.shape) < 0.25] = IGNORE_INDEX
    metric = MeanIoU(5)
    for k in range(4):  # one image per update; pooled result must equal the whole-set result
        metric.update(torch.tensor(logits[k : k + 1]), torch.tensor(gt[k : k + 1]))
    assert metric.compute()["mIoU"] == pytest.approx(np_miou(logits, gt, 5), rel=1e-12)
    metric.reset()
    assert metric.compute()["mIoU"] == 0.0


def test_miou_rejects_out_of_range_label() -> None:
    with pytest.raises(ValueError):
        MeanIoU(3).update(torch.zeros(1, 3, 1, 1), torch.tensor([[[7]]]))


# ---------------------------------------------------------------- DepthRMSE


def depth_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Image A: pred (1, 3, 4, 4), gt (2, 3, 255, 0): valid squared errors (1, 0).
    # Image B: pred (-1, 5, 7, 0.5), gt (1, 0, 255, 2.5): -1 clamps to 0 -> err 1; 0 and 255 excluded;
    #          0.5 vs 2.5 -> err 2. Squared errors (1, 4).
    pa = np.array([[[[1.0, 3.0], [4.0, 4.0]]]])
    ga = np.array([[[[2.0, 3.0], [255.0, 0.0]]]])
    pb = np.array([[[[-1.0, 5.0], [7.0, 0.5]]]])
    gb = np.array([[[[1.0, 0.0], [255.0, 2.5]]]])
    return pa, ga, pb, gb


def test_rmse_pooled_excludes_255_and_0_and_clamps() -> None:
    pa, ga, pb, gb = depth_pair()
    # Pooled: sqrt((1 + 0 + 1 + 4) / 4) = sqrt(1.5) = 1.2247...
    # Per-image: A sqrt(1/2) = 0.7071, B sqrt(5/2) = 1.5811, mean 1.1441 (different).
    pooled = math.sqrt(1.5)
    per_image_mean = (math.sqrt(0.5) + math.sqrt(2.5)) / 2
    two_updates = DepthRMSE()
    two_updates.update(torch.tensor(pa, dtype=torch.float32), torch.tensor(ga, dtype=torch.float32))
    two_updates.update(torch.tensor(pb, dtype=torch.float32), torch.tensor(gb, dtype=torch.float32))
    one_update = DepthRMSE()
    one_update.update(
        torch.tensor(np.concatenate([pa, pb]), dtype=torch.float32),
        torch.tensor(np.concatenate([ga, gb]), dtype=torch.float32),
    )
    assert two_updates.compute()["rmse"] == pytest.approx(pooled, rel=1e-7)
    assert one_update.compute()["rmse"] == pytest.approx(pooled, rel=1e-7)
    assert abs(pooled - per_image_mean) > 0.05
    assert np_rmse(np.concatenate([pa, pb]), np.concatenate([ga, gb])) == pytest.approx(pooled)


def test_rmse_ignored_prediction_does_not_matter() -> None:
    _, ga, _, gb = depth_pair()
    gt = torch.tensor(np.concatenate([ga, gb]), dtype=torch.float32)
    pred = torch.rand(gt.shape) * 5
    m1 = DepthRMSE()
    m1.update(pred, gt)
    pred2 = pred.clone()
    pred2[(gt == 0) | (gt == IGNORE_INDEX)] = 1000.0
    m2 = DepthRMSE()
    m2.update(pred2, gt)
    assert m2.compute()["rmse"] == pytest.approx(m1.compute()["rmse"])


def test_rmse_matches_numpy_random() -> None:
    rng = np.random.default_rng(1)
    pred = rng.uniform(-1.0, 10.0, (3, 1, 5, 6))
    gt = rng.uniform(0.5, 10.0, (3, 1, 5, 6))
    gt[rng.random(gt.shape) < 0.2] = IGNORE_INDEX
    gt[rng.random(gt.shape) < 0.1] = 0.0
    metric = DepthRMSE()
    metric.update(torch.tensor(pred), torch.tensor(gt))
    assert metric.compute()["rmse"] == pytest.approx(np_rmse(pred, gt), rel=1e-12)


# ---------------------------------------------------------------- NormalsMeanAngle


def test_mean_angle_hand_value() -> None:
    # a: p (1, 0, 0), t (0, 2, 0) -> t normalised (0, 1, 0): 90 deg.
    # b: p (1, 1, 0), t (1, 0, 0): 45 deg.
    # c: p (0, 0, 0) stays zero, t (0, 0, 1): 2 atan2(1, 1) = 90 deg.
    # d: t = 255 on all channels -> ignored. e: t = (255, 0, 1), one channel 255 -> also ignored
    # (counting it would add an angle of about 0.2 deg).  Mean = (90 + 45 + 90) / 3 = 75 deg.
    pred = torch.tensor([[[[1.0, 1.0, 0.0, 1.0, 1.0]], [[0.0, 1.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0, 0.0]]]])
    gt = torch.tensor([[[[0.0, 1.0, 0.0, 255.0, 255.0]], [[2.0, 0.0, 0.0, 255.0, 0.0]], [[0.0, 0.0, 1.0, 255.0, 1.0]]]])
    metric = NormalsMeanAngle()
    metric.update(pred, gt)
    assert metric.compute()["mean_angle"] == pytest.approx(75.0, abs=1e-4)
    pred2 = pred.clone()
    pred2[0, :, 0, 3] = torch.tensor([-3.0, 2.0, 9.0])
    metric2 = NormalsMeanAngle()
    metric2.update(pred2, gt)
    assert metric2.compute()["mean_angle"] == pytest.approx(75.0, abs=1e-4)


def test_mean_angle_matches_numpy_random() -> None:
    rng = np.random.default_rng(2)
    pred = rng.normal(size=(2, 3, 4, 5))
    gt = rng.normal(size=(2, 3, 4, 5))
    gt[:, :, rng.random((4, 5)) < 0.3] = IGNORE_INDEX
    metric = NormalsMeanAngle()
    metric.update(torch.tensor(pred[:1]), torch.tensor(gt[:1]))
    metric.update(torch.tensor(pred[1:]), torch.tensor(gt[1:]))
    assert metric.compute()["mean_angle"] == pytest.approx(np_mean_angle(pred, gt), abs=1e-3)


# ---------------------------------------------------------------- MaxF


def test_maxf_hand_value_and_ignore() -> None:
    # probs (0.92, 0.62, 0.32, 0.12), labels (1, 0, 1, 0), AP = 2; fifth pixel ignored.
    # tau 0.05-0.10: PP 4, TP 2 -> P 1/2, R 1   -> F = 1.3*0.5/(0.15+1)   = 0.5652
    # tau 0.15-0.30: PP 3, TP 2 -> P 2/3, R 1   -> F = 1.3*(2/3)/(0.2+1)  = 0.7222
    # tau 0.35-0.60: PP 2, TP 1 -> P 1/2, R 1/2 -> F = 1.3*0.25/(0.65)    = 0.5
    # tau 0.65-0.90: PP 1, TP 1 -> P 1,   R 1/2 -> F = 1.3*0.5/(0.3+0.5)  = 0.8125
    # tau 0.95:      PP 0 -> P = NaN -> F = 0.    maxF = 81.25
    prob = np.array([[[0.92, 0.62, 0.32, 0.12, 0.99]]])
    gt = torch.tensor([[[1, 0, 1, 0, IGNORE_INDEX]]])
    metric = MaxF()
    metric.update(two_class_logits(prob), gt)
    assert metric.compute()["maxF"] == pytest.approx(81.25, rel=1e-9)
    prob2 = prob.copy()
    prob2[0, 0, 4] = 0.01
    metric2 = MaxF()
    metric2.update(two_class_logits(prob2), gt)
    assert metric2.compute()["maxF"] == pytest.approx(81.25, rel=1e-9)


def test_maxf_pooled_not_per_image_mean() -> None:
    # Image A: probs (0.92, x), labels (1, ignore): F = 1 for tau <= 0.90 -> maxF_A = 100.
    # Image B: probs (0.92, 0.12), labels (0, 1): tau <= 0.10: P 1/2, R 1 -> 0.5652; above: TP 0 -> 0.
    #          maxF_B = 56.52; per-image mean = 78.26.
    # Pooled: probs (0.92, 0.92, 0.12), labels (1, 0, 1): tau <= 0.10: P 2/3, R 1 -> 0.7222;
    #          0.15-0.90: P 1/2, R 1/2 -> 0.5.  maxF = 72.22.
    pa = np.array([[[0.92, 0.5]]])
    ga = np.array([[[1, IGNORE_INDEX]]])
    pb = np.array([[[0.92, 0.12]]])
    gb = np.array([[[0, 1]]])
    pooled = 100.0 * 1.3 * (2 / 3) / (0.3 * (2 / 3) + 1)
    per_image_mean = (100.0 + 100.0 * 1.3 * 0.5 / (0.3 * 0.5 + 1)) / 2
    two_updates = MaxF()
    two_updates.update(two_class_logits(pa), torch.tensor(ga))
    two_updates.update(two_class_logits(pb), torch.tensor(gb))
    one_update = MaxF()
    one_update.update(two_class_logits(np.concatenate([pa, pb])), torch.tensor(np.concatenate([ga, gb])))
    assert two_updates.compute()["maxF"] == pytest.approx(pooled, rel=1e-9)
    assert one_update.compute()["maxF"] == pytest.approx(pooled, rel=1e-9)
    assert abs(pooled - per_image_mean) > 1.0


def test_maxf_matches_numpy_for_softmax_and_sigmoid_inputs() -> None:
    rng = np.random.default_rng(4)
    logits2 = rng.normal(size=(3, 2, 6, 7)) * 2
    gt = rng.integers(0, 2, (3, 6, 7))
    gt[rng.random(gt.shape) < 0.2] = IGNORE_INDEX
    sal = MaxF()
    sal.update(torch.tensor(logits2), torch.tensor(gt))
    prob2 = np_sigmoid(logits2[:, 1] - logits2[:, 0])  # two-class softmax, class 1
    assert sal.compute()["maxF"] == pytest.approx(np_maxf(prob2, gt), rel=1e-9)

    logits1 = rng.normal(size=(3, 1, 6, 7)) * 2
    edge_gt = gt[:, None].astype(np.float32)
    edge = EdgePixelMaxF()
    edge.update(torch.tensor(logits1), torch.tensor(edge_gt))
    result = edge.compute()
    assert set(result) == {"pixel_maxF"} == set(EdgePixelMaxF.higher_is_better)
    assert result["pixel_maxF"] == pytest.approx(np_maxf(np_sigmoid(logits1[:, 0]), gt), rel=1e-9)


def test_maxf_counts_probability_equal_to_threshold_as_positive() -> None:
    # 1-channel logit 0 -> sigmoid exactly 0.5 = the 10th threshold; label 1. Logit of 0.47, label 0.
    # ">=": tau = 0.50 -> PP 1, TP 1, AP 1 -> P = R = 1 -> F = 1 -> maxF = 100.
    # ">" would give PP 0 at 0.50 and at tau <= 0.45 P = 1/2, R = 1 -> F = 0.5652 -> maxF = 56.52.
    logits = torch.tensor([[[[0.0, math.log(0.47 / 0.53)]]]])
    gt = torch.tensor([[[[1.0, 0.0]]]])
    metric = EdgePixelMaxF()
    metric.update(logits, gt)
    assert metric.compute()["pixel_maxF"] == pytest.approx(100.0)
    sal = MaxF()
    sal.update(torch.cat([torch.zeros_like(logits), logits], dim=1), gt[:, 0].long())
    assert sal.compute()["maxF"] == pytest.approx(100.0)


def test_maxf_with_no_positive_is_zero() -> None:
    metric = MaxF()
    metric.update(torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.int64))
    assert metric.compute()["maxF"] == 0.0


# ---------------------------------------------------------------- multi-task and distributed sums


def random_eval_batch(rng: np.random.Generator, b: int = 2, h: int = 4, w: int = 5) -> tuple[dict, dict]:
    semseg = rng.integers(0, 6, (b, h, w))
    semseg[rng.random(semseg.shape) < 0.2] = IGNORE_INDEX
    parts = rng.integers(0, 7, (b, h, w))
    parts[rng.random(parts.shape) < 0.2] = IGNORE_INDEX
    sal = rng.integers(0, 2, (b, h, w))
    sal[rng.random(sal.shape) < 0.2] = IGNORE_INDEX
    normals = rng.normal(size=(b, 3, h, w))
    normals[:, :, rng.random((h, w)) < 0.2] = IGNORE_INDEX
    depth = rng.uniform(0.5, 8.0, (b, 1, h, w))
    depth[rng.random(depth.shape) < 0.2] = IGNORE_INDEX
    edge = (rng.random((b, 1, h, w)) < 0.3).astype(np.float32)
    edge[rng.random(edge.shape) < 0.2] = IGNORE_INDEX
    preds = {
        "semseg": rng.normal(size=(b, 6, h, w)),
        "human_parts": rng.normal(size=(b, 7, h, w)),
        "sal": rng.normal(size=(b, 2, h, w)) * 2,
        "normals": rng.normal(size=(b, 3, h, w)),
        "depth": rng.uniform(-1.0, 9.0, (b, 1, h, w)),
        "edge": rng.normal(size=(b, 1, h, w)) * 2,
    }
    batch = {"semseg": semseg, "human_parts": parts, "sal": sal, "normals": normals, "depth": depth, "edge": edge}
    return preds, batch


def torchify(preds: dict, batch: dict) -> tuple[dict, dict]:
    tp = {k: torch.tensor(v, dtype=torch.float32) for k, v in preds.items()}
    tb = {
        k: torch.tensor(v, dtype=torch.int64 if k in ("semseg", "human_parts", "sal") else torch.float32)
        for k, v in batch.items()
    }
    return tp, tb


TASKS = ["semseg", "human_parts", "sal", "normals", "depth", "edge"]


def test_summed_states_of_two_ranks_equal_one_process() -> None:
    rng = np.random.default_rng(9)
    chunks = [random_eval_batch(rng) for _ in range(4)]
    rank0, rank1, single = (MultiTaskMetrics(TASKS, num_semseg_classes=6) for _ in range(3))
    for k, (p, b) in enumerate(chunks):
        tp, tb = torchify(p, b)
        (rank0 if k % 2 == 0 else rank1).update(tp, tb)
        single.update(tp, tb)
    for s0, s1 in zip(rank0.states(), rank1.states()):
        s0 += s1  # what all_reduce(SUM) does in place on rank 0
    got, want = rank0.compute(), single.compute()
    assert set(got) == set(TASKS)
    for task in TASKS:
        for key, value in want[task].items():
            assert got[task][key] == pytest.approx(value, rel=1e-9), (task, key)

    # And the pooled values agree with the NumPy references on all data.
    cat = {k: np.concatenate([c[0][k] for c in chunks]) for k in chunks[0][0]}
    gts = {k: np.concatenate([c[1][k] for c in chunks]) for k in chunks[0][1]}
    assert got["semseg"]["mIoU"] == pytest.approx(np_miou(cat["semseg"], gts["semseg"], 6), rel=1e-6)
    assert got["human_parts"]["mIoU"] == pytest.approx(np_miou(cat["human_parts"], gts["human_parts"], 7), rel=1e-6)
    sal_prob = np_sigmoid(cat["sal"][:, 1].astype(np.float32) - cat["sal"][:, 0].astype(np.float32))
    assert got["sal"]["maxF"] == pytest.approx(np_maxf(sal_prob, gts["sal"]), rel=1e-6)
    assert got["normals"]["mean_angle"] == pytest.approx(
        np_mean_angle(cat["normals"].astype(np.float32), gts["normals"].astype(np.float32)), abs=1e-3
    )
    assert got["depth"]["rmse"] == pytest.approx(
        np_rmse(cat["depth"].astype(np.float32), gts["depth"].astype(np.float32)), rel=1e-5
    )
    edge_prob = np_sigmoid(cat["edge"][:, 0].astype(np.float32))
    assert got["edge"]["pixel_maxF"] == pytest.approx(np_maxf(edge_prob, gts["edge"][:, 0]), rel=1e-6)


def test_multitask_metrics_reset_states_and_directions() -> None:
    rng = np.random.default_rng(10)
    metrics = MultiTaskMetrics(TASKS, num_semseg_classes=6)
    states_before = metrics.states()
    assert all(s.dtype == torch.float64 and s.dim() == 1 for s in states_before)
    metrics.update(*torchify(*random_eval_batch(rng)))
    assert any(bool(s.abs().sum() > 0) for s in metrics.states())
    metrics.reset()
    assert all(bool(s.abs().sum() == 0) for s in metrics.states())
    directions = metrics.higher_is_better()
    assert directions == {
        "semseg": {"mIoU": True, "pixel_acc": True},
        "human_parts": {"mIoU": True, "pixel_acc": True},
        "sal": {"maxF": True, "mIoU": True},
        "normals": {
            "mean_angle": False,
            "median_angle": False,
            "rmse_angle": False,
            "within_11_25": True,
            "within_22_5": True,
            "within_30": True,
        },
        "depth": {"rmse": False, "abs_rel": False, "log10": False, "delta1": True, "delta2": True, "delta3": True},
        "edge": {"pixel_maxF": True},
    }
    computed = metrics.compute()
    assert {t: set(v) for t, v in computed.items()} == {t: set(v) for t, v in directions.items()}
    with pytest.raises(ValueError):
        MultiTaskMetrics(["semseg", "flow"], 6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_state_follows_device_of_first_update() -> None:
    metric = DepthRMSE()
    assert metric.state.device.type == "cpu"
    metric.update(torch.ones(1, 1, 2, 2, device="cuda"), torch.full((1, 1, 2, 2), 2.0, device="cuda"))
    assert metric.state.device.type == "cuda"
    assert metric.compute()["rmse"] == pytest.approx(1.0)


def test_the_direction_of_a_metric_comes_from_its_class() -> None:
    from demt_exp.metrics.registry import lower_is_better

    lower = {"depth/rmse": True, "normals/mean_angle": True, "semseg/loss": True, "edge/loss": True}
    higher = {"semseg/mIoU": False, "edge/odsF": False, "normals/within_30": False, "multi_task/delta_m": False}
    assert {m: lower_is_better(m) for m in {**lower, **higher}} == {**lower, **higher}
    for unknown in ("semseg/accuracy", "nothing/mIoU", "semseg"):
        with pytest.raises(ValueError, match="direction is unknown"):
            lower_is_better(unknown)
