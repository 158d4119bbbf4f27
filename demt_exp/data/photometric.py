"""The official photometric distortion, op for op: brightness, contrast, saturation and hue on the image as
uint8, with OpenCV's RGB<->HSV conversions re-implemented in NumPy (no OpenCV dependency)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Sample = dict[str, Any]


# OpenCV's 8-bit RGB<->HSV (H on 0..179), reproduced so no OpenCV is needed: fixed-point division
# tables with 12 fractional bits for RGB -> HSV, float32 sector formula for HSV -> RGB.
_HSV_SHIFT = 12
_DIVISORS = np.maximum(np.arange(256, dtype=np.float64), 1.0)
_SDIV = np.where(np.arange(256) > 0, np.rint((255 << _HSV_SHIFT) / _DIVISORS), 0).astype(np.int64)
_HDIV = np.where(np.arange(256) > 0, np.rint((180 << _HSV_SHIFT) / (6.0 * _DIVISORS)), 0).astype(np.int64)
_SECTORS = np.array([[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]])  # (b, g, r) picks


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> uint8 HSV with H in 0..179, S and V in 0..255 (cv2.COLOR_RGB2HSV)."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    v = np.maximum(np.maximum(r, g), b)
    diff = v - np.minimum(np.minimum(r, g), b)
    half = 1 << (_HSV_SHIFT - 1)
    s = (diff * _SDIV[v] + half) >> _HSV_SHIFT
    h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * _HDIV[diff] + half) >> _HSV_SHIFT
    h = np.where(h < 0, h + 180, h)
    return np.stack([h, s, v], -1).astype(np.uint8)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """uint8 HSV (H on 0..179) -> uint8 RGB (cv2.COLOR_HSV2RGB), rounding half to even like cvRound."""
    h = hsv[..., 0].astype(np.float32) * np.float32(6.0 / 180.0)
    s = hsv[..., 1].astype(np.float32) * np.float32(1.0 / 255.0)
    v = hsv[..., 2].astype(np.float32) * np.float32(1.0 / 255.0)
    h = np.fmod(h, np.float32(6.0))
    sector = np.floor(h).astype(np.int64)
    frac = h - sector
    one = np.float32(1.0)
    tab = np.stack([v, v * (one - s), v * (one - s * frac), v * (one - s * (one - frac))], -1)
    bgr = np.take_along_axis(tab, _SECTORS[np.clip(sector, 0, 5)], -1)
    rgb = np.where((s == 0)[..., None], v[..., None], bgr[..., ::-1])
    return np.clip(np.rint(rgb * np.float32(255.0)), 0, 255).astype(np.uint8)


def _convert(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """x * alpha + beta in float32, clipped to [0, 255], truncated to uint8 (the official `convert`)."""
    return np.clip(values.astype(np.float32) * np.float32(alpha) + np.float32(beta), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class PhotoParams:
    """None = that step is skipped."""

    brightness: float | None = None
    contrast: float | None = None
    contrast_first: bool = False
    saturation: float | None = None
    hue: int | None = None


class PhotoMetricDistortion:
    """Brightness, contrast (before or after the HSV steps), saturation, hue, each with p = 0.5, on the
    image truncated to uint8; no channel swap (SPEC 8 item 25). Labels are untouched."""

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
    ) -> None:
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = (float(contrast_range[0]), float(contrast_range[1]))
        self.saturation_range = (float(saturation_range[0]), float(saturation_range[1]))
        self.hue_delta = int(hue_delta)

    def draw(self, rng: np.random.Generator) -> PhotoParams:
        def maybe(draw: Callable[[], Any]) -> Any:
            return draw() if rng.random() < 0.5 else None

        brightness = maybe(lambda: float(rng.uniform(-self.brightness_delta, self.brightness_delta)))
        contrast_first = bool(rng.random() < 0.5)
        contrast = maybe(lambda: float(rng.uniform(*self.contrast_range)))
        saturation = maybe(lambda: float(rng.uniform(*self.saturation_range)))
        hue = maybe(lambda: int(rng.integers(-self.hue_delta, self.hue_delta)))  # [-18, 17]
        return PhotoParams(brightness, contrast, contrast_first, saturation, hue)

    @staticmethod
    def distort(image: np.ndarray, p: PhotoParams) -> np.ndarray:
        """float [0, 255] RGB -> float32 [0, 255] RGB."""
        img = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
        if p.brightness is not None:
            img = _convert(img, beta=p.brightness)
        if p.contrast is not None and p.contrast_first:
            img = _convert(img, alpha=p.contrast)
        if p.saturation is not None:
            hsv = rgb_to_hsv(img)
            hsv[..., 1] = _convert(hsv[..., 1], alpha=p.saturation)
            img = hsv_to_rgb(hsv)
        if p.hue is not None:
            hsv = rgb_to_hsv(img)
            hsv[..., 0] = (hsv[..., 0].astype(np.int64) + p.hue) % 180
            img = hsv_to_rgb(hsv)
        if p.contrast is not None and not p.contrast_first:
            img = _convert(img, alpha=p.contrast)
        return img.astype(np.float32)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return {**sample, "image": self.distort(sample["image"], self.draw(rng))}
