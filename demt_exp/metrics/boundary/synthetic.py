"""Realistic generated edge maps for the boundary benchmark (no data set needed).

The ground truth is a NYUD-style 1-px edge image: the region boundaries of a random Voronoi
partition. The prediction is what a trained network emits: a smooth ridge a few pixels wide
around slightly displaced curves, weaker or missing in places, plus clutter and noise,
written as 8-bit PNG values like the official code.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from demt_exp.data.crop import quantised_edge

__all__ = ["synthetic_edge_pair"]


def _voronoi_labels(height: int, width: int, regions: int, rng: np.random.Generator) -> np.ndarray:
    seeds = rng.uniform((0, 0), (height, width), size=(regions, 2))
    yy, xx = np.mgrid[0:height, 0:width]
    distance = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    return distance.argmin(axis=-1).astype(np.int32)


def synthetic_edge_pair(
    height: int, width: int, rng: np.random.Generator, regions: int = 14
) -> tuple[np.ndarray, np.ndarray]:
    """(prediction uint8 PNG values, ground-truth edge image uint8 0/255), both (height, width)."""
    labels = _voronoi_labels(height, width, regions, rng)
    edge = np.zeros((height, width), dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    # The network's curves: the true ones, displaced by a smooth field of up to a few pixels.
    shift = [ndimage.gaussian_filter(rng.normal(size=(height, width)), 25) for _ in range(2)]
    shift = [3.0 * s / (np.abs(s).max() + 1e-9) for s in shift]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    warped = ndimage.map_coordinates(edge.astype(np.float64), [yy + shift[0], xx + shift[1]], order=1) > 0.25
    distance = ndimage.distance_transform_edt(~warped)
    sigma = rng.uniform(1.2, 2.5)
    strength = ndimage.gaussian_filter(rng.uniform(size=(height, width)), 15)
    strength = np.clip((strength - strength.min()) / (np.ptp(strength) + 1e-9) * 1.4 - 0.2, 0.0, 1.0)
    ridge = strength * np.exp(-(distance**2) / (2 * sigma**2))
    clutter = ndimage.gaussian_filter(rng.uniform(size=(height, width)), 3)
    clutter = 0.5 * np.clip((clutter - clutter.mean()) / (clutter.std() + 1e-9) - 1.5, 0.0, None)
    prob = np.clip(ridge + clutter + rng.uniform(0.0, 0.015, size=(height, width)), 0.0, 1.0)
    return quantised_edge(prob), edge.astype(np.uint8) * 255  # type: ignore[return-value]
