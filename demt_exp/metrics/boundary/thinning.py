"""MATLAB `bwmorph(mask, 'thin', Inf)` for boundary evaluation, fast on sparse edge maps.

MATLAB documents its 'thin' operation as the two-subiteration algorithm of Lam, Lee and Suen
(1992, p. 879): in each subiteration a foreground pixel is deleted when its 8-neighbourhood
passes G1 (one 4-connected run of foreground neighbours), G2 (2 <= min(N1, N2) <= 3) and G3
(first subiteration) or G3' (second), all decided from the image as it was at the start of
the subiteration; pixels outside the image count as background; `Inf` repeats whole
iterations until one deletes nothing. `demt_exp.data.edges.thin` implements exactly that on
the full image (its tables are the ones used here) and is the plain formulation this module
is tested against.

Why a second implementation: SEISM thins the binarised prediction at every threshold (99 or
101 per image), and the full-image version touches every pixel in every subiteration. A
pixel's decision depends only on its 3x3 neighbourhood, so after the first pass only pixels
next to a deletion of the last two subiterations can change their answer; this version
evaluates just those. Same decisions, same order, same result.
"""

from __future__ import annotations

import numpy as np

from demt_exp.data.edges import DELETE_FIRST, DELETE_SECOND

__all__ = ["bwmorph_thin", "thin_pixels"]


def _neighbour_offsets(padded_width: int) -> np.ndarray:
    """Flat offsets of the 8 neighbours in bit order: E, NE, N, NW, W, SW, S, SE."""
    w = padded_width
    return np.array([1, 1 - w, -w, -1 - w, -1, w - 1, w, w + 1], dtype=np.int64)


def _codes(flat: np.ndarray, pixels: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """8-bit neighbourhood code of each pixel (bit k set when neighbour k is foreground)."""
    codes = np.zeros(pixels.shape, dtype=np.uint8)
    for bit, offset in enumerate(offsets):
        codes |= flat[pixels + offset] << np.uint8(bit)
    return codes


def bwmorph_thin(mask: np.ndarray) -> np.ndarray:
    """Thin a 2-D binary mask to 1-px lines as MATLAB `bwmorph(mask, 'thin', Inf)` (bool)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"bwmorph_thin expects a 2-D mask, got shape {mask.shape}")
    kept = thin_pixels(np.flatnonzero(mask), mask.shape)
    out = np.zeros(mask.size, dtype=bool)
    out[kept] = True
    return out.reshape(mask.shape)


def thin_pixels(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`bwmorph_thin` on a mask given as flat (row-major) pixel indices; returns the kept ones."""
    h, w = shape
    pixels = np.asarray(pixels, dtype=np.int64)
    if pixels.size == 0:
        return pixels
    # Work in a zero-bordered (h + 2, w + 2) image so every neighbour read is in bounds.
    padded_pixels = pixels + (pixels // w) * 2 + (w + 3)
    flat = np.zeros((h + 2) * (w + 2), dtype=np.uint8)
    flat[padded_pixels] = 1
    offsets = _neighbour_offsets(w + 2)
    around = np.concatenate([offsets, [0]])
    # stamp[p] = position of p in the last touched list: a linear-time de-duplication.
    stamp = np.zeros(flat.shape, dtype=np.int64)
    candidates = padded_pixels
    recent: list[np.ndarray] = []  # deletions of the last two subiterations
    idle_subiterations = 0
    tables = (DELETE_FIRST, DELETE_SECOND)
    step = 0
    while candidates.size and idle_subiterations < 2:
        deleted = candidates[tables[step % 2][_codes(flat, candidates, offsets)]]
        flat[deleted] = 0
        idle_subiterations = 0 if deleted.size else idle_subiterations + 1
        recent = (recent + [deleted])[-2:]
        step += 1
        if step == 1:  # the second table has not seen any pixel yet
            candidates = candidates[flat[candidates] != 0]
            continue
        touched = np.concatenate([(d[:, None] + around).reshape(-1) for d in recent])
        touched = touched[flat[touched] != 0]
        order = np.arange(touched.size)
        stamp[touched] = order
        candidates = touched[stamp[touched] == order]
    return pixels[flat[padded_pixels] != 0]
