"""HRNetV2 backbone: timm's parameters, the mmseg forward semantics (SPEC 1.2).

The official code (a copy of mmseg's HRNet) returns the four branch outputs of the last stage.
timm builds exactly the same stem, Bottleneck stage 1, transitions and multi-resolution modules
(same parameter names, so the mmseg ImageNet checkpoints map one to one once their classifier
keys are dropped), but its fusion upsamples lower-resolution branches with *nearest* neighbours by
a fixed factor and fails when a size is not a multiple of 32. We keep timm's layers and run the
mmseg fusion: 1x1 conv + BN, bilinear x2^(j-i) (align_corners=False), then a bilinear resize to the
target branch size whenever the two differ. Every stride-2 layer maps n -> ceil(n/2), so any input
size works without padding; the branch maps have sizes ceil(H/4), ceil(H/8), ... up to rounding
that compounds (e.g. 45 -> 23 -> 12 -> 6 -> 3 -> 2).

timm's classification head ('incre' modules, downsampling, final layer, classifier) is not built.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from demt_exp.models.state_dict import BackboneState
from demt_exp.models.timm_body import create_timm_body

HRNET_VARIANTS: dict[str, str] = {
    # W18-small (v2): modules per stage (1, 1, 3, 2), 2 blocks per branch, widths 18/36/72/144.
    "hrnet18": "hrnet_w18_small_v2",
    # W48: modules (1, 1, 4, 3), 4 blocks per branch, widths 48/96/192/384.
    "hrnet48": "hrnet_w48",
}

# The trunk modules kept from timm, under timm's (= mmseg's) names.
_TRUNK = (
    "conv1",
    "bn1",
    "conv2",
    "bn2",
    "layer1",
    "transition1",
    "stage2",
    "transition2",
    "stage3",
    "transition3",
    "stage4",
)


def _bilinear_fusion_upsampling(stage: nn.Module) -> None:
    """Swap timm's nearest-neighbour fusion upsampling for mmseg's bilinear one (no parameters change)."""
    for module in stage:
        for i, row in enumerate(module.fuse_layers):
            for j, path in enumerate(row):
                if j > i:
                    path[2] = nn.Upsample(scale_factor=2 ** (j - i), mode="bilinear", align_corners=False)


def hr_module_forward(module: nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """One multi-resolution module: per-branch blocks, then the mmseg exchange (sum in branch order, ReLU)."""
    xs = [branch(x) for branch, x in zip(module.branches, xs)]
    fused = []
    for i, row in enumerate(module.fuse_layers):
        total = None
        for j, path in enumerate(row):
            y = path(xs[j])
            if j > i and y.shape[-2:] != xs[i].shape[-2:]:
                y = F.interpolate(y, size=xs[i].shape[-2:], mode="bilinear", align_corners=False)
            total = y if total is None else total + y
        fused.append(F.relu(total))
    return fused


def _transition(layers: nn.ModuleList, ys: list[torch.Tensor]) -> list[torch.Tensor]:
    """Branch inputs of the next stage; as mmseg, every non-identity transition reads the last branch."""
    return [ys[i] if isinstance(t, nn.Identity) else t(ys[-1]) for i, t in enumerate(layers)]


class HRNetBackbone(nn.Module):
    """HRNetV2 feature extractor returning the four branch maps at strides 4, 8, 16 and 32."""

    def __init__(self, variant: str = "hrnet18") -> None:
        super().__init__()
        body = create_timm_body(HRNET_VARIANTS, variant, "HRNet", head="none")
        for name in _TRUNK:
            self.add_module(name, getattr(body, name))
        for stage in (self.stage2, self.stage3, self.stage4):
            _bilinear_fusion_upsampling(stage)
        self.out_channels: list[int] = [info["num_chs"] for info in body.feature_info[1:]]
        self.strides: list[int] = [info["reduction"] for info in body.feature_info[1:]]

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(image)))
        x = F.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        for transition, stage in (
            (self.transition1, self.stage2),
            (self.transition2, self.stage3),
            (self.transition3, self.stage4),
        ):
            ys = _transition(transition, ys)
            for module in stage:
                ys = hr_module_forward(module, ys)
        return ys


# The ImageNet classification head of HRNet-Image-Classification (and timm): not part of the trunk.
CLASSIFIER_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


def checkpoint_filter_fn(state: Mapping[str, torch.Tensor], backbone: HRNetBackbone) -> BackboneState:
    """mmseg third-party ImageNet HRNet (`hrnetv2_w18_small`, `hrnetv2_w48`), timm's, or ours -> our keys.

    All three use the HRNet-Image-Classification names for the trunk, so only the classification
    head is dropped (SPEC 1.2: the official code loads the rest strictly).
    """
    converted = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    dropped: Counter[str] = Counter()
    if len(converted) < len(state):
        dropped["ImageNet classification head"] = len(state) - len(converted)
    return BackboneState("imagenet" if dropped else "ours", converted, dropped)
