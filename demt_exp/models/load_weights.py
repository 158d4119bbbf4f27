"""Initialising a model from one file in any known format: `model.init`, the single entry point.

`model.init` takes our checkpoints (whole model or backbone), official DeMT/DeGMix checkpoints
(`demt_exp.models.official_layout`) and backbone files: mmseg ADE20K UperNet Swin-T/S/B/L and ViT-B/16,
the mmseg third-party ImageNet HRNet-W18-small / W48, and timm ImageNet files of our backbones
(`.pth` or `.safetensors`). Backbone files go through the backbone's own `checkpoint_filter_fn`
(beside each model, as in timm). With no file the model starts from random weights, which
`apply_init` announces loudly and records as `init: random`, so such a run is never mistaken
for a paper recipe.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from omegaconf import DictConfig, open_dict
from torch import nn

from demt_exp.models import hrnet, swin, vit
from demt_exp.models.init_setting import RANDOM, RANDOM_WARNING, init_file
from demt_exp.models.official_layout import UPERNET_HEAD_PREFIXES, ConversionReport, convert_entries, official_to_ours
from demt_exp.models.state_dict import BackboneState, load_state_dict_strict, raise_problems, read_state_dict

log = logging.getLogger("demt_exp")

OUR_TOP_LEVEL: tuple[str, ...] = ("encoder.", "decoder.", "heads.")
UPERNET_NECK_PREFIX = "neck."


# ----------------------------------------------------------------------------- formats


def detect_format(state: Mapping[str, torch.Tensor]) -> Literal["official", "ours", "backbone"]:
    """Whole official model, whole model of ours, or a file that fills only the backbone."""
    keys = list(state)
    if any(k.startswith("head.") for k in keys) and any(k.startswith("backbone.") for k in keys):
        return "official"  # a timm classifier is also `head.*`, but beside unprefixed backbone keys
    if any(k.startswith(OUR_TOP_LEVEL) for k in keys):
        return "ours"
    return "backbone"


def with_backbone_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Bare mmseg Swin files (`patch_embed.projection.weight` at the top) get the UperNet `backbone.` prefix."""
    if "patch_embed.projection.weight" in state and not any(k.startswith("backbone.") for k in state):
        return {f"backbone.{k}": v for k, v in state.items()}
    return dict(state)


def split_upernet(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Counter[str]]:
    """The backbone tensors of a file (prefix `backbone.` removed), dropping UperNet heads and neck.

    A file without any `backbone.` key (timm, ImageNet HRNet) is all backbone.
    """
    if not any(k.startswith("backbone.") for k in state):
        return dict(state), Counter()
    backbone: dict[str, torch.Tensor] = {}
    dropped: Counter[str] = Counter()
    unexpected = []
    for key, value in state.items():
        if key.startswith("backbone."):
            backbone[key.removeprefix("backbone.")] = value
        elif key.startswith(UPERNET_HEAD_PREFIXES):
            dropped["upernet_head"] += 1
        elif key.startswith(UPERNET_NECK_PREFIX):
            dropped["upernet_neck"] += 1
        else:
            unexpected.append(key)
    raise_problems("checkpoint does not fit the model", [], unexpected, [])
    return backbone, dropped


FILTERS = {
    swin.SwinBackbone: swin.checkpoint_filter_fn,
    vit.VitBackbone: vit.checkpoint_filter_fn,
    hrnet.HRNetBackbone: hrnet.checkpoint_filter_fn,
}


def filter_backbone_state(state: Mapping[str, torch.Tensor], backbone: nn.Module) -> BackboneState:
    """The backbone's own `checkpoint_filter_fn`; an mmseg Swin file goes through `swin.mmseg_entries`, the layout
    the official checkpoints share."""
    if isinstance(backbone, swin.SwinBackbone) and "patch_embed.projection.weight" in state:
        converted, dropped = convert_entries(
            state, swin.mmseg_entries(backbone, official="", ours=""), backbone.state_dict()
        )
        return BackboneState("mmseg_backbone", converted, dropped)
    for kind, filter_fn in FILTERS.items():
        if isinstance(backbone, kind):
            return filter_fn(state, backbone)
    raise ValueError(f"no checkpoint conversion for a {type(backbone).__name__} backbone")


def complete_backbone_state(filtered: BackboneState, backbone: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Our tensors the file cannot hold (`keep_init` prefixes, BN counters of old files) keep their current values."""
    own = backbone.state_dict()
    state = dict(filtered.state)

    def may_keep(key: str) -> bool:
        return key.endswith("num_batches_tracked") or bool(filtered.keep_init) and key.startswith(filtered.keep_init)

    kept = [k for k in own if k not in state and may_keep(k)]
    state.update({k: own[k] for k in kept})
    return state, kept


def backbone_to_ours(
    state: Mapping[str, torch.Tensor], backbone: nn.Module
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Any backbone-only file -> our backbone's full state dict, with what was dropped and kept."""
    backbone_state, dropped = split_upernet(state)
    filtered = filter_backbone_state(backbone_state, backbone)
    converted, kept = complete_backbone_state(filtered, backbone)
    report = ConversionReport(
        filtered.layout, len(converted) - len(kept), dropped + filtered.dropped, scope="backbone", kept_at_init=kept
    )
    return converted, report


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> ConversionReport:
    """Strict-load a state dict of any known format into a MultiTaskModel (backbone-only files into the backbone)."""
    state = with_backbone_prefix(state)
    fmt = detect_format(state)
    if fmt == "official":
        converted, report = official_to_ours(state, model)
        load_state_dict_strict(model, converted, source)
        return report
    if fmt == "backbone":
        converted, report = backbone_to_ours(state, model.backbone)
        load_state_dict_strict(model.backbone, converted, source)
        return report
    load_state_dict_strict(model, dict(state), source)
    return ConversionReport("ours", len(state))


def load_weights(model: nn.Module, path: str | Path, trust: bool = False) -> ConversionReport:
    """Load a weights file in whichever format it is (`model.init` in the config); a file that would
    need a full unpickle is refused unless `trust` (`trust_checkpoints=true`)."""
    return load_state(model, read_state_dict(path, trust), str(path))


# ----------------------------------------------------------------------------- model.init


def apply_init(model: nn.Module, cfg: DictConfig, warn: bool = True) -> str:
    """Load `model.init` into a built model, or warn that it starts random and record `model.init: random`.

    Returns `describe_init(cfg)`; the config is updated in place so the saved config says so.
    `warn=False` where the caller has already warned (training warns before building anything).
    """
    path = init_file(cfg)
    if path is None:
        if warn:
            log.warning(RANDOM_WARNING)
        with open_dict(cfg):
            cfg.model.init = RANDOM
        return RANDOM
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"model.init={path} does not exist: put the file there (presets look under model.init_dir, "
            f"$DEMT_WEIGHTS), give model.init=<file>, or model.init=random to train from random weights"
        )
    report = load_weights(model, path, trust=bool(cfg.get("trust_checkpoints", False)))
    log.info("init: %s", report.summary())
    return path
