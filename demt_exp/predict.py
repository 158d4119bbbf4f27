"""`python -m demt_exp.predict checkpoint=PATH input=DIR_OR_FILES out=DIR`: a model's predictions as files.

For every image: one file per task under `<out>/<task>/<id>.png` (palette PNGs holding the class
indices for semseg / human_parts, 8-bit maps for edge and saliency, colour pictures of depth,
with the metres in `depth/<id>.npy`, and of normals) and a side-by-side panel
`<out>/panels/<id>.png`. With `input=null` the images are the val split of the checkpoint's data
set, and the panels show the ground truth under the predictions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from demt_exp.config import CONF_DIR
from demt_exp.cpu_allocator import configure_cpu_allocator
from demt_exp.data.transforms import Compose, Normalize, PadImage, ToTensor
from demt_exp.distributed import pick_device
from demt_exp.evaluate import to_device
from demt_exp.inference import inference_config, load_inference_model
from demt_exp.prediction_writer import PredictionWriter

log = logging.getLogger("demt_exp")

CONFIG_NAME = "predict"
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
        raise ValueError(f"input images share the names {repeated}; outputs are named after the file, so rename them")
    return files


class ImageFiles(Dataset):
    """Unlabelled images as the validation pipeline feeds them: ImageNet-normalised, padded centred
    to a multiple of `pad_multiple` (meta records size and padding so outputs crop back)."""

    def __init__(self, files: Sequence[Path], pad_multiple: int) -> None:
        self.files = list(files)
        self.pad_multiple = int(pad_multiple)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        try:
            rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        except OSError as error:
            raise ValueError(f"input {path} cannot be read as an image: {error}") from None
        h, w = rgb.shape[:2]
        size = [-(-h // self.pad_multiple) * self.pad_multiple, -(-w // self.pad_multiple) * self.pad_multiple]
        sample = {"image": rgb, "meta": {"id": path.stem, "size": (h, w)}}
        return Compose([Normalize(), PadImage(size), ToTensor()])(sample)


def prediction_inputs(cfg: DictConfig) -> Dataset:
    source = cfg.input
    if source is None:
        dataset: Dataset = instantiate(cfg.dataset.val)
    else:
        dataset = ImageFiles(image_files(list(source) if isinstance(source, ListConfig) else str(source)), int(cfg.pad_multiple))
    if cfg.limit is not None:
        dataset = Subset(dataset, range(min(int(cfg.limit), len(dataset))))  # type: ignore[arg-type]
    return dataset


@torch.no_grad()
def predict(cfg: DictConfig, payload: dict[str, Any] | None, out_dir: Path) -> int:
    """Write every image's task files and panel; returns the number of images."""
    device = pick_device(str(cfg.trainer.device), 0)
    model = load_inference_model(cfg.checkpoint, cfg, payload).to(device)
    dataset = prediction_inputs(cfg)
    writer = PredictionWriter(out_dir, {t: t for t in cfg.tasks.names}, panels=None)
    for position, batch in enumerate(DataLoader(dataset, batch_size=1)):
        batch = to_device(batch, device)
        preds = {t: p.float() for t, p in model(batch["image"]).items()}
        writer.write_batch(batch, preds, [position])
    log.info("wrote predictions of %d images to %s", len(dataset), out_dir)  # type: ignore[arg-type]
    return len(dataset)  # type: ignore[arg-type]


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> None:
    configure_cpu_allocator(str(cfg.trainer.cpu_allocator))
    config, payload = inference_config(str(cfg.checkpoint), list(HydraConfig.get().overrides.task), CONFIG_NAME)
    predict(config, payload, Path(str(cfg.out)))


if __name__ == "__main__":
    main()
