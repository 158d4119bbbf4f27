"""SEISM boundary evaluation on hand-made maps whose counts and scores are derived by hand.

Most cases use a 20 x 20 image with maxDist 0.075: radius = 0.075 * sqrt(800) = 2.121 px, so
pixel pairs with dy^2 + dx^2 in {0, 1, 2, 4} may match and anything at 3 px (9) or at (2, 1)
(5) may not.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from demt_exp.metrics.boundary.counts import (
    BoundaryMetric,
    gt_boundary_map,
    image_counts,
    png_values,
)
from demt_exp.metrics.boundary.protocol import (
    ATRC_THRESHOLDS,
    INVPT_THRESHOLDS,
    BoundaryProtocol,
    atrc_protocol,
    boundary_protocol,
    invpt_protocol,
)
from demt_exp.metrics.boundary.thinning import bwmorph_thin

ONE_THRESHOLD = BoundaryProtocol("test", (0.5,), "ge", False, 0.075)


def _vertical_line(column: int, rows: range = range(2, 18), size: int = 20) -> np.ndarray:
    image = np.zeros((size, size), dtype=np.uint8)
    image[list(rows), column] = 200
    return image


def _counts(pred: np.ndarray, gt: np.ndarray, protocol: BoundaryProtocol = ONE_THRESHOLD) -> list[int]:
    return image_counts(pred, gt != 0, protocol)[0].tolist()


def test_a_line_shifted_within_the_tolerance_matches_every_pixel() -> None:
    gt = _vertical_line(5) > 0
    # 2 px away (d^2 = 4 <= 4.5): each of the 16 predicted pixels pairs with the GT pixel in its row.
    assert _counts(_vertical_line(7), gt) == [16, 16, 16, 16]


def test_a_line_shifted_beyond_the_tolerance_matches_nothing() -> None:
    gt = _vertical_line(5) > 0
    assert _counts(_vertical_line(8), gt) == [0, 16, 0, 16]  # 3 px: d^2 = 9 > 4.5


def test_spurious_pixels_count_as_predicted_but_unmatched() -> None:
    gt = _vertical_line(5) > 0
    pred = _vertical_line(5)
    for y, x in [(3, 15), (10, 17), (16, 12)]:  # isolated, far from the line; thinning keeps them
        pred[y, x] = 255
    assert _counts(pred, gt) == [16, 19, 16, 16]


def test_two_predictions_compete_for_one_ground_truth_pixel() -> None:
    gt = np.zeros((20, 20), dtype=bool)
    gt[10, 10] = True
    pred = np.zeros((20, 20), dtype=np.uint8)
    pred[10, 8] = pred[10, 12] = 255  # both within 2 px of the GT pixel, not adjacent to each other
    # One-to-one: only one of them can take the pixel (a distance transform would count both).
    assert _counts(pred, gt) == [1, 2, 1, 1]


def test_one_to_one_matching_finds_the_assignment_that_matches_both() -> None:
    gt = np.zeros((20, 20), dtype=bool)
    gt[10, 10] = gt[10, 13] = True
    pred = np.zeros((20, 20), dtype=np.uint8)
    # (10, 11) is near both GT pixels, (10, 8) only near (10, 10): a greedy nearest choice for
    # (10, 11) would leave (10, 8) unmatched; the maximum matching pairs 8-10 and 11-13.
    pred[10, 8] = pred[10, 11] = 255
    assert _counts(pred, gt) == [2, 2, 2, 2]


def test_pairs_at_exactly_the_radius_match_as_in_bsds() -> None:
    # 3 x 4 image: diagonal 5, maxDist 0.4 -> radius exactly 2.0 px; BSDS keeps d^2 <= r^2.
    protocol = BoundaryProtocol("test", (0.5,), "ge", False, 0.4)
    gt = np.zeros((3, 4), dtype=bool)
    gt[1, 0] = True
    at_radius = np.zeros((3, 4), dtype=np.uint8)
    at_radius[1, 2] = 255  # distance 2
    beyond = np.zeros((3, 4), dtype=np.uint8)
    beyond[0, 2] = 255  # distance sqrt(5)
    assert _counts(at_radius, gt, protocol) == [1, 1, 1, 1]
    assert _counts(beyond, gt, protocol) == [0, 1, 0, 1]


def test_empty_prediction_and_empty_ground_truth() -> None:
    gt = _vertical_line(5) > 0
    assert _counts(np.zeros((20, 20), np.uint8), gt) == [0, 0, 0, 16]
    assert _counts(_vertical_line(5), np.zeros((20, 20), bool)) == [0, 16, 0, 0]


def test_a_thick_blob_is_thinned_to_its_centre_before_matching() -> None:
    # bwmorph thin of a 3 x 3 block, by hand (Lam-Lee-Suen): subiteration 1 deletes the top
    # row and the right column (G3 holds where the east neighbour is off, or at the top),
    # leaving the 2 x 2 block of rows 9-10, columns 8-9; subiteration 2 deletes all of it but
    # its north-east pixel (the one whose west neighbour is on and whose south-west is on),
    # i.e. the block centre (9, 9); a single pixel then stays.
    pred = np.zeros((20, 20), dtype=np.uint8)
    pred[8:11, 8:11] = 255
    gt = np.zeros((20, 20), dtype=bool)
    gt[9, 9] = True
    assert _counts(pred, gt) == [1, 1, 1, 1]


def test_a_thick_band_becomes_its_middle_column() -> None:
    pred = np.zeros((20, 20), dtype=np.uint8)
    pred[2:18, 4:7] = 255  # a 3-px wide band, rows 2..17, columns 4..6
    # As for the 3 x 3 block: subiteration 1 removes the top row and the east column;
    # subiteration 2 the west column and the bottom row, except column 5 whose west and
    # south-west neighbours are on (G3' fails). Column 5, rows 3..16, is then stable: inner
    # pixels join two runs (G1 fails), the two ends have one neighbour (G2 fails).
    assert np.argwhere(bwmorph_thin(pred)).tolist() == [[row, 5] for row in range(3, 17)]
    # 14 predicted pixels instead of 48, all within tolerance of the GT line in column 5.
    assert _counts(pred, _vertical_line(5) > 0) == [14, 14, 14, 16]


def test_threshold_comparisons_follow_each_reader() -> None:
    gt = np.zeros((20, 20), dtype=bool)
    gt[10, 10] = True
    pred = np.zeros((20, 20), dtype=np.uint8)
    pred[10, 10] = 51  # 51 / 255 == 0.2 exactly in double precision
    ge = BoundaryProtocol("ge", (0.2, 0.21), "ge", False, 0.075)
    gt_only = BoundaryProtocol("gt", (0.2, 0.21), "gt", False, 0.075)
    assert image_counts(pred, gt, ge)[:, 1].tolist() == [1, 0]  # atrc: v / 255 >= t
    assert image_counts(pred, gt, gt_only)[:, 1].tolist() == [0, 0]


def test_float_probabilities_are_quantised_like_the_official_png_writer() -> None:
    probs = np.array([[0.0, 0.5, 0.999, 1.0]], dtype=np.float32)
    assert png_values(probs).tolist() == [[0, 127, 254, 255]]  # 255 p truncated by astype(uint8)
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        png_values(np.array([[1.5]]))
    with pytest.raises(ValueError, match="differ in size"):
        image_counts(np.zeros((4, 5), np.uint8), np.zeros((5, 4), bool), ONE_THRESHOLD)


def test_ground_truth_boundary_is_seg2bmap() -> None:
    labels = np.array([[1, 1, 2], [1, 1, 2], [3, 3, 3]])
    # A pixel is on when its east, south or south-east neighbour differs; the last row looks
    # east only, the last column south only, the corner never.
    expected = [[0, 1, 0], [1, 1, 1], [0, 0, 0]]
    assert gt_boundary_map(labels).astype(int).tolist() == expected
    # A NYUD edge image used as a label map: its 1-px line becomes the 2-px band on both sides.
    edge = np.zeros((5, 5), dtype=np.uint8)
    edge[:, 2] = 255
    assert np.flatnonzero(gt_boundary_map(edge)[2]).tolist() == [1, 2]


def test_protocol_presets_and_fast_variants() -> None:
    assert len(ATRC_THRESHOLDS) == 99 and ATRC_THRESHOLDS[0] == 0.01 and ATRC_THRESHOLDS[-1] == 0.99
    assert len(INVPT_THRESHOLDS) == 101 and INVPT_THRESHOLDS[0] == 0.001 and INVPT_THRESHOLDS[-1] == 0.999
    atrc, invpt = atrc_protocol("nyud"), invpt_protocol("pascal_context")
    assert (atrc.name, atrc.comparison, atrc.nms, atrc.max_dist) == ("atrc", "ge", False, 0.011)
    assert (invpt.name, invpt.nms, invpt.max_dist) == ("invpt", True, 0.0075)
    fast = boundary_protocol("atrc-fast-9thr", "nyud")
    assert fast.name == "atrc-fast-9thr" and fast.thresholds == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    with pytest.raises(ValueError, match="unknown boundary protocol"):
        boundary_protocol("seism", "nyud")
    with pytest.raises(ValueError, match="unknown data set"):
        atrc_protocol("cityscapes")
    with pytest.raises(ValueError, match="comparison must be 'ge' or 'gt'"):
        BoundaryProtocol("bad", (0.5,), ">=", False, 0.011)
    with pytest.raises(ValueError, match="increasing values in"):
        BoundaryProtocol("bad", (0.6, 0.5), "ge", False, 0.011)


def test_metric_state_sums_across_processes_and_records_the_protocol() -> None:
    protocol = BoundaryProtocol("test", (0.3, 0.7), "ge", False, 0.075)
    gt = _vertical_line(5) > 0
    strong = _vertical_line(6)  # 200: on at both thresholds
    weak = _vertical_line(6) // 2  # 100: on at 0.3 only
    whole = BoundaryMetric(protocol)
    parts = [BoundaryMetric(protocol), BoundaryMetric(protocol)]
    for metric, pred in zip(parts, (strong, weak)):
        metric.update_image(pred, gt)
        whole.update_image(pred, gt)
    summed = BoundaryMetric(protocol)
    summed.state = parts[0].state + parts[1].state  # what all_reduce(SUM) does
    assert summed.compute() == whole.compute()
    scores = whole.compute()
    # t = 0.3: both images fully matched -> F = 1; t = 0.7: recall 1/2, precision 1 -> F = 2/3.
    assert scores["odsF"] == pytest.approx(100.0) and scores["ods_threshold"] == 0.3
    assert scores["oisF"] == pytest.approx(100.0) and scores["protocol"] == "test"
    assert whole.num_images == 2


def test_metric_update_takes_logits_like_the_dense_metrics() -> None:
    protocol = BoundaryProtocol("test", (0.5,), "ge", False, 0.075)
    gt = torch.from_numpy(_vertical_line(5) > 0)[None].float()
    logits = torch.full((1, 1, 20, 20), -10.0)
    logits[0, 0, 2:18, 7] = 10.0  # sigmoid ~ 1 on a line 2 px away
    metric = BoundaryMetric(protocol)
    metric.update(logits, gt)
    assert metric.compute()["odsF"] == pytest.approx(100.0)


def test_worker_processes_give_the_same_scores_as_one_process() -> None:
    from demt_exp.metrics.boundary.parallel import evaluate_boundaries
    from demt_exp.metrics.boundary.synthetic import synthetic_edge_pair

    rng = np.random.default_rng(0)
    pairs = [(pred, gt_boundary_map(edge)) for pred, edge in (synthetic_edge_pair(40, 56, rng) for _ in range(3))]
    protocol = atrc_protocol("nyud").fast(9)
    serial = evaluate_boundaries(pairs, protocol, workers=0)
    parallel = evaluate_boundaries(pairs, protocol, workers=2)
    assert torch.equal(serial.state, parallel.state) and serial.num_images == 3
    assert 0 < serial.compute()["odsF"] <= 100
