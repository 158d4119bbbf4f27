"""A model ready for inference from a checkpoint: ours (with its stored config) or an official one.

Our training checkpoints store the resolved config of their run (payload["config"], plain types),
so `evaluate` and `predict` rebuild the same model and data set from it: the model groups
(tasks, backbone, encoder, decoder, model) and the dataset's own settings (root, image size, ...)
come from the checkpoint, and every key named on the command line wins over it. Files without a
config (a converted state dict, an official DeMT/DeGMix Lightning checkpoint) use the composed
config, so the command line must describe the model (e.g. `experiment=demt_nyud_swin_t`).

The stored config is data: before any of it is used, `demt_exp.config.stored` refuses a target the
project's configs and the command line do not name, and any interpolation; its dataset name must be
a dataset option's name (it is composed as `dataset=<name>`), and its model nodes mappings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict

from demt_exp.config.compose import compose_config
from demt_exp.config.stored import StoredConfigError, check_checkpoint_config
from demt_exp.tasks.registry import define_tasks
from demt_exp.utils.errors import UserError

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger("demt_exp")

MODEL_NODES = ("tasks", "backbone", "encoder", "decoder", "model")
# A stored dataset name becomes a group choice (`dataset=<name>`): a plain option name, never a path.
OPTION_NAME = re.compile(r"[A-Za-z0-9_]+")


def composable(overrides: Sequence[str]) -> list[str]:
    """The overrides that describe the config: all but Hydra's own, except `hydra.searchpath` (user config
    folders), searchpath first so the same command line always gives the same list."""

    def key(item: str) -> str:
        return item.lstrip("+~")

    searchpath = [o for o in overrides if key(o).startswith("hydra.searchpath")]
    return [*searchpath, *(o for o in overrides if not key(o).startswith(("hydra.", "hydra/")))]


def named_keys(overrides: Sequence[str]) -> list[str]:
    """The config paths a list of command-line overrides sets (groups and keys, without + ~ prefixes)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [o.key_or_group for o in parsed if not o.key_or_group.startswith("hydra")]


def trust_requested(overrides: Sequence[str]) -> bool:
    """`trust_checkpoints=true` on the command line: the checkpoint is read before the config is composed."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return any(o.key_or_group == "trust_checkpoints" and o.value() is True for o in parsed)


def read_training_checkpoint(path: str | Path, trust: bool = False) -> dict[str, Any] | None:
    """Our training checkpoint's payload, or None for a weights-only / official file.

    Tensors and plain values only (`weights_only`); a file that cannot be read is the user's to fix.
    """
    from demt_exp.engine.checkpoint import load_checkpoint

    try:
        payload = load_checkpoint(path, trust=trust)
    except KeyError:
        return None
    return payload if isinstance(payload.get("config"), Mapping) else None


def _is_named(path: str, named: Sequence[str]) -> bool:
    """A command-line key sets `path` when it is the path itself or a node above it."""
    return any(path == key or path.startswith(key + ".") for key in named)


def _is_instantiation_key(key: object) -> bool:
    """`_target_`, `_partial_`, ...: the composed dataset option chooses the class, the file only values."""
    return isinstance(key, str) and key.startswith("_") and key.endswith("_")


def _take_stored_dataset(dataset: DictConfig, stored: Mapping[str, Any], named: Sequence[str]) -> None:
    """The stored dataset's own values: its top-level keys, and the literal (not interpolated)
    entries of its val split (e.g. a sample count), unless named on the command line."""
    for key, value in stored.items():
        taken = not isinstance(value, Mapping) and not _is_instantiation_key(key)
        if taken and not _is_named(f"dataset.{key}", named):
            dataset[key] = value
    stored_val, val = stored.get("val", {}), dataset.get("val")
    if not isinstance(stored_val, Mapping) or val is None:
        return
    for key, value in stored_val.items():
        literal = key in val and not OmegaConf.is_interpolation(val, key) and not _is_instantiation_key(key)
        if literal and key != "split" and not _is_named(f"dataset.val.{key}", named):
            val[key] = value


def _stored_node(stored: Mapping[str, Any], node: str, checkpoint: str | Path) -> Mapping[str, Any]:
    """A stored model node, which must be a mapping: OmegaConf would parse a string as a YAML document."""
    value = stored[node]
    if not isinstance(value, Mapping):
        raise StoredConfigError(
            f"checkpoint {checkpoint}: stored config key {node} is a {type(value).__name__}; "
            "expected a mapping of values"
        )
    return value


def merge_stored_config(
    stored: Mapping[str, Any], composed: DictConfig, overrides: Sequence[str], checkpoint: str | Path = "<memory>"
) -> DictConfig:
    """The composed config with the checkpoint's model and dataset settings, except where the command line spoke.

    `composed` must have been composed with `dataset=<stored dataset.name>` before the overrides, so
    its dataset entries (`train`, `val`) interpolate the stored top-level dataset values. Nothing of
    `stored` is used before `check_checkpoint_config` has accepted it: its targets are the project's
    or the command line's (`overrides`, `composed`), and it holds no interpolation.
    """
    check_checkpoint_config(stored, checkpoint, composed, overrides)
    named = named_keys(overrides)
    cfg = composed.copy()
    with open_dict(cfg):
        for node in MODEL_NODES:
            if node in stored and not _is_named(node, named):
                cfg[node] = OmegaConf.create(_stored_node(stored, node, checkpoint))
        stored_dataset = stored.get("dataset")
        if isinstance(stored_dataset, Mapping) and stored_dataset.get("name") == cfg.dataset.get("name"):
            _take_stored_dataset(cfg.dataset, stored_dataset, named)
        for key in named:  # a key under a replaced node (e.g. backbone.drop_path_rate=0) still wins
            if any(key.startswith(node + ".") for node in MODEL_NODES):
                OmegaConf.update(cfg, key, OmegaConf.select(composed, key), merge=False)
        cfg.model.init = None  # the checkpoint's own weights replace any initialisation file
    return cfg


def stored_dataset_name(stored: Mapping[str, Any], checkpoint: str | Path) -> str | None:
    """The stored `dataset.name`, which becomes the group choice `dataset=<name>`: an option name, never a
    path (a path would compose a YAML file of the checkpoint's choosing, targets included)."""
    dataset = stored.get("dataset")
    name = dataset.get("name") if isinstance(dataset, Mapping) else None
    if name is not None and not (isinstance(name, str) and OPTION_NAME.fullmatch(name)):
        raise StoredConfigError(
            f"checkpoint {checkpoint}: stored config key dataset.name is {name!r}; "
            "expected the name of a dataset option (letters, digits, _)"
        )
    return name


def _compose_for(checkpoint: str | Path, dataset: str | None, overrides: list[str], config_name: str) -> DictConfig:
    """Compose with the checkpoint's dataset option first, so the command line still wins over it."""
    try:
        return compose_config([*([f"dataset={dataset}"] if dataset else []), *overrides], config_name)
    except MissingConfigException as error:
        if dataset and f"dataset/{dataset}" in str(error):
            raise UserError(
                f"checkpoint {checkpoint} was trained with dataset={dataset}, which is not a dataset "
                "option here; name the data set on the command line, e.g. dataset=nyud"
            ) from None
        raise


def inference_config(
    checkpoint: str | Path, overrides: Sequence[str], config_name: str
) -> tuple[DictConfig, dict[str, Any] | None]:
    """The config to rebuild the checkpoint's model and data with, and our payload if it is ours.

    `overrides` is the command line (Hydra's own keys are left out, except `hydra.searchpath`). The tasks the
    config defines (`tasks.define`, checked like every stored target) are registered before it is returned.
    """
    overrides = composable(overrides)
    payload = read_training_checkpoint(checkpoint, trust_requested(overrides))
    if payload is None:
        cfg = compose_config(overrides, config_name)
    else:
        stored = payload["config"]
        named = named_keys(overrides)
        dataset = None if _is_named("dataset", named) else stored_dataset_name(stored, checkpoint)
        composed = _compose_for(checkpoint, dataset, overrides, config_name)
        cfg = merge_stored_config(stored, composed, overrides, checkpoint)
    define_tasks(cfg)
    return cfg, payload


def load_inference_model(checkpoint: str | Path, cfg: DictConfig, payload: Mapping[str, Any] | None) -> nn.Module:
    """Build the model `cfg` describes and load the checkpoint's weights into it (strictly), in eval mode."""
    from demt_exp.models.load_weights import load_weights
    from demt_exp.models.model import build_model

    model = build_model(cfg)
    if payload is not None:
        model.load_state_dict(payload["model"])
    else:
        # a converted state dict or an official DeMT/DeGMix checkpoint (Lightning's may need trust_checkpoints=true)
        load_weights(model, str(checkpoint), trust=bool(cfg.get("trust_checkpoints", False)))
    log.info("loaded %s (%s)", checkpoint, "training checkpoint" if payload is not None else "weights file")
    return model.eval()
