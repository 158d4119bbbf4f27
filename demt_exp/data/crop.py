"""Undo the validation pipeline's centred padding: predictions back to the original image extent.

A batch's meta holds each image's original (H, W) in "size" and the padding offsets (top, left)
in "pad" (real data sets; images that were never padded have no "pad"). Files meant for other
tools (SEISM edge maps, prediction PNGs) are written at the original size, as the official code
writes them (SPEC 4), with edge strength quantised as its writer does (`quantised_edge`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor


def _pair(value: Tensor, index: int) -> tuple[int, int]:
    """Row `index` of a collated (B, 2) int64 meta entry."""
    row = value[index] if value.dim() == 2 else value
    return int(row[0]), int(row[1])


def original_extent(meta: Mapping[str, Any], index: int, padded_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of image `index` of a collated batch inside its padded maps."""
    height, width = _pair(meta["size"], index) if "size" in meta else padded_hw
    top, left = _pair(meta["pad"], index) if "pad" in meta else (0, 0)
    if top + height > padded_hw[0] or left + width > padded_hw[1]:
        raise ValueError(
            f"image {index}: original extent {height}x{width} at ({top}, {left}) "
            f"does not fit the {padded_hw[0]}x{padded_hw[1]} prediction"
        )
    return top, left, height, width


def crop_to_original(maps: Tensor, meta: Mapping[str, Any], index: int) -> Tensor:
    """maps[index] (C, H_pad, W_pad) cropped to the image's original extent (C, H, W)."""
    top, left, height, width = original_extent(meta, index, (maps.shape[-2], maps.shape[-1]))
    return maps[index, :, top : top + height, left : left + width]


def image_id(meta: Mapping[str, Any], index: int) -> str:
    ids = meta["id"]
    return str(ids[index] if isinstance(ids, (list, tuple)) else ids)


def quantised_edge(prob: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """Edge probabilities as the official code writes its PNGs: 255 * p in float32, truncated to uint8.
    The one definition of that rounding, for tensors (on any device) and arrays alike."""
    if isinstance(prob, Tensor):
        return (255.0 * prob.float()).to(torch.uint8)
    return (np.float32(255) * np.asarray(prob, dtype=np.float32)).astype(np.uint8)


def edge_uint8(logits: Tensor) -> Tensor:
    """8-bit edge strength of a prediction's logits z: `quantised_edge(sigmoid(z))`."""
    return quantised_edge(torch.sigmoid(logits.float()))  # type: ignore[return-value]
