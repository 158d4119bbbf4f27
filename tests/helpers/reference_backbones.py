"""mmseg-layout reference backbones (ViT-B/16 of DeGMix, HRNet), written from SPEC 1.2 and the mmseg source facts.

Independent of `demt_exp.models` on purpose: module names and nesting follow mmseg (and the
HRNet-Image-Classification code its third-party ImageNet files come from), so `state_dict()` has the
names of the real files, and the forward pass is the official computation:
  * ViT (DeGMix): bias-free 16x16 patch conv on the input zero-padded bottom/right, class token,
    a 32x32 (+1) position table resized bicubically when the token count differs, pre-norm layers
    with nn.MultiheadAttention (mmcv's wrapper keeps it as `attn.attn`), mmcv FFN, outputs after
    layers 3, 6, 9, 12 without the class token; no final norm;
  * HRNet: stem, Bottleneck stage 1, BasicBlock multi-resolution modules whose fusion adds, for a
    lower-resolution branch, 1x1 conv + BN + bilinear x2^(j-i) (resized to the target if the sizes
    differ) and, for a higher-resolution one, stride-2 3x3 conv + BN (ReLU between), then ReLU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from demt_exp.bench.official_swin import FFN

# ----------------------------------------------------------------------------- ViT (DeGMix, mmseg names)


class MMCVAttention(nn.Module):
    """mmcv's MultiheadAttention wrapper: the torch module lives under `attn`."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


class EncoderLayer(nn.Module):
    """ln1 -> attention -> residual, ln2 -> FFN (residual inside)."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = MMCVAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return self.ffn(self.ln2(x), identity=x)


class PatchEmbedNoBias(nn.Module):
    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(3, dim, patch, stride=patch, bias=False)


class DegmixViT(nn.Module):
    """DeGMix ViT-B/16 (SPEC 1.2): what the official code builds and loads non-strictly from mmseg."""

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, out_layers: tuple[int, ...] = (2, 5, 8, 11)):
        super().__init__()
        self.patch = 16
        self.patch_embed = PatchEmbedNoBias(dim, self.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 32 * 32 + 1, dim))
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, 4 * dim) for _ in range(depth))
        self.out_layers = out_layers

    def position(self, h: int, w: int) -> torch.Tensor:
        if h * w == 32 * 32:
            return self.pos_embed
        table = self.pos_embed[:, 1:].reshape(1, 32, 32, -1).permute(0, 3, 1, 2)
        table = F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
        return torch.cat([self.pos_embed[:, :1], table], dim=1)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        height, width = image.shape[-2:]
        image = F.pad(image, (0, math.ceil(width / 16) * 16 - width, 0, math.ceil(height / 16) * 16 - height))
        x = self.patch_embed.projection(image)
        b, c, h, w = x.shape
        x = torch.cat([self.cls_token.expand(b, -1, -1), x.flatten(2).transpose(1, 2)], dim=1) + self.position(h, w)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.out_layers:
                outs.append(x[:, 1:].transpose(1, 2).reshape(b, c, h, w))
        return outs


# ------------------------------------------------------------ HRNet (mmseg / HRNet-Image-Classification names)

HRNET_CONFIGS: dict[str, dict[str, tuple[int, ...]]] = {
    # modules per stage 2-4, blocks per branch, widths (SPEC 1.2); stage 1: Bottleneck blocks of 64 planes.
    "hrnet18": {"modules": (1, 3, 2), "blocks": (2, 2, 2, 2), "widths": (18, 36, 72, 144), "stage1": (2,)},
    "hrnet48": {"modules": (1, 4, 3), "blocks": (4, 4, 4, 4), "widths": (48, 96, 192, 384), "stage1": (4,)},
}


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, planes: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, 4 * planes, 1, bias=False), nn.BatchNorm2d(4 * planes)
        self.downsample = conv_bn(cin, 4 * planes, 1, relu=False) if cin != 4 * planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class BasicBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class HRModule(nn.Module):
    def __init__(self, widths: tuple[int, ...], blocks: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*[BasicBlock(c) for _ in range(blocks)]) for c in widths)
        rows = []
        for i, ci in enumerate(widths):
            row: list[nn.Module | None] = []
            for j, cj in enumerate(widths):
                if j > i:
                    row.append(nn.Sequential(nn.Conv2d(cj, ci, 1, bias=False), nn.BatchNorm2d(ci)))
                elif j == i:
                    row.append(None)
                else:
                    steps = [conv_bn(cj, cj, 3, 2) for _ in range(i - j - 1)] + [conv_bn(cj, ci, 3, 2, relu=False)]
                    row.append(nn.Sequential(*steps))
            rows.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(rows)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            total = torch.zeros_like(xs[i])
            for j, path in enumerate(row):
                if j == i:
                    total = total + xs[j]
                elif j > i:
                    y = F.interpolate(path(xs[j]), scale_factor=2 ** (j - i), mode="bilinear", align_corners=False)
                    if y.shape[-2:] != xs[i].shape[-2:]:
                        y = F.interpolate(y, size=xs[i].shape[-2:], mode="bilinear", align_corners=False)
                    total = total + y
                else:
                    total = total + path(xs[j])
            out.append(F.relu(total))
        return out


def transition(previous: tuple[int, ...], current: tuple[int, ...]) -> nn.ModuleList:
    layers: list[nn.Module | None] = []
    for i, c in enumerate(current):
        if i < len(previous):
            layers.append(conv_bn(previous[i], c, 3) if previous[i] != c else None)
        else:
            layers.append(nn.Sequential(conv_bn(previous[-1], c, 3, 2)))
    return nn.ModuleList(layers)


class MMSegHRNet(nn.Module):
    """HRNetV2 trunk returning the four branch maps (strides 4-32)."""

    def __init__(self, variant: str) -> None:
        super().__init__()
        cfg = HRNET_CONFIGS[variant]
        widths = cfg["widths"]
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64)
        self.conv2, self.bn2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64)
        self.layer1 = nn.Sequential(*[Bottleneck(64 if k == 0 else 256, 64) for k in range(cfg["stage1"][0])])
        previous: tuple[int, ...] = (256,)
        for s, modules in enumerate(cfg["modules"], start=2):
            current = widths[:s]
            setattr(self, f"transition{s - 1}", transition(previous, current))
            setattr(self, f"stage{s}", nn.Sequential(*[HRModule(current, cfg["blocks"][0]) for _ in range(modules)]))
            previous = current

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(image))))))
        ys = [self.layer1(x)]
        for s in (2, 3, 4):
            layers = getattr(self, f"transition{s - 1}")
            xs = [ys[i] if t is None else t(ys[i] if i < len(ys) else ys[-1]) for i, t in enumerate(layers)]
            ys = getattr(self, f"stage{s}")(xs)
        return ys


def hrnet_classifier_tensors(widths: tuple[int, ...], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The ImageNet head of the HRNet-Image-Classification files: incre Bottlenecks to 128-1024, downsampling,
    2048, fc."""
    head = (32, 64, 128, 256)
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        shapes.update(
            {
                f"{prefix}.weight": (c,),
                f"{prefix}.bias": (c,),
                f"{prefix}.running_mean": (c,),
                f"{prefix}.running_var": (c,),
                f"{prefix}.num_batches_tracked": (),
            }
        )

    for i, (cin, planes) in enumerate(zip(widths, head)):
        p = f"incre_modules.{i}.0"
        shapes[f"{p}.conv1.weight"] = (planes, cin, 1, 1)
        bn(f"{p}.bn1", planes)
        shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
        bn(f"{p}.bn2", planes)
        shapes[f"{p}.conv3.weight"] = (4 * planes, planes, 1, 1)
        bn(f"{p}.bn3", 4 * planes)
        shapes[f"{p}.downsample.0.weight"] = (4 * planes, cin, 1, 1)
        bn(f"{p}.downsample.1", 4 * planes)
    for i in range(3):
        shapes[f"downsamp_modules.{i}.0.weight"] = (4 * head[i + 1], 4 * head[i], 3, 3)
        shapes[f"downsamp_modules.{i}.0.bias"] = (4 * head[i + 1],)
        bn(f"downsamp_modules.{i}.1", 4 * head[i + 1])
    shapes["final_layer.0.weight"], shapes["final_layer.0.bias"] = (2048, 1024, 1, 1), (2048,)
    bn("final_layer.1", 2048)
    shapes["classifier.weight"], shapes["classifier.bias"] = (1000, 2048), (1000,)
    return {
        k: torch.randint(0, 100, s, generator=generator)
        if k.endswith("num_batches_tracked")
        else torch.randn(s, generator=generator)
        for k, s in shapes.items()
    }
