"""Structured-edge NMS (edgesNms r=1, s=5, m=1.01) and its helpers on hand-made maps."""

from __future__ import annotations

import numpy as np

from demt_exp.metrics.boundary.nms import (
    conv_tri,
    edge_orientation,
    edges_nms,
    gradient2,
    nms_edge_map,
)

BORDER_RAMP = np.array([0, 0.2, 0.4, 0.6, 0.8] + [1.0] * 10 + [0.8, 0.6, 0.4, 0.2, 0], dtype=np.float32)


def _ridge(profile: dict[int, float], vertical: bool) -> np.ndarray:
    edges = np.zeros((20, 20), dtype=np.float32)
    for index, value in profile.items():
        if vertical:
            edges[:, index] = value
        else:
            edges[index, :] = value
    return edges


RIDGE = {8: 0.2, 9: 0.6, 10: 1.0, 11: 0.6, 12: 0.2}


def test_triangle_blur_and_gradient_by_hand() -> None:
    impulse = np.zeros((11, 11), dtype=np.float32)
    impulse[5, 5] = 1
    f = np.array([1, 2, 3, 4, 5, 4, 3, 2, 1], dtype=np.float32) / 25
    blurred = conv_tri(impulse, 4)
    np.testing.assert_allclose(blurred[1:10, 1:10], np.outer(f, f), rtol=1e-6)
    assert abs(float(blurred.sum()) - 1) < 1e-6
    np.testing.assert_allclose(conv_tri(np.full((6, 7), 0.25, np.float32), 4), 0.25, rtol=1e-6)  # mirrored border
    gx, gy = gradient2(np.array([[1, 2, 4, 7]], dtype=np.float32))
    assert gx.tolist() == [[1.0, 1.5, 2.5, 3.0]] and gy.tolist() == [[0.0, 0.0, 0.0, 0.0]]


def test_a_vertical_ridge_keeps_its_crest_with_damped_ends() -> None:
    edges = _ridge(RIDGE, vertical=True)
    orientation = edge_orientation(edges)
    assert np.all(orientation == 0)  # normal along x: Oy and hence Oxy vanish
    out = edges_nms(edges, orientation, 1, 5, 1.01)
    # Crest 1.0 beats 0.6 on both sides; 0.6 * 1.01 < 1.0 and 0.2 * 1.01 < 0.6 are suppressed.
    expected = np.zeros((20, 20), dtype=np.float32)
    expected[:, 10] = BORDER_RAMP  # rows within 5 px of the top and bottom scaled by y / 5
    np.testing.assert_allclose(out, expected, atol=1e-7)


def test_an_exactly_horizontal_ridge_is_not_thinned_because_sign_of_zero_is_zero() -> None:
    # O = atan(Oyy * sign(-Oxy) / (Oxx + 1e-5)) and Oxy = 0 here, so O = 0 points along the
    # ridge: the neighbours compared are equal and 1.01 * e beats them (MATLAB behaviour).
    edges = _ridge(RIDGE, vertical=False)
    out = edges_nms(edges, edge_orientation(edges), 1, 5, 1.01)
    np.testing.assert_allclose(out, edges * BORDER_RAMP[None, :], atol=1e-7)


def test_png_reader_scales_by_255_first() -> None:
    png = np.round(_ridge(RIDGE, vertical=True) * 255).astype(np.uint8)
    out = nms_edge_map(png)
    assert np.flatnonzero(out[10]).tolist() == [10] and out[10, 10] == np.float32(255) / np.float32(255)
