"""Pictures of predictions: colour-mapped task maps and side-by-side panels (input, each task's
prediction and, when known, its ground truth). Used by `evaluate` and `predict`, and by any
logger that wants images; everything works on one image's (C, H, W) tensors and returns
uint8 H x W x 3 arrays or PIL images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from demt_exp.data.crop import edge_uint8
from demt_exp.data.tasks import IGNORE_INDEX
from demt_exp.data.transforms import IMAGENET_MEAN, IMAGENET_STD

LABEL_TASKS = ("semseg", "human_parts")
TITLE_HEIGHT = 14
GAP = 2
MIN_TILE = 128  # small images are enlarged (nearest neighbour, integer factor) so titles and labels stay legible
# Perceptually ordered control points (viridis at 0, 1/4, 1/2, 3/4, 1); near is dark, far is bright.
_DEPTH_POINTS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64)


def label_palette() -> np.ndarray:
    """The fixed 256-colour PASCAL VOC palette (bit-interleaved class index); 255 = ignore is light grey."""
    palette = np.zeros((256, 3), np.uint8)
    for index in range(256):
        c, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[index] = (r, g, b)
    return palette


PALETTE = label_palette()


def label_png(labels: np.ndarray) -> Image.Image:
    """Index map -> palette PNG image (mode 'P'): the file stores the class indices themselves."""
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError(
            f"label map values must lie in [0, 255] for a palette PNG, got [{labels.min()}, {labels.max()}]"
        )
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(PALETTE.flatten().tolist())
    return image


def colour_labels(labels: np.ndarray) -> np.ndarray:
    return PALETTE[labels.astype(np.uint8)]


def colour_depth(depth: np.ndarray, low: float, high: float, valid: np.ndarray | None = None) -> np.ndarray:
    """Depth (H, W) -> RGB over [low, high] (clipped); invalid pixels black."""
    t = np.clip((depth - low) / max(high - low, 1e-6), 0.0, 1.0) * (len(_DEPTH_POINTS) - 1)
    lower = np.minimum(t.astype(np.int64), len(_DEPTH_POINTS) - 2)
    frac = (t - lower)[..., None]
    rgb = (_DEPTH_POINTS[lower] * (1 - frac) + _DEPTH_POINTS[lower + 1] * frac).astype(np.uint8)
    if valid is not None:
        rgb[~valid] = 0
    return rgb


def colour_normals(normals: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(3, H, W) vectors -> RGB = (unit vector + 1) / 2; invalid pixels black."""
    norm = np.linalg.norm(normals, axis=0, keepdims=True)
    unit = normals / np.where(norm == 0, 1.0, norm)
    rgb = np.round((unit.transpose(1, 2, 0) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    if valid is not None:
        rgb[~valid] = 0
    return rgb


def grey(values: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> RGB."""
    return np.repeat(values.astype(np.uint8)[..., None], 3, axis=2)


def denormalise(image: Tensor) -> np.ndarray:
    """ImageNet-normalised (3, H, W) -> uint8 RGB (H, W, 3)."""
    rgb = image.detach().float().cpu().numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.round(rgb * 255.0).clip(0, 255).astype(np.uint8)


def depth_range(pred: Tensor, target: Tensor | None) -> tuple[float, float]:
    """One range for prediction and ground truth: the labelled depths if known, else the prediction's."""
    source = pred.detach().float().clamp_min(0)
    if target is not None:
        valid = target[(target != IGNORE_INDEX) & (target != 0)]
        source = valid if valid.numel() else source
    return float(source.min()), float(source.max())


def predicted_map(task: str, pred: Tensor) -> np.ndarray:
    """What a task's file stores: class indices (semseg, parts), uint8 probability (sal, edge),
    metres (depth) or raw vectors (normals)."""
    pred = pred.detach().float().cpu()
    if task in LABEL_TASKS:
        return pred.argmax(0).numpy().astype(np.uint8)
    if task == "sal":
        prob = torch.softmax(pred, 0)[1] if pred.shape[0] == 2 else torch.sigmoid(pred[0])
        return (255.0 * prob).to(torch.uint8).numpy()
    if task == "edge":
        return edge_uint8(pred[0]).numpy()
    if task == "depth":
        return pred[0].clamp_min(0).numpy()
    if task == "normals":
        return pred.numpy()
    raise ValueError(f"no visualisation for task {task!r}")


def prediction_rgb(task: str, pred: Tensor, depth_limits: tuple[float, float] | None = None) -> np.ndarray:
    """A task's prediction (C, H, W) as an RGB picture."""
    values = predicted_map(task, pred)
    if task in LABEL_TASKS:
        return colour_labels(values)
    if task == "depth":
        return colour_depth(values, *(depth_limits or (float(values.min()), float(values.max()))))
    if task == "normals":
        return colour_normals(values)
    return grey(values)


def target_rgb(task: str, target: Tensor, depth_limits: tuple[float, float] | None = None) -> np.ndarray:
    """A task's label map as an RGB picture (ignored pixels: palette grey for labels, black otherwise)."""
    t = target.detach().float().cpu().numpy()
    t = t[0] if t.ndim == 3 and t.shape[0] == 1 else t
    if task in LABEL_TASKS:
        return colour_labels(t)
    if task == "normals":
        return colour_normals(t, valid=(t != IGNORE_INDEX).all(axis=0))
    valid = t != IGNORE_INDEX
    if task == "depth":
        valid &= t != 0
        low, high = depth_limits or (float(t[valid].min(initial=0)), float(t[valid].max(initial=1)))
        return colour_depth(t, low, high, valid)
    rgb = grey(np.where(valid, t * 255.0, 0).clip(0, 255))  # sal and edge are 0/1 labels
    rgb[~valid] = (128, 0, 0)
    return rgb


def panel(rows: Sequence[Sequence[tuple[str, np.ndarray]]]) -> Image.Image:
    """A grid of titled tiles (all tiles one size); a shorter row leaves its end blank."""
    height, width = rows[0][0][1].shape[:2]
    scale = max(1, -(-MIN_TILE // min(height, width)))
    columns = max(len(row) for row in rows)
    size = (columns * (width * scale + GAP) - GAP, len(rows) * (height * scale + TITLE_HEIGHT + GAP) - GAP)
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        for c, (title, tile) in enumerate(row):
            if tile.shape[:2] != (height, width):
                raise ValueError(f"panel tile {title!r} is {tile.shape[:2]}, expected {(height, width)}")
            x, y = c * (width * scale + GAP), r * (height * scale + TITLE_HEIGHT + GAP)
            draw.text((x + 2, y + 1), title, fill="black")
            canvas.paste(Image.fromarray(tile.repeat(scale, axis=0).repeat(scale, axis=1)), (x, y + TITLE_HEIGHT))
    return canvas


def prediction_panel(
    image: Tensor, preds: Mapping[str, Tensor], targets: Mapping[str, Tensor] | None = None
) -> Image.Image:
    """Input and every task's prediction in the first row; the ground truth below when `targets` has it."""
    targets = targets or {}
    limits = {t: depth_range(p, targets.get(t)) for t, p in preds.items() if t == "depth"}
    top = [("input", denormalise(image))] + [(t, prediction_rgb(t, p, limits.get(t))) for t, p in preds.items()]
    rows = [top]
    labelled = [t for t in preds if t in targets]
    if labelled:
        rows.append(
            [("ground truth", denormalise(image))]
            + [
                (f"{t} gt", target_rgb(t, targets[t], limits.get(t)))
                if t in targets
                else (t, np.full_like(top[1][1], 255))
                for t in preds
            ]
        )
    return panel(rows)
