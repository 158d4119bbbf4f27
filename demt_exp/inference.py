"""A model ready for inference from a checkpoint: ours (with its stored config) or an official one.

Our training checkpoints store the resolved config of their run (payload["config"], plain types),
so `evaluate` and `predict` rebuild the same model and data set from it: the model groups
(tasks, backbone, encoder, decoder, model) and the dataset's own settings (root, image size, ...)
come from the checkpoint, and every key named on the command line wins over it. Files without a
config (a converted state dict, an official DeMT/DeGMix Lightning checkpoint) use the composed
config, so the command line must describe the model (e.g. `experiment=demt_nyud_swin_t`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from demt_exp.checkpoint import load_checkpoint
from demt_exp.config import compose_config
from demt_exp.models.init import load_weights
from demt_exp.models.model import build_model

log = logging.getLogger("demt_exp")

MODEL_NODES = ("tasks", "backbone", "encoder", "decoder", "model")


def named_keys(overrides: Sequence[str]) -> list[str]:
    """The config paths a list of command-line overrides sets (groups and keys, without + ~ prefixes)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [o.key_or_group for o in parsed if not o.key_or_group.startswith("hydra")]


def read_training_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """Our training checkpoint's payload, or None for a weights-only / official file."""
    try:
        payload = load_checkpoint(path)
    except KeyError:
        return None
    return payload if isinstance(payload.get("config"), Mapping) else None


def _is_named(path: str, named: Sequence[str]) -> bool:
    """A command-line key sets `path` when it is the path itself or a node above it."""
    return any(path == key or path.startswith(key + ".") for key in named)


def _take_stored_dataset(dataset: DictConfig, stored: Mapping[str, Any], named: Sequence[str]) -> None:
    """The stored dataset's own values: its top-level keys, and the literal (not interpolated)
    entries of its val split (e.g. a sample count), unless named on the command line."""
    for key, value in stored.items():
        if not isinstance(value, Mapping) and not _is_named(f"dataset.{key}", named):
            dataset[key] = value
    stored_val, val = stored.get("val", {}), dataset.get("val")
    if not isinstance(stored_val, Mapping) or val is None:
        return
    for key, value in stored_val.items():
        literal = key in val and not OmegaConf.is_interpolation(val, key)
        if literal and key != "split" and not _is_named(f"dataset.val.{key}", named):
            val[key] = value


def merge_stored_config(stored: Mapping[str, Any], composed: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The composed config with the checkpoint's model and dataset settings, except where the command line spoke.

    `composed` must have been composed with `dataset=<stored dataset.name>` before the overrides, so
    its dataset entries (`train`, `val`) interpolate the stored top-level dataset values.
    """
    named = named_keys(overrides)
    cfg = composed.copy()
    with open_dict(cfg):
        for node in MODEL_NODES:
            if node in stored and not _is_named(node, named):
                cfg[node] = OmegaConf.create(stored[node])
        stored_dataset = stored.get("dataset", {})
        same_dataset = stored_dataset.get("name") == cfg.dataset.get("name")
        if same_dataset:
            _take_stored_dataset(cfg.dataset, stored_dataset, named)
        for key in named:  # a key under a replaced node (e.g. backbone.drop_path_rate=0) still wins
            if any(key.startswith(node + ".") for node in MODEL_NODES):
                OmegaConf.update(cfg, key, OmegaConf.select(composed, key), merge=False)
        cfg.model.weights = None  # the checkpoint's own weights replace any initialisation file
        cfg.model.init = None
    return cfg


def inference_config(checkpoint: str | Path, overrides: Sequence[str], config_name: str) -> tuple[DictConfig, dict[str, Any] | None]:
    """The config to rebuild the checkpoint's model and data with, and our payload if it is ours."""
    overrides = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    payload = read_training_checkpoint(checkpoint)
    if payload is None:
        return compose_config(overrides, config_name), None
    stored = payload["config"]
    dataset = stored.get("dataset", {}).get("name")
    head = [f"dataset={dataset}"] if dataset and not _is_named("dataset", named_keys(overrides)) else []
    composed = compose_config([*head, *overrides], config_name)
    return merge_stored_config(stored, composed, overrides), payload


def load_inference_model(checkpoint: str | Path, cfg: DictConfig, payload: Mapping[str, Any] | None) -> nn.Module:
    """Build the model `cfg` describes and load the checkpoint's weights into it (strictly), in eval mode."""
    model = build_model(cfg)
    if payload is not None:
        model.load_state_dict(payload["model"])
    else:
        load_weights(model, str(checkpoint))  # a converted state dict or an official DeMT/DeGMix checkpoint
    log.info("loaded %s (%s)", checkpoint, "training checkpoint" if payload is not None else "weights file")
    return model.eval()
