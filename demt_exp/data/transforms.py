"""Training and evaluation pipelines of the official code (SPEC 3.4), one small class per step.

A sample is a dict of maps plus "meta". Until ToTensor the maps are HWC / HW numpy arrays as a
loader decodes them: image float32 RGB in [0, 255], semseg / human_parts / sal integer maps
(255 = ignore), depth float32 metres (0 = invalid), normals float32 (H, W, 3), edge float32 0/1.
ToTensor produces the batch layout of demt_exp.data.tasks.

Every step is called as step(sample, rng) with a numpy Generator, so one seed fixes a whole
sample. Random steps split into draw(...) (the parameters) and apply(...) (deterministic), which
lets tests apply known parameters. Joint geometric ops (resize, crop, flip, pad) go through
torchvision's v2 functional ops on tv_tensors, which resize Image bilinearly and Mask by nearest
neighbour (OpenCV's INTER_NEAREST rule, floor(dst * src / dst)).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from demt_exp.data.photometric import PhotoMetricDistortion
from demt_exp.data.tasks import IGNORE_INDEX

Sample = dict[str, Any]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# The label map SEISM derives an evaluation's ground-truth boundary from (PASCAL-Context: the
# 459-class LabelMap); a val set carries it only when the evaluation asks (no training batch does).
BOUNDARY_LABELS = "boundary_labels"
INDEX_MAPS = ("semseg", "human_parts", "sal", BOUNDARY_LABELS)
ONE_CHANNEL_MAPS = ("depth", "edge")
# PadImage fill per key (SPEC 3.4 step 6); AddIgnoreRegions later turns depth/normals zeros into 255.
# Padding of boundary labels is cropped away before use, so its fill never matters.
PAD_FILL: dict[str, float] = {
    "image": 0.0,
    "semseg": IGNORE_INDEX,
    "human_parts": IGNORE_INDEX,
    "sal": IGNORE_INDEX,
    "edge": IGNORE_INDEX,
    "depth": 0.0,
    "normals": 0.0,
    BOUNDARY_LABELS: 0,
}


def parse_size(size: Sequence[int], name: str = "size") -> tuple[int, int]:
    """(H, W) as two positive ints; rejects anything else with the value it got."""
    try:
        h, w = (int(s) for s in size)
        exact = [h, w] == list(size)
    except (TypeError, ValueError):
        exact = False
    if not exact or h <= 0 or w <= 0:
        raise ValueError(f"{name} must be (H, W) with two positive integers, got {size!r}")
    return h, w


def _maps(sample: Sample) -> list[str]:
    return [k for k in sample if k != "meta"]


def _hw(sample: Sample) -> tuple[int, int]:
    h, w = np.shape(sample["image"])[:2]
    return int(h), int(w)


def _to_tv(key: str, array: Any) -> torch.Tensor:
    """HW / HWC array -> CHW tv_tensor: Image for the RGB image, Mask (nearest, no blending) for labels."""
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # e.g. np.asarray(PIL image); torch wants memory it may write
        array = array.copy()
    tensor = torch.from_numpy(array)
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()  # strided ops are slow
    return tv_tensors.Image(tensor) if key == "image" else tv_tensors.Mask(tensor)


def _from_tv(tensor: torch.Tensor, ndim: int) -> np.ndarray:
    """Back to the HW / HWC layout the array had before."""
    plain = tensor.as_subclass(torch.Tensor)
    return np.ascontiguousarray((plain[0] if ndim == 2 else plain.permute(1, 2, 0)).numpy())


def _geometric(sample: Sample, op: Callable[[str, torch.Tensor], torch.Tensor]) -> Sample:
    """Apply one joint geometric op to every map; meta is copied so the input sample stays untouched."""
    out: Sample = {}
    for key, value in sample.items():
        if key == "meta":
            out[key] = dict(value)
        else:
            out[key] = _from_tv(op(key, _to_tv(key, value)), np.ndim(value))
    return out


class Compose:
    """Steps in order; without an explicit rng one is seeded from torch's RNG, so DataLoader worker
    seeding and a checkpointed torch RNG state make augmentation reproducible."""

    def __init__(self, steps: Sequence[Callable[[Sample, np.random.Generator], Sample]]) -> None:
        self.steps = list(steps)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        if rng is None:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
        for step in self.steps:
            sample = step(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({', '.join(type(s).__name__ for s in self.steps)})"


class RandomScaling:
    """One factor s ~ U(lo, hi) per sample; size (int(H s), int(W s)); depth values divided by s,
    since a magnified image looks like a scene that is s times nearer."""

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0)) -> None:
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))

    def draw(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(*self.scale_range))

    @staticmethod
    def apply(sample: Sample, scale: float) -> Sample:
        h, w = _hw(sample)
        size = [max(1, int(h * scale)), max(1, int(w * scale))]

        def resize(key: str, t: torch.Tensor) -> torch.Tensor:
            return F.resize(t, size, interpolation=InterpolationMode.BILINEAR, antialias=False)

        out = _geometric(sample, resize)
        if "depth" in out:
            out["depth"] = (out["depth"] / np.float32(scale)).astype(np.float32)
        return out

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return self.apply(sample, self.draw(rng))


@dataclass(frozen=True)
class CropBox:
    top: int
    left: int
    height: int
    width: int


class RandomCrop:
    """Random crop of `size`, re-drawn up to 10 times until the semseg crop holds more than one valid
    class and none covers >= cat_max_ratio of the valid pixels (else the last draw). An axis shorter
    than the crop is kept whole. Semseg decides even when it is not a task (SPEC 8 item 26)."""

    def __init__(self, size: Sequence[int], cat_max_ratio: float = 0.75, redraws: int = 10) -> None:
        self.size = parse_size(size)
        self.cat_max_ratio = float(cat_max_ratio)
        self.redraws = int(redraws)

    def _box(self, h: int, w: int, rng: np.random.Generator) -> CropBox:
        ch, cw = self.size
        top = int(rng.integers(0, max(h - ch, 0) + 1))
        left = int(rng.integers(0, max(w - cw, 0) + 1))
        return CropBox(top, left, min(ch, h), min(cw, w))

    def acceptable(self, semseg_crop: np.ndarray) -> bool:
        labels, counts = np.unique(np.asarray(semseg_crop), return_counts=True)
        counts = counts[labels != IGNORE_INDEX]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def draw(self, sample: Sample, rng: np.random.Generator) -> CropBox:
        if "semseg" not in sample:
            raise KeyError(
                "RandomCrop needs the 'semseg' map to choose a crop (it is loaded even when "
                f"semseg is not a task); the sample holds {_maps(sample)}"
            )
        h, w = _hw(sample)
        box = self._box(h, w, rng)
        if self.cat_max_ratio < 1.0:
            semseg = np.asarray(sample["semseg"])
            for _ in range(self.redraws):
                if self.acceptable(semseg[box.top : box.top + box.height, box.left : box.left + box.width]):
                    break
                box = self._box(h, w, rng)
        return box

    @staticmethod
    def apply(sample: Sample, box: CropBox) -> Sample:
        return _geometric(sample, lambda key, t: F.crop(t, box.top, box.left, box.height, box.width))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return self.apply(sample, self.draw(sample, rng))


class RandomHorizontalFlip:
    """Mirror every map with probability p; the normals' x component changes sign with the mirror."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def draw(self, rng: np.random.Generator) -> bool:
        return bool(rng.random() < self.p)

    @staticmethod
    def apply(sample: Sample) -> Sample:
        out = _geometric(sample, lambda key, t: F.horizontal_flip(t))
        if "normals" in out:
            out["normals"][..., 0] *= -1
        return out

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return self.apply(sample) if self.draw(rng) else sample


class Normalize:
    """/255, then ImageNet mean and std (the backbones' pretraining statistics)."""

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        image = np.asarray(sample["image"], np.float32) / np.float32(255.0)
        return {**sample, "image": ((image - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)}


class PadImage:
    """Pad every map to at least `size`, centred (offset floor(delta / 2)); never crops. The offsets
    go to meta["pad"] = (top, left) so predictions can be cropped back to the original extent."""

    def __init__(self, size: Sequence[int]) -> None:
        self.size = parse_size(size)

    def offsets(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) padding."""
        dh, dw = max(self.size[0] - h, 0), max(self.size[1] - w, 0)
        return dh // 2, dw // 2, dh - dh // 2, dw - dw // 2

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        unknown = [k for k in _maps(sample) if k not in PAD_FILL]
        if unknown:
            raise KeyError(f"PadImage has no fill value for {unknown}; known keys: {sorted(PAD_FILL)}")
        top, left, bottom, right = self.offsets(*_hw(sample))
        out = _geometric(sample, lambda key, t: F.pad(t, [left, top, right, bottom], fill=PAD_FILL[key]))
        out.setdefault("meta", {})["pad"] = (top, left)
        return out


class AddIgnoreRegions:
    """Mark what carries no label with 255: zero-norm normals (all channels), depth 0 (missing or
    padding), and human_parts of a crop that holds only background/ignore (SPEC 8 item 18)."""

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        out = dict(sample)
        if "normals" in out:
            normals = np.array(out["normals"], np.float32)
            normals[np.linalg.norm(normals, axis=-1) == 0] = IGNORE_INDEX
            out["normals"] = normals
        if "depth" in out:
            depth = np.array(out["depth"], np.float32)
            depth[depth == 0] = IGNORE_INDEX
            out["depth"] = depth
        if "human_parts" in out:
            parts = np.asarray(out["human_parts"])
            if ((parts == 0) | (parts == IGNORE_INDEX)).all():
                out["human_parts"] = np.full_like(parts, IGNORE_INDEX)
        return out


class ToTensor:
    """HWC -> CHW in the batch layout of tasks.py: index maps int64 (H, W), depth / edge float32
    (1, H, W), normals and image float32 (3, H, W); meta size / pad become int64 tensors."""

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        out: Sample = {}
        for key, value in sample.items():
            if key == "meta":
                out[key] = {
                    k: torch.tensor(v, dtype=torch.int64) if k in ("size", "pad") else v for k, v in value.items()
                }
                continue
            array = np.asarray(value)
            if key in INDEX_MAPS:
                array = array[..., 0] if array.ndim == 3 else array
                out[key] = torch.from_numpy(np.ascontiguousarray(array, np.int64))
                continue
            chw = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
            out[key] = torch.from_numpy(np.ascontiguousarray(chw, np.float32))
        return out


class KeepMaps:
    """Drop the maps that are no task (semseg travels along only as far as the crop)."""

    def __init__(self, tasks: Sequence[str]) -> None:
        self.keep = {"image", "meta", *tasks}

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        return {k: v for k, v in sample.items() if k in self.keep}


def build_train_transform(size: Sequence[int], tasks: Sequence[str]) -> Compose:
    """SPEC 3.4 training pipeline at crop/pad size `size` = (H, W)."""
    size = parse_size(size)
    return Compose(
        [
            RandomScaling(),
            RandomCrop(size),
            KeepMaps(tasks),
            RandomHorizontalFlip(),
            PhotoMetricDistortion(),
            Normalize(),
            PadImage(size),
            AddIgnoreRegions(),
            ToTensor(),
        ]
    )


def build_eval_transform(size: Sequence[int], tasks: Sequence[str]) -> Compose:
    """SPEC 3.4 validation pipeline: no resizing or flipping, only centred padding to `size`."""
    size = parse_size(size)
    return Compose([KeepMaps(tasks), Normalize(), PadImage(size), AddIgnoreRegions(), ToTensor()])
