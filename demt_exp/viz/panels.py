"""Pictures of predictions: the colour maps tasks draw with, and side-by-side panels (input, each task's
prediction and, when known, its ground truth; each task colours its own maps, demt_exp/tasks). Used by
`evaluate` and `predict`, and by any logger that wants images; everything works on one image's (C, H, W)
tensors and returns uint8 H x W x 3 arrays or PIL images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor

from demt_exp.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from demt_exp.tasks.registry import get_task

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


def target_map(target: Tensor) -> np.ndarray:
    """One image's label map as an array: (H, W) for index maps and one-channel maps, else (C, H, W)."""
    t = target.detach().float().cpu().numpy()
    return t[0] if t.ndim == 3 and t.shape[0] == 1 else t


def prediction_panel(
    image: Tensor, preds: Mapping[str, Tensor], targets: Mapping[str, Tensor] | None = None
) -> Image.Image:
    """Input and every task's prediction in the first row; the ground truth below when `targets` has it."""
    targets = targets or {}
    tasks = {t: get_task(t) for t in preds}
    limits = {t: tasks[t].display_range(p, targets.get(t)) for t, p in preds.items()}
    top = [("input", denormalise(image))]
    top += [(t, tasks[t].prediction_rgb(tasks[t].predicted_map(p), limits[t])) for t, p in preds.items()]
    rows = [top]
    labelled = [t for t in preds if t in targets]
    if labelled:
        rows.append(
            [("ground truth", denormalise(image))]
            + [
                (f"{t} gt", tasks[t].target_rgb(target_map(targets[t]), limits[t]))
                if t in targets
                else (t, np.full_like(top[1][1], 255))
                for t in preds
            ]
        )
    return panel(rows)
