"""`model.init`: every backbone's official (or timm ImageNet) file loads and reproduces the outputs of the model it
came from. (A training run with random weights: tests/integration/test_init_run.py.)

Each file is written in its real layout (key names and shapes as the published checkpoint, from
SPEC 1.2 and the mmseg / timm / HRNet source), with random values, by an independent reference
model (demt_exp/bench/official_model.py, tests/helpers/reference_backbones.py) or by timm itself.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from commands import SMALL_SWIN
from reference_backbones import (
    HRNET_CONFIGS,
    DegmixViT,
    MMSegHRNet,
    hrnet_classifier_tensors,
)
from safetensors.torch import save_file
from timm.models.vision_transformer import checkpoint_filter_fn as timm_vit_filter

from demt_exp.bench.official_model import randomize_
from demt_exp.bench.official_swin import SwinTransformer
from demt_exp.config.compose import compose_config
from demt_exp.models.hrnet import HRNetBackbone
from demt_exp.models.init_setting import RANDOM, describe_init, init_file
from demt_exp.models.load_weights import apply_init, backbone_to_ours
from demt_exp.models.model import build_model
from demt_exp.models.state_dict import load_state_dict_strict
from demt_exp.models.swin import SwinBackbone
from demt_exp.models.vit import VitBackbone

SIZES = ((45, 61), (64, 96))  # odd sizes pad (patch conv, windows, merging); 64x96 divides evenly


def upernet_file(backbone: dict[str, torch.Tensor], extra: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An mmseg UperNet checkpoint's state dict: `backbone.*` plus the heads we must ignore."""
    gen = torch.Generator().manual_seed(9)
    heads = {
        "decode_head.conv_seg.weight": torch.randn(150, 512, 1, 1, generator=gen),
        "decode_head.conv_seg.bias": torch.randn(150, generator=gen),
        "auxiliary_head.conv_seg.weight": torch.randn(150, 256, 1, 1, generator=gen),
    }
    return {**{f"backbone.{k}": v for k, v in {**backbone, **extra}.items()}, **heads}


def load_backbone(state: dict[str, torch.Tensor], backbone: torch.nn.Module):
    converted, report = backbone_to_ours(state, backbone)
    load_state_dict_strict(backbone, converted, "test file")
    return report


def assert_same_features(ours: list[torch.Tensor], theirs: list[torch.Tensor], atol: float = 1e-4) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)


@pytest.mark.slow  # two real-size Swin-B / Swin-L (87M / 195M parameters each)
@pytest.mark.parametrize(("variant", "window"), [("swin_b", 7), ("swin_l", 12)])
@torch.no_grad()
def test_mmseg_upernet_swin_b_and_l_load_and_match(variant: str, window: int) -> None:
    """Swin-B (window 7) and the window-12 Swin-L of mmseg's ADE20K UperNet (Swin-T/S: unit/models/test_convert.py)."""
    reference = randomize_(SwinTransformer(variant, window=window), seed=1).eval()
    backbone = SwinBackbone(variant, window_size=window).eval()
    report = load_backbone(upernet_file(reference.state_dict(), {}), backbone)
    assert report.source_format == "mmseg_backbone" and report.dropped["upernet_head"] == 3
    assert report.dropped["relative_position_index"] == 24 and not report.kept_at_init
    image = torch.randn(1, 3, 45, 61, generator=torch.Generator().manual_seed(2))
    assert_same_features(backbone(image), reference(image))


@torch.no_grad()
def test_mmseg_upernet_vit_b_loads_and_matches() -> None:
    reference = randomize_(DegmixViT(), seed=3).eval()
    gen = torch.Generator().manual_seed(4)
    # The real file also holds what the DeGMix ViT lacks (patch bias, final norm `ln1`) and the MLN neck.
    extra = {
        "patch_embed.projection.bias": torch.randn(768, generator=gen),
        "ln1.weight": torch.randn(768, generator=gen),
        "ln1.bias": torch.randn(768, generator=gen),
    }
    state = upernet_file(reference.state_dict(), extra)
    state.update({f"neck.lateral_convs.{i}.conv.weight": torch.randn(768, 768, 1, 1, generator=gen) for i in range(4)})
    backbone = VitBackbone("vit_b").eval()
    report = load_backbone(state, backbone)
    assert report.source_format == "mmseg_backbone"
    assert report.dropped["upernet_neck"] == 4 and report.dropped["upernet_head"] == 3
    assert sum(report.dropped.values()) == 4 + 3 + 3 and report.converted == len(backbone.state_dict())
    for size in SIZES:
        image = torch.randn(1, 3, *size, generator=gen)
        assert_same_features(backbone(image), reference(image))


@pytest.mark.parametrize("variant", ["hrnet18", pytest.param("hrnet48", marks=pytest.mark.slow)])
def test_mmseg_third_party_imagenet_hrnet_loads_and_matches(variant: str, tmp_path: Path) -> None:
    reference = randomize_(MMSegHRNet(variant), seed=5).eval()
    gen = torch.Generator().manual_seed(6)
    head = hrnet_classifier_tensors(HRNET_CONFIGS[variant]["widths"], gen)
    path = tmp_path / ("hrnetv2_w18_small-b5a04e21.pth" if variant == "hrnet18" else "hrnetv2_w48-d2186c55.pth")
    torch.save({**reference.state_dict(), **head}, path)  # bare state dict, as the third-party files
    cfg = compose_config([f"backbone={variant}", "tasks=nyud", "dataset.num_semseg_classes=40", f"model.init={path}"])
    model = build_model(cfg).eval()
    head_before = {k: v.clone() for k, v in model.heads.state_dict().items()}
    assert apply_init(model, cfg) == str(path)
    assert all(torch.equal(v, model.heads.state_dict()[k]) for k, v in head_before.items())  # backbone only
    with torch.no_grad():
        image = torch.randn(1, 3, 64, 96, generator=gen)
        assert_same_features(model.backbone(image), reference(image))


def test_timm_imagenet_hrnet_file_loads_its_trunk() -> None:
    body = timm.create_model("hrnet_w18_small_v2", pretrained=False)
    state = randomize_(body, seed=7).state_dict()
    backbone = HRNetBackbone("hrnet18")
    report = load_backbone(state, backbone)
    head_keys = [
        k for k in state if k.startswith(("incre_modules.", "downsamp_modules.", "final_layer.", "classifier."))
    ]
    assert report.source_format == "imagenet" and sum(report.dropped.values()) == len(head_keys) > 0
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, state[key]), key


@torch.no_grad()
def test_timm_swin_t_safetensors_loads_and_matches(tmp_path: Path) -> None:
    """A timm ImageNet Swin-T file (`model.safetensors` layout): timm's model at 448 is the reference.

    At 448 every stage grid is a multiple of the window, where timm's and mmseg's window
    attention agree; our per-stage output norms are not in an ImageNet file and keep their
    initialisation (weight 1, bias 0), so the reference is timm's stage output, layer-normed.
    """
    source = randomize_(timm.create_model("swin_tiny_patch4_window7_224", pretrained=False), seed=8).eval()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    cfg = compose_config([f"model.init={path}"])
    model = build_model(cfg).eval()
    apply_init(model, cfg)
    reference = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=448).eval()
    reference.load_state_dict(source.state_dict(), strict=False)  # attention masks are rebuilt for 448
    image = torch.randn(1, 3, 448, 448, generator=torch.Generator().manual_seed(9))
    expected = [
        F.layer_norm(f.permute(0, 2, 3, 1), f.shape[1:2]).permute(0, 3, 1, 2)
        for f in reference.forward_intermediates(image, intermediates_only=True)
    ]
    assert_same_features(model.backbone(image), expected)


@pytest.mark.slow  # three real-size ViT-B, one at 512x512
@torch.no_grad()
def test_timm_vit_b_imagenet_file_loads_and_matches() -> None:
    """timm ViT-B/16 at 224 (14x14 table): the table is resized to 32x32 as mmseg's init does.

    The reference is timm's ViT at 512 loaded through timm's own checkpoint filter (bicubic, no
    antialias). The DeGMix ViT has no patch bias, so the file's bias is zero here; a non-zero one
    is dropped and reported (checked on the report).
    """
    source = randomize_(timm.create_model("vit_base_patch16_224", pretrained=False), seed=10).eval()
    state = source.state_dict()
    backbone = VitBackbone("vit_b").eval()
    report = load_backbone(state, backbone)
    assert report.source_format == "timm"
    assert sum(report.dropped.values()) == 1 + 2 + 2  # patch bias, final norm, classifier
    state["patch_embed.proj.bias"] = torch.zeros(768)
    reference = timm.create_model("vit_base_patch16_224", pretrained=False, img_size=512).eval()
    reference.load_state_dict(timm_vit_filter(state, reference, antialias=False))
    image = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(11))
    expected = reference.forward_intermediates(image, indices=[2, 5, 8, 11], intermediates_only=True)
    assert_same_features(backbone(image), expected, atol=2e-4)  # LayerNorm eps 1e-5 (mmseg) vs timm's 1e-6


def test_init_names_one_file_or_random(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    cfg = compose_config([])
    assert init_file(cfg) is None and describe_init(cfg) == RANDOM
    with caplog.at_level(logging.WARNING, logger="demt_exp"), torch.device("meta"):
        assert apply_init(build_model(cfg), cfg) == RANDOM
    assert "RANDOM weights" in caplog.text and "model.init=<file>" in caplog.text
    assert cfg.model.init == RANDOM  # what the run's config.yaml records
    assert describe_init(compose_config(["model.init=b.pt"])) == "b.pt"
    with pytest.raises(Exception, match=r"Could not override 'model.weights'"):  # the 0.1 alias is gone
        compose_config(["model.weights=a.pt"])
    with pytest.raises(FileNotFoundError, match=r"missing\.pth does not exist: .*model\.init=random"):
        cfg = compose_config([*SMALL_SWIN, f"model.init={tmp_path / 'missing.pth'}"])
        apply_init(build_model(cfg), cfg)


def test_a_file_of_another_backbone_is_refused_naming_the_keys() -> None:
    with torch.device("meta"):
        backbone = SwinBackbone("swin_t")
        state = HRNetBackbone("hrnet18").state_dict()
    converted, _ = backbone_to_ours(state, backbone)
    with pytest.raises(
        ValueError,
        match=r"cannot load hrnet\.pth into SwinBackbone: missing keys: patch_embed\..*"
        r"unexpected keys: bn1\.bias",
    ):
        load_state_dict_strict(backbone, converted, "hrnet.pth")
