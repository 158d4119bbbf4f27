"""Backbones and the FeatConv neck: exact parameter counts (SPEC 1.2, 1.9), official forward semantics, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from paths import REPO_ROOT
from torch import nn

from demt_exp.config.compose import compose_config
from demt_exp.models.hrnet import HRNetBackbone, hr_module_forward
from demt_exp.models.load_weights import apply_init
from demt_exp.models.model import build_model
from demt_exp.models.necks import FeatConvNeck
from demt_exp.models.swin import SwinBackbone
from demt_exp.models.vit import VitBackbone, grid_pos_embed, vit_grid

BACKBONE_CONFS = sorted(p.stem for p in (REPO_ROOT / "conf" / "backbone").glob("*.yaml"))


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def vit_b() -> VitBackbone:
    torch.manual_seed(0)
    return VitBackbone("vit_b").eval()


@pytest.fixture(scope="module")
def hrnet18() -> HRNetBackbone:
    torch.manual_seed(0)
    return HRNetBackbone("hrnet18").eval()


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: SwinBackbone("swin_l", window_size=12), 195_201_204),
        (lambda: SwinBackbone("swin_l", window_size=7), 194_998_164),
        (lambda: VitBackbone("vit_b"), 86_432_256),
        (lambda: VitBackbone("vit_l"), 304_146_432),
        (lambda: HRNetBackbone("hrnet18"), 3_860_720),
        (lambda: HRNetBackbone("hrnet48"), 65_325_120),
        (lambda: FeatConvNeck([768] * 4), 5_901_312),
    ],
)
def test_parameter_counts(build, expected: int) -> None:
    with torch.device("meta"):
        assert count(build()) == expected


def test_swin_l_window_sets_relative_position_tables() -> None:
    with torch.device("meta"):
        model = SwinBackbone("swin_l", window_size=12)
    block = model.stages[3].blocks[1]
    assert block.attn.relative_position_bias_table.shape == ((2 * 12 - 1) ** 2, 48)
    assert block.shift_size == (6, 6)
    assert model.out_channels == [192, 384, 768, 1536] and model.strides == [4, 8, 16, 32]


def test_vit_patch_conv_has_no_bias_and_no_final_norm(vit_b: VitBackbone) -> None:
    assert vit_b.patch_embed.proj.bias is None
    assert vit_b.pos_embed.shape == (1, 32 * 32 + 1, 768)
    assert all(block.norm1.eps == 1e-5 for block in vit_b.blocks)
    assert not any("norm." in name or name.startswith("head") for name, _ in vit_b.named_parameters())
    assert vit_b.out_channels == [768] * 4 and vit_b.strides == [16] * 4


@pytest.mark.parametrize(("size", "grid"), [((45, 61), (3, 4)), ((425, 560), (27, 35))])
def test_vit_shapes_at_odd_sizes(vit_b: VitBackbone, size: tuple[int, int], grid: tuple[int, int]) -> None:
    assert vit_grid(*size) == grid
    with torch.no_grad():
        features = vit_b(torch.randn(1, 3, *size))
    assert [tuple(f.shape) for f in features] == [(1, 768, *grid)] * 4


def test_vit_pos_embed_resize_matches_mmseg(vit_b: VitBackbone) -> None:
    pos = vit_b.pos_embed.detach()
    assert torch.equal(grid_pos_embed(pos, (32, 32), (32, 32)), pos)
    # Same token count, other shape: the official code adds the table without resizing.
    assert torch.equal(grid_pos_embed(pos, (16, 64), (32, 32)), pos)
    table = pos[:, 1:].reshape(1, 32, 32, 768).permute(0, 3, 1, 2)
    expected = F.interpolate(table, size=(27, 35), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
    resized = grid_pos_embed(pos, (27, 35), (32, 32))
    assert resized.shape == (1, 27 * 35 + 1, 768)
    assert torch.equal(resized[:, :1], pos[:, :1])
    torch.testing.assert_close(resized[:, 1:], expected, rtol=0, atol=0)


def test_vit_outputs_equal_manual_blocks(vit_b: VitBackbone) -> None:
    image = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        features = vit_b(image)
        padded = F.pad(image, (0, 3, 0, 3))  # 48 x 64: the next multiples of 16, zeros bottom/right
        tokens = F.conv2d(padded, vit_b.patch_embed.proj.weight, stride=16).flatten(2).transpose(1, 2)
        table = vit_b.pos_embed[:, 1:].reshape(1, 32, 32, 768).permute(0, 3, 1, 2)
        pos = F.interpolate(table, size=(3, 4), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
        cls_token = vit_b.cls_token.expand(2, -1, -1) + vit_b.pos_embed[:, :1]
        x = torch.cat((cls_token, tokens + pos), dim=1)
        expected = []
        for index, block in enumerate(vit_b.blocks):
            x = block(x)
            if index in (2, 5, 8, 11):
                expected.append(x[:, 1:].transpose(1, 2).reshape(2, 768, 3, 4))
    for got, want in zip(features, expected):
        torch.testing.assert_close(got, want)


def test_vit_l_default_layers_and_attention_branch_without_drop_path() -> None:
    with torch.device("meta"):
        model = VitBackbone("vit_l", drop_path_rate=0.2)
    assert model.out_indices == (5, 11, 17, 23) and model.out_channels == [1024] * 4
    assert all(isinstance(block.drop_path1, nn.Identity) for block in model.blocks)
    assert model.blocks[-1].drop_path2.drop_prob == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("size", "shapes"),
    [
        ((45, 61), [(12, 16), (6, 8), (3, 4), (2, 2)]),
        ((33, 97), [(9, 25), (5, 13), (3, 7), (2, 4)]),
        ((425, 560), [(107, 140), (54, 70), (27, 35), (14, 18)]),
    ],
)
def test_hrnet_shapes_at_odd_sizes(hrnet18: HRNetBackbone, size: tuple[int, int], shapes: list) -> None:
    with torch.no_grad():
        features = hrnet18(torch.randn(1, 3, *size))
    assert [tuple(f.shape[1:]) for f in features] == [(c, *s) for c, s in zip([18, 36, 72, 144], shapes)]
    assert hrnet18.out_channels == [18, 36, 72, 144] and hrnet18.strides == [4, 8, 16, 32]


def test_hrnet_equals_timm_modules_with_bilinear_fusion_at_divisible_size(hrnet18: HRNetBackbone) -> None:
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        features = hrnet18(image)
        m = hrnet18
        x = m.layer1(F.relu(m.bn2(m.conv2(F.relu(m.bn1(m.conv1(image)))))))
        ys = m.stage2([t(x) for t in m.transition1])
        ys = m.stage3([ys[i] if isinstance(t, nn.Identity) else t(ys[-1]) for i, t in enumerate(m.transition2)])
        ys = m.stage4([ys[i] if isinstance(t, nn.Identity) else t(ys[-1]) for i, t in enumerate(m.transition3)])
    for got, want in zip(features, ys):
        torch.testing.assert_close(got, want)


def test_hrnet_fusion_resizes_after_the_upsampling_like_mmseg(hrnet18: HRNetBackbone) -> None:
    module = hrnet18.stage2[0]
    x0, x1 = torch.randn(1, 18, 11, 15), torch.randn(1, 36, 6, 8)
    with torch.no_grad():
        fused = hr_module_forward(module, [x0, x1])
        b0, b1 = module.branches[0](x0), module.branches[1](x1)
        conv, bn = module.fuse_layers[0][1][0], module.fuse_layers[0][1][1]
        up = F.interpolate(bn(conv(b1)), scale_factor=2, mode="bilinear", align_corners=False)
        expected0 = F.relu(b0 + F.interpolate(up, size=(11, 15), mode="bilinear", align_corners=False))
        expected1 = F.relu(module.fuse_layers[1][0](b0) + b1)
    torch.testing.assert_close(fused[0], expected0)
    torch.testing.assert_close(fused[1], expected1)


def test_featconv_shapes_and_upsampling() -> None:
    neck = FeatConvNeck([32, 48, 64, 80], out_channels=24, mid_channels=8).eval()
    features = [torch.randn(2, c, 3, 5) for c in (32, 48, 64, 80)]
    with torch.no_grad():
        out = neck(features)
        branches = [b(f) for b, f in zip(neck.branches, features)]
        upsampled = [F.interpolate(b, size=(12, 20), mode="bilinear", align_corners=False) for b in branches]
        expected = neck.fuse(torch.cat(upsampled, 1))
    assert out.shape == (2, 24, 12, 20)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert not any(isinstance(m, nn.Conv2d) and m.bias is not None for m in neck.modules())
    with pytest.raises(ValueError, match="spatial size"):
        neck([torch.randn(1, c, 3, 5 + i) for i, c in enumerate((32, 48, 64, 80))])


@pytest.mark.parametrize("name", BACKBONE_CONFS)
def test_backbone_configs_compose_and_instantiate(compose, name: str) -> None:
    cfg = compose([f"backbone={name}"]).backbone
    assert cfg.variant == name
    assert "weights" not in cfg  # one entry point for weights files: model.init
    with torch.device("meta"):
        backbone = instantiate(cfg)
    assert len(backbone.out_channels) == len(backbone.strides) == 4


def test_big_backbone_config_arguments(compose) -> None:
    swin_l = compose(["backbone=swin_l"]).backbone
    assert swin_l._target_ == "demt_exp.models.swin.SwinBackbone" and swin_l.window_size == 12
    targets = {"vit_b": "vit.VitBackbone", "vit_l": "vit.VitBackbone", "hrnet48": "hrnet.HRNetBackbone"}
    for name, target in targets.items():
        cfg = compose([f"backbone={name}"]).backbone
        assert cfg._target_ == f"demt_exp.models.{target}" and cfg.variant == name


def test_hrnet18_config_instantiates_and_runs(compose) -> None:
    backbone = instantiate(compose(["backbone=hrnet18"]).backbone).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 40, 52))
    assert [f.shape[1] for f in features] == [18, 36, 72, 144]


def test_hrnet_weights_file_round_trip(hrnet18: HRNetBackbone, tmp_path: Path) -> None:
    path = tmp_path / "hrnet18.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in hrnet18.state_dict().items()}}, path)
    cfg = compose_config(["backbone=hrnet18", f"model.init={path}"])
    model = build_model(cfg)
    report = apply_init(model, cfg)
    assert report == str(path)
    for key, value in hrnet18.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value)


def test_a_swin_of_another_width_and_depth_has_the_asked_shape_and_runs() -> None:
    """embed_dim / depths / num_heads override the variant's (the small Swin the end-to-end tests train)."""
    small = SwinBackbone("swin_t", embed_dim=8, depths=[2, 1, 1, 2], num_heads=[1, 2, 2, 4])
    assert small.out_channels == [8, 16, 32, 64]
    assert [len(stage.blocks) for stage in small.stages] == [2, 1, 1, 2]
    assert [stage.blocks[0].attn.num_heads for stage in small.stages] == [1, 2, 2, 4]
    shapes = [tuple(f.shape) for f in small(torch.randn(1, 3, 40, 56))]
    assert shapes == [(1, 8, 10, 14), (1, 16, 5, 7), (1, 32, 3, 4), (1, 64, 2, 2)]
    assert SwinBackbone("swin_t").out_channels == [96, 192, 384, 768]  # None keeps the variant's
