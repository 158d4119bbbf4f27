"""Official DeMT / DeGMix checkpoints <-> our state dict, and loading weights in any known format.

Formats recognised by `model.init` (loaded in `demt_exp.models.load_weights`):
  * ours: our own state dict, bare or under "model" as our training checkpoints store it;
  * official: a DeMT or DeGMix Lightning checkpoint, keys `backbone.*` (mmseg Swin) and `head.*`
    under "state_dict" (SPEC 1.2, 1.5, 1.6);
  * backbone files, which fill only the backbone: mmseg UperNet checkpoints (Swin here, ViT in
    `vit.checkpoint_filter_fn`; their `decode_head.*`, `auxiliary_head.*` and `neck.*` are
    ignored), the mmseg third-party ImageNet HRNets and timm ImageNet files (`.pth` or
    `.safetensors`), each converted by its backbone's `checkpoint_filter_fn`.

The mapping is a list of `Entry`s in the official state-dict order, built from our model's
structure, so it serves every Swin size, mixer depth and task list and both directions.
Tensors that only the official model saves (the unused CycleFC `offset` buffers, Swin's
`relative_position_index` buffers, DeGMix's unused `linear1`) are dropped on import and
synthesised on export (`official_export.py`), so an exported file has exactly the official keys, shapes
and order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from demt_exp.models.decoder import TaskAwareDecoder
from demt_exp.models.degmix import GatedTaskDecoder
from demt_exp.models.encoder import (
    DeformableMixerEncoder,
    MultiScaleConcat,
    PatchProjection,
    PixelProjection,
)
from demt_exp.models.state_dict import Entry, raise_problems, subtree
from demt_exp.models.swin import merge_permutation, mmseg_entries

Format = Literal["ours", "official", "mmseg_backbone", "timm", "imagenet"]

DROP_REASONS: dict[str, str] = {
    "cycle_offset": "unused CycleFC offset buffers (SPEC 8 item 8)",
    "relative_position_index": "relative_position_index buffers (rebuilt by our Swin)",
    "unused_linear1": "DeGMix linear1, never used (SPEC 8 item 9)",
    "upernet_head": "UperNet decode/auxiliary head",
    "upernet_neck": "UperNet neck (ViT multi-level neck)",
}
UPERNET_HEAD_PREFIXES: tuple[str, ...] = ("decode_head.", "auxiliary_head.")


@dataclass
class ConversionReport:
    """What a conversion did, for the one-line summary the CLI and `model.init` print."""

    source_format: Format
    converted: int
    dropped: Counter[str] = field(default_factory=Counter)
    scope: str = "model"
    kept_at_init: list[str] = field(default_factory=list)

    def summary(self) -> str:
        dropped = sum(self.dropped.values())
        reasons = ", ".join(f"{n} {DROP_REASONS.get(r, r)}" for r, n in self.dropped.items())
        tail = f"; dropped {dropped}: {reasons}" if dropped else "; dropped 0"
        if self.kept_at_init:
            kept = len(self.kept_at_init)
            tail += f"; {kept} tensors not in the file keep their initialisation ({self.kept_at_init[0]} ...)"
        verb = "loaded" if self.source_format == "ours" else "converted"
        return f"{self.source_format} checkpoint: {verb} {self.converted} tensors into the {self.scope}{tail}"


def to_ours(entry: Entry, tensor: torch.Tensor) -> torch.Tensor:
    """Official tensor -> our tensor."""
    if entry.transform == "merge_vector":
        return tensor[merge_permutation(tensor.shape[0] // 4)]
    if entry.transform == "merge_columns":
        return tensor[:, merge_permutation(tensor.shape[1] // 4)]
    if entry.transform == "squeeze":
        return tensor.squeeze(-1)
    return tensor


def official_shape(entry: Entry, ours: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    """Shape the official checkpoint must have for this entry."""
    if entry.ours is None:
        return entry.shape
    shape = tuple(ours[entry.ours].shape)
    return shape + (1,) if entry.transform == "squeeze" else shape


# ----------------------------------------------------------------------------- layout


def mixer_block_entries(official: str, ours: str, keys: list[str], channels: int) -> list[Entry]:
    """DefMixer block: `0` conv, `2` BN, `3.fn` = residual (ChlSpl `0`, GELU, BN `2`)."""
    chlspl = official + "3.fn.0."
    return [
        *subtree(official + "0.", ours + "channel_mix.", keys),
        *subtree(official + "2.", ours + "channel_norm.", keys),
        Entry(chlspl + "weight", ours + "spatial_mix.weight"),
        Entry(chlspl + "bias", ours + "spatial_mix.bias"),
        Entry(chlspl + "offset", synthetic="cycle_offset", shape=(1, 2 * channels, 1, 1)),
        *subtree(chlspl + "get_offset.p_conv.", ours + "spatial_mix.offsets.feature_conv.", keys),
        *subtree(chlspl + "get_offset.opt.", ours + "spatial_mix.offsets.coord_conv.", keys),
        *subtree(official + "3.fn.2.", ours + "spatial_norm.", keys),
    ]


def gate_entries(official: str, ours: str, keys: list[str]) -> list[Entry]:
    """DeGMix sGATE: `gmlps.gating.0.fn`; the kernel-1 Conv1d over channels is our Linear."""
    fn = official + "gating.0.fn."
    return [
        *subtree(fn + "ln1_0.", ours + "norm.", keys),
        *subtree(fn + "fc1_0.", ours + "fc1.", keys),
        *subtree(fn + "sgu_0.ln.", ours + "gate_norm.", keys),
        Entry(fn + "sgu_0.proj.weight", ours + "gate_proj.weight", "squeeze"),
        Entry(fn + "sgu_0.proj.bias", ours + "gate_proj.bias"),
        *subtree(fn + "fc2_0.", ours + "fc2.", keys),
    ]


def check_head_structure(model: nn.Module) -> None:
    """Official heads exist only for DeMT / DeGMix on the concatenated multi-scale maps."""
    encoder, decoder = getattr(model, "encoder", None), getattr(model, "decoder", None)
    ok = (
        isinstance(encoder, DeformableMixerEncoder)
        and isinstance(encoder.neck, MultiScaleConcat)
        and isinstance(encoder.projection, (PixelProjection, PatchProjection))
        and isinstance(decoder, TaskAwareDecoder)
        and hasattr(model, "heads")
    )
    if not ok:
        raise ValueError(
            "official DeMT/DeGMix heads need a DeformableMixerEncoder (concat neck, linear or patch projection) "
            f"and a DeMT/DeGMix decoder; this model has {type(encoder).__name__} / {type(decoder).__name__}"
        )


def projection_entries(model: nn.Module, keys: list[str]) -> tuple[list[Entry], list[Entry]]:
    """(`linear1` entries, `patch_embed` entries): linear1 is dead weight when the patch projection is used."""
    projection = model.encoder.projection
    if isinstance(projection, PixelProjection):
        linear1 = [
            *subtree("head.linear1.0.", "encoder.projection.linear.", keys),
            *subtree("head.linear1.1.", "encoder.projection.norm.", keys),
        ]
        return linear1, []
    dim, in_channels = projection.proj.weight.shape[:2]
    shapes = {"0.weight": (dim, in_channels), "0.bias": (dim,), "1.weight": (dim,), "1.bias": (dim,)}
    linear1 = [Entry(f"head.linear1.{k}", synthetic="unused_linear1", shape=s) for k, s in shapes.items()]
    patch = [
        *subtree("head.patch_embed.projection.", "encoder.projection.proj.", keys),
        *subtree("head.patch_embed.norm.", "encoder.projection.norm.", keys),
    ]
    return linear1, patch


def head_entries(model: nn.Module) -> list[Entry]:
    """Official head layout in its state-dict order (task lists by index follow the model's task order)."""
    check_head_structure(model)
    keys = list(model.state_dict())
    tasks = list(model.tasks)
    entries: list[Entry] = []
    for t in tasks:
        entries += subtree(f"head.bottleneck.{t}.", f"heads.bottleneck.{t}.", keys)
    for t in tasks:
        entries += subtree(f"head.final_logits.{t}.", f"heads.logits.{t}.", keys)
    for i, t in enumerate(tasks):
        for j, block in enumerate(model.encoder.mixers[t]):
            channels = block.spatial_mix.weight.shape[1]
            entries += mixer_block_entries(
                f"head.defor_mixers.{i}.blocks.{j}.", f"encoder.mixers.{t}.{j}.", keys, channels
            )
    linear1, patch = projection_entries(model, keys)
    entries += linear1
    entries += subtree("head.task_fusion.", "decoder.task_fusion.", keys)
    entries += subtree("head.smlp.", "decoder.fusion_mlp.", keys)
    for i, t in enumerate(tasks):
        entries += subtree(f"head.smlp2.{i}.", f"decoder.query_mlps.{t}.", keys)
    entries += patch
    for i, t in enumerate(tasks):
        entries += subtree(f"head.task_querys.{i}.", f"decoder.task_queries.{t}.", keys)
    if isinstance(model.decoder, GatedTaskDecoder):
        entries += gate_entries("head.gmlps.", "decoder.gate.", keys)
    return entries


def check_coverage(entries: list[Entry], ours: Iterable[str], scope: str) -> None:
    """Every tensor of ours must have exactly one official name, or the mapping is incomplete."""
    mapped = Counter(e.ours for e in entries if e.ours is not None)
    unmapped = [k for k in ours if k not in mapped]
    twice = [k for k, n in mapped.items() if n > 1]
    if unmapped or twice:
        raise ValueError(f"no official layout for {scope} tensors {unmapped[:10]}; mapped twice: {twice[:10]}")


def official_layout(model: nn.Module) -> list[Entry]:
    """Every official tensor of the full model (backbone then head), in the official order."""
    entries = mmseg_entries(model.backbone) + head_entries(model)
    check_coverage(entries, model.state_dict(), "model")
    return entries


def backbone_layout(backbone: nn.Module) -> list[Entry]:
    """mmseg Swin tensors, relative to the backbone (no prefix on our side)."""
    entries = mmseg_entries(backbone, official="backbone.", ours="")
    check_coverage(entries, backbone.state_dict(), "backbone")
    return entries


# ----------------------------------------------------------------------------- conversion


def shape_text(shape: Iterable[int]) -> str:
    """Shapes in error messages, e.g. (384, 768)."""
    return str(tuple(shape))


def convert_entries(
    state: Mapping[str, torch.Tensor],
    entries: list[Entry],
    template: Mapping[str, torch.Tensor],
    ignored_prefixes: tuple[str, ...] = (),
) -> tuple[dict[str, torch.Tensor], Counter[str]]:
    """Official tensors -> ours along `entries`; every missing, unexpected or mis-shaped key is an error.

    Synthetic tensors carry no information, so they may be absent; if present their shape is checked.
    """
    converted: dict[str, torch.Tensor] = {}
    dropped: Counter[str] = Counter()
    missing, wrong = [], []
    for entry in entries:
        expected = official_shape(entry, template)
        if entry.official not in state:
            if entry.ours is not None:
                missing.append(f"{entry.official} (expected shape {shape_text(expected)})")
            continue
        found = tuple(state[entry.official].shape)
        if found != expected:
            target = entry.ours or "dropped"
            wrong.append(f"{entry.official}: checkpoint {shape_text(found)} vs model {shape_text(expected)} [{target}]")
            continue
        if entry.ours is None:
            dropped[entry.synthetic or "unknown"] += 1
        else:
            converted[entry.ours] = to_ours(entry, state[entry.official])
    known = {e.official for e in entries}
    unexpected = []
    for key in state:
        if key in known:
            continue
        if key.startswith(ignored_prefixes):
            dropped["upernet_head"] += 1
        else:
            unexpected.append(key)
    raise_problems("checkpoint does not fit the model", missing, unexpected, wrong)
    return {k: converted[k] for k in template if k in converted}, dropped


def official_to_ours(
    state: Mapping[str, torch.Tensor], model: nn.Module
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Official DeMT/DeGMix state dict (keys `backbone.*`, `head.*`) -> our full state dict."""
    converted, dropped = convert_entries(state, official_layout(model), model.state_dict())
    return converted, ConversionReport("official", len(converted), dropped)


def mmseg_backbone_to_ours(
    state: Mapping[str, torch.Tensor], backbone: nn.Module
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """mmseg UperNet checkpoint -> our backbone's state dict (no prefix); the UperNet heads are ignored."""
    converted, dropped = convert_entries(state, backbone_layout(backbone), backbone.state_dict(), UPERNET_HEAD_PREFIXES)
    return converted, ConversionReport("mmseg_backbone", len(converted), dropped, scope="backbone")
