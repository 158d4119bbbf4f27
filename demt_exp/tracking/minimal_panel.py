"""A minimal prediction panel, standing in until `demt_exp.visualize` (the evaluation suite's
panels) is on this branch; same signature, so it is replaced by deleting this file's import."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image
from torch import Tensor


def _rgb(task: str, values: Tensor) -> np.ndarray:
    """H x W x 3 uint8 of one task map: labels by a fixed hash palette, 3 channels as unit vectors, else grey."""
    array = values.detach().float().cpu().numpy()
    if array.ndim == 3 and array.shape[0] not in (1, 3):  # class scores -> labels
        array = array.argmax(0)
    if array.ndim == 2 and task in ("semseg", "human_parts"):
        labels = array.astype(np.int64) % 256
        palette = (np.arange(256)[:, None] * np.array([37, 91, 173])[None]) % 256
        return palette[labels].astype(np.uint8)
    if array.ndim == 3 and array.shape[0] == 3:
        return (np.clip((array.transpose(1, 2, 0) + 1) / 2, 0, 1) * 255).astype(np.uint8)
    grey = array.reshape(array.shape[-2:]) if array.ndim == 3 else array
    finite = np.isfinite(grey)
    low, high = (grey[finite].min(), grey[finite].max()) if finite.any() else (0.0, 1.0)
    scaled = np.where(finite, (grey - low) / max(high - low, 1e-8), 0)
    return np.repeat((scaled * 255).astype(np.uint8)[..., None], 3, axis=2)


def prediction_panel(image: Tensor, preds: Mapping[str, Tensor], targets: Mapping[str, Tensor] | None = None) -> Image.Image:
    """Top row: the input and each task's prediction; bottom row: the ground truth where given."""
    picture = image.detach().float().cpu().numpy().transpose(1, 2, 0)
    picture = ((picture - picture.min()) / max(float(picture.max() - picture.min()), 1e-8) * 255).astype(np.uint8)
    top = [picture] + [_rgb(t, p) for t, p in preds.items()]
    rows = [np.concatenate(top, axis=1)]
    if targets:
        bottom = [np.zeros_like(picture)] + [_rgb(t, targets[t]) if t in targets else np.zeros_like(picture) for t in preds]
        rows.append(np.concatenate(bottom, axis=1))
    return Image.fromarray(np.concatenate(rows, axis=0))
