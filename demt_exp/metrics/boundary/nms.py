"""Structured-edge non-maximum suppression (Dollar's `edgesNms`) as SEISM's invpt reader applies it.

SEISM's `read_one_cont_png.m` does, in single precision, on E = PNG / 255:

    [Ox, Oy] = gradient2(convTri(E, 4));  [Oxx, ~] = gradient2(Ox);  [Oxy, Oyy] = gradient2(Oy);
    O = mod(atan(Oyy .* sign(-Oxy) ./ (Oxx + 1e-5)), pi);
    E = edgesNmsMex(E, O, 1, 5, 1.01, 1);

* convTri(I, r) for integer r >= 1: separable triangle filter [1 .. r+1 .. 1] / (r+1)^2 over
  the image padded by r with mirrored edges ('symmetric': the border pixel repeats).
* gradient2: MATLAB `gradient` - central half-differences inside, one-sided at the borders.
* edgesNms: a non-zero pixel e is suppressed when e * m < E at x +- d (cos O, sin O) for
  d = 1..r, E read by bilinear interpolation with coordinates clamped to [0, size - 1.001];
  afterwards the s outermost rows and columns are scaled by (distance to border) / s (the
  outermost one to 0), columns first, then rows.
x is the column and y the row, so the orientation is measured from the x axis towards +rows.
"""

from __future__ import annotations

import numpy as np

__all__ = ["conv_tri", "edge_orientation", "edges_nms", "gradient2", "nms_edge_map"]


def conv_tri(image: np.ndarray, radius: int) -> np.ndarray:
    """Triangle blur of integer radius >= 1 with symmetric padding, float32 (convTri)."""
    if radius < 1 or int(radius) != radius:
        raise ValueError(f"conv_tri supports integer radius >= 1, got {radius}")
    r = int(radius)
    kernel = np.concatenate([np.arange(1, r + 2), np.arange(r, 0, -1)]).astype(np.float32) / np.float32((r + 1) ** 2)
    padded = np.pad(np.asarray(image, dtype=np.float32), r, mode="symmetric")
    rows = sum(kernel[k] * padded[k : k + padded.shape[0] - 2 * r, :] for k in range(2 * r + 1))
    return sum(kernel[k] * rows[:, k : k + rows.shape[1] - 2 * r] for k in range(2 * r + 1)).astype(np.float32)


def _gradient_along(values: np.ndarray, axis: int) -> np.ndarray:
    out = np.empty_like(values)
    v = np.moveaxis(values, axis, 0)
    o = np.moveaxis(out, axis, 0)
    if v.shape[0] < 2:
        o[...] = 0
        return out
    o[0] = v[1] - v[0]
    o[-1] = v[-1] - v[-2]
    o[1:-1] = (v[2:] - v[:-2]) / np.float32(2)
    return out


def gradient2(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d/dx along columns, d/dy along rows) as MATLAB gradient, float32."""
    values = np.asarray(image, dtype=np.float32)
    return _gradient_along(values, 1), _gradient_along(values, 0)


def edge_orientation(edges: np.ndarray) -> np.ndarray:
    """Edge normal orientation in [0, pi) from the second derivatives of a radius-4 blur."""
    ox, oy = gradient2(conv_tri(edges, 4))
    oxx, _ = gradient2(ox)
    oxy, oyy = gradient2(oy)
    with np.errstate(divide="ignore", invalid="ignore"):
        angle = np.arctan(oyy * np.sign(-oxy) / (oxx + np.float32(1e-5)))
    return np.mod(angle, np.float32(np.pi)).astype(np.float32)


def _interp(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear read at (x = column, y = row), clamped as edgesNmsMex does."""
    h, w = image.shape
    x = np.clip(x, np.float32(0), np.float32(w - 1.001))
    y = np.clip(y, np.float32(0), np.float32(h - 1.001))
    x0 = x.astype(np.int64)
    y0 = y.astype(np.int64)
    dx0 = x - x0
    dy0 = y - y0
    dx1 = np.float32(1) - dx0
    dy1 = np.float32(1) - dy0
    return (
        image[y0, x0] * dx1 * dy1
        + image[y0, x0 + 1] * dx0 * dy1
        + image[y0 + 1, x0] * dx1 * dy0
        + image[y0 + 1, x0 + 1] * dx0 * dy0
    )


def _border_factors(length: int, s: int) -> np.ndarray:
    factors = np.ones(length, dtype=np.float32)
    for i in range(s):
        scale = np.float32(i / np.float32(s)) if s else np.float32(1)
        factors[i] *= scale
        factors[length - 1 - i] *= scale
    return factors


def edges_nms(
    edges: np.ndarray, orientation: np.ndarray, radius: int = 1, border: int = 5, multiplier: float = 1.01
) -> np.ndarray:
    """edgesNmsMex(E, O, r, s, m): keep pixels not exceeded (x m) along their normal, damp borders."""
    e0 = np.asarray(edges, dtype=np.float32)
    if e0.ndim != 2 or orientation.shape != e0.shape:
        raise ValueError(f"edges_nms expects matching 2-D maps, got {e0.shape} and {orientation.shape}")
    h, w = e0.shape
    out = e0.copy()
    ys, xs = np.nonzero(e0)
    if ys.size:
        e = e0[ys, xs] * np.float32(multiplier)
        o = orientation[ys, xs].astype(np.float32)
        cos_o, sin_o = np.cos(o), np.sin(o)
        suppressed = np.zeros(ys.size, dtype=bool)
        for d in range(-radius, radius + 1):
            if d:
                step = np.float32(d)
                neighbour = _interp(e0, xs.astype(np.float32) + step * cos_o, ys.astype(np.float32) + step * sin_o)
                suppressed |= e < neighbour
        out[ys[suppressed], xs[suppressed]] = 0
    s = min(border, w // 2, h // 2)
    out = out * _border_factors(w, s)[None, :]
    return out * _border_factors(h, s)[:, None]


def nms_edge_map(png_values: np.ndarray) -> np.ndarray:
    """The invpt reader: im2single(PNG) -> orientation -> edgesNms(r=1, s=5, m=1.01), float32."""
    edges = np.asarray(png_values, dtype=np.float32) / np.float32(255)
    return edges_nms(edges, edge_orientation(edges), 1, 5, 1.01)
