"""Unlabelled images named by a user, fed as the validation pipeline feeds a data set (`predict input=...`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from demt_exp.utils.errors import ConfigError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def image_files(source: str | Sequence[str]) -> list[Path]:
    """The images a user named: a folder (its image files, sorted), one file, or a list of files."""
    names = [source] if isinstance(source, str) else [str(s) for s in source]
    files: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"input folder {path} holds no image ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"input {path} does not exist (expected an image file or a folder of images)")
    stems = [p.stem for p in files]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise ConfigError(f"input images share the names {repeated}; outputs are named after the file, so rename them")
    return files


def check_images(files: Sequence[Path]) -> None:
    """Every file opens as an image (its header only: cheap), so a bad one fails before any output exists."""
    from PIL import Image, UnidentifiedImageError

    for path in files:
        try:
            with Image.open(path):
                pass
        except (OSError, UnidentifiedImageError) as error:
            raise ConfigError(f"input {path} cannot be read as an image: {error}") from None


class ImageFiles:
    """Unlabelled images as the validation pipeline feeds them: ImageNet-normalised, padded centred
    to a multiple of `pad_multiple` (meta records size and padding so outputs crop back).

    A map-style dataset (`len` and indexing), which is all a DataLoader needs.
    """

    def __init__(self, files: Sequence[Path], pad_multiple: int) -> None:
        self.files = list(files)
        self.pad_multiple = int(pad_multiple)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import numpy as np
        from PIL import Image

        from demt_exp.data.transforms import Compose, Normalize, PadImage, ToTensor

        path = self.files[index]
        try:
            rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        except OSError as error:
            raise ConfigError(f"input {path} cannot be read as an image: {error}") from None
        h, w = rgb.shape[:2]
        size = [-(-h // self.pad_multiple) * self.pad_multiple, -(-w // self.pad_multiple) * self.pad_multiple]
        sample = {"image": rgb, "meta": {"id": path.stem, "size": (h, w)}}
        return Compose([Normalize(), PadImage(size), ToTensor()])(sample)
