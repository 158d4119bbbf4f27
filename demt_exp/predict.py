"""`python -m demt_exp.predict checkpoint=PATH input=DIR_OR_FILES out=DIR`: a model's predictions as files.

For every image: one file per task under `<out>/<task>/<id>.png` (palette PNGs holding the class
indices for semseg / human_parts, 8-bit maps for edge and saliency, colour pictures of depth,
with the metres in `depth/<id>.npy`, and of normals) and a side-by-side panel
`<out>/panels/<id>.png`. With `input=null` the images are the val split of the checkpoint's data
set, and the panels show the ground truth under the predictions.

The inputs (the checkpoint, its stored config, the images) are checked before Hydra creates
`<out>`: a mistake leaves no folder behind, only an `error:` line (exit code 2).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from demt_exp.config.compose import CONF_DIR, compose_config
from demt_exp.engine.from_checkpoint import composable
from demt_exp.engine.run_folder import run_job
from demt_exp.utils.errors import UserError, one_line_errors

if TYPE_CHECKING:
    from torch.utils.data import Dataset

log = logging.getLogger("demt_exp")

CONFIG_NAME = "predict"


def prediction_inputs(cfg: DictConfig) -> Dataset:
    """The images to predict: the named files (each checked to open) or the data set's val split."""
    from hydra.utils import instantiate
    from torch.utils.data import Subset

    from demt_exp.data.contract import check_dataset
    from demt_exp.data.image_files import ImageFiles, check_images, image_files

    source = cfg.input
    if source is None:
        dataset: Dataset = check_dataset(instantiate(cfg.dataset.val), list(cfg.tasks.names), "val")
    else:
        files = image_files(list(source) if isinstance(source, ListConfig) else str(source))
        check_images(files)
        dataset = ImageFiles(files, int(cfg.pad_multiple))  # type: ignore[assignment]
    if cfg.limit is not None:
        dataset = Subset(dataset, range(min(int(cfg.limit), len(dataset))))  # type: ignore[arg-type]
    return dataset


def predict(cfg: DictConfig, payload: dict[str, Any] | None, out_dir: Path, dataset: Dataset | None = None) -> int:
    """Write every image's task files and panel; returns the number of images."""
    import torch
    from torch.utils.data import DataLoader

    from demt_exp.engine.distributed import pick_device
    from demt_exp.engine.evaluator import to_device
    from demt_exp.engine.from_checkpoint import load_inference_model
    from demt_exp.viz.prediction_files import PredictionWriter

    device = pick_device(str(cfg.trainer.device), 0)
    model = load_inference_model(cfg.checkpoint, cfg, payload).to(device)
    dataset = prediction_inputs(cfg) if dataset is None else dataset
    writer = PredictionWriter(out_dir, {t: t for t in cfg.tasks.names}, panels=None)
    with torch.no_grad():
        for position, batch in enumerate(DataLoader(dataset, batch_size=1)):
            batch = to_device(batch, device)
            preds = {t: p.float() for t, p in model(batch["image"]).items()}
            writer.write_batch(batch, preds, [position])
    log.info("wrote predictions of %d images to %s", len(dataset), out_dir)  # type: ignore[arg-type]
    return len(dataset)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=1)
def checked_inputs(checkpoint: str, overrides: tuple[str, ...]) -> tuple[DictConfig, dict[str, Any] | None, Dataset]:
    """Everything predict reads from the user's files: the checkpoint (readable, its stored config
    accepted), the config it gives, and the input images. Kept, so the check before Hydra creates the
    output folder and the run after it read the checkpoint once."""
    from demt_exp.engine.from_checkpoint import inference_config

    if checkpoint == "???":
        raise UserError("no checkpoint given: python -m demt_exp.predict checkpoint=PATH input=IMAGES out=DIR")
    config, payload = inference_config(checkpoint, overrides, CONFIG_NAME)
    return config, payload, prediction_inputs(config)


def check_before_output(argv: Sequence[str]) -> None:
    """Check the inputs `argv` names while no output exists; Hydra's own flags (--help, -m, ...) and a
    command line that does not compose are left to Hydra, which reports them itself."""
    if any(arg.startswith("-") for arg in argv):
        return
    overrides = tuple(composable(argv))
    try:
        cfg = compose_config(overrides, CONFIG_NAME)
    except (HydraException, OmegaConfBaseException):
        return
    checkpoint = "???" if OmegaConf.is_missing(cfg, "checkpoint") else str(cfg.checkpoint)
    checked_inputs(checkpoint, overrides)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> None:
    """The command: a user's mistake (a file, key or value) is one `error:` line and exit code 2."""
    overrides = HydraConfig.get().overrides
    command = tuple(composable([*overrides.hydra, *overrides.task]))

    def job() -> None:
        checkpoint = "???" if OmegaConf.is_missing(cfg, "checkpoint") else str(cfg.checkpoint)
        config, payload, dataset = checked_inputs(checkpoint, command)
        predict(config, payload, Path(str(cfg.out)), dataset)

    run_job(job, HydraConfig.get().runtime.output_dir, "; {out_dir} holds the predictions written so far")


def cli() -> None:
    """`python -m demt_exp.predict`: the inputs are checked first, then Hydra runs the command in `<out>`."""
    with one_line_errors():
        check_before_output(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
