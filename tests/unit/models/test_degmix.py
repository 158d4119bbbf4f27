"""DeGMix: exact sizes of both projection variants, linear attention, channel gate, batch independence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from demt_exp.engine.optim import parameter_groups
from demt_exp.models.degmix import ChannelGate, GatedTaskDecoder, LinearTaskAttention
from demt_exp.models.encoder import DeformableMixerEncoder
from demt_exp.models.model import MultiTaskModel, build_model


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


NYUD = ["tasks=nyud", "dataset.num_semseg_classes=40", "encoder=degmix", "decoder=degmix"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # Released head minus the never-used linear1 (39,100,859 - 369,408, SPEC 8 item 9).
        (["backbone=swin_t", "encoder.projection=patch"], 38_731_451),
        # Per-pixel stride-4 projection: the README counts (SPEC 1.9).
        (["backbone=swin_t", "encoder.projection=linear"], 33_201_851),
        (["backbone=swin_s", "encoder.projection=linear"], 54_519_755),
    ],
)
def test_degmix_parameter_counts(compose, overrides: list[str], expected: int) -> None:
    assert count(build_model(compose(NYUD + overrides))) == expected


def test_degmix_building_blocks_match_spec() -> None:
    assert count(LinearTaskAttention(256, 2)) == 263_936  # AnyAttention
    assert count(ChannelGate(256, 512)) == 264_192  # sGATE
    decoder = GatedTaskDecoder(["a", "b", "c", "d"])
    # task_fusion + smlp + 4 smlp2 + 4 AnyAttention + shared sGATE (SPEC 1.9 head table)
    assert count(decoder) == 263_168 + 66_304 + 265_216 + 1_055_744 + 264_192


def test_released_projection_works_on_a_stride_16_grid() -> None:
    """SPEC 1.8: 425x560 -> stride-4 map 107x140 -> padded to 108x140 -> 27x35 tokens."""
    encoder = DeformableMixerEncoder([96, 192, 384, 768], ["semseg"], depth=2, projection="patch").eval()
    maps = [
        torch.randn(1, c, h, w) for c, (h, w) in zip([96, 192, 384, 768], [(107, 140), (54, 70), (27, 35), (14, 18)])
    ]
    with torch.no_grad():
        assert encoder(maps)["semseg"].shape == (1, 256, 27, 35)
    with pytest.raises(ValueError, match="encoder.projection='strided'"):
        DeformableMixerEncoder([8], ["a"], projection="strided")


def test_associative_linear_attention_equals_explicit_form() -> None:
    torch.manual_seed(0)
    attention = LinearTaskAttention(64, 2).double()
    query, context = torch.randn(2, 30, 64).double(), torch.randn(2, 120, 64).double()
    q, k, v = attention.project(query, context)
    scale = (64 / 2) ** -0.5
    explicit = (q @ k.transpose(-2, -1) * scale) @ v  # materialises (B, H, Nq, Nk) as the released code does
    expected = attention.proj(explicit.transpose(1, 2).reshape(2, 30, 64))
    assert torch.allclose(attention(query, context), expected, atol=1e-4)
    softmax = torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1) @ v
    expected_softmax = attention.proj(softmax.transpose(1, 2).reshape(2, 30, 64))
    assert torch.allclose(attention(query, context, softmax=True), expected_softmax, atol=1e-6)


def test_channel_gate_starts_as_an_all_ones_gate() -> None:
    torch.manual_seed(0)
    gate = ChannelGate(16, 32)
    x = torch.randn(2, 5, 16)
    value = torch.nn.functional.gelu(gate.fc1(gate.norm(x)))[..., :16]
    assert torch.allclose(gate(x), x + gate.fc2(value), atol=1e-6)
    with pytest.raises(ValueError, match="gate_hidden=33"):
        ChannelGate(16, 33)


def test_official_query_reads_every_fused_token_of_every_task() -> None:
    """Un-normalised global attention: the query output of a task changes when any task's token changes."""
    torch.manual_seed(0)
    decoder = GatedTaskDecoder(["a", "b"], dim=32).eval()
    maps = {t: torch.randn(1, 32, 4, 5) for t in ("a", "b")}
    base = decoder(maps)["a"]
    maps["b"] = maps["b"].clone()
    maps["b"][0, :, 3, 4] += 1.0  # one far-away token of the other task
    changed = decoder(maps)["a"]
    assert (changed - base).abs().amax(dim=1).min() > 0  # every pixel of task a moved


@pytest.mark.parametrize(("attention", "kv_stride"), [("official", 1), ("global", 2)])
def test_degmix_predictions_do_not_depend_on_the_batch(compose, attention: str, kv_stride: int) -> None:
    """The released code adds image 0's task-query result to every image (SPEC 8 item 4); we do not."""
    torch.manual_seed(0)
    cfg = compose(
        [
            "encoder=degmix",
            "decoder=degmix",
            "encoder.dim=32",
            "tasks=nyud",
            f"decoder.attention={attention}",
            f"decoder.kv_stride={kv_stride}",
            "backbone.drop_path_rate=0",
        ]
    )
    model = build_model(cfg).eval()
    images = torch.randn(4, 3, 70, 90)
    with torch.no_grad():
        together = model(images)
        alone = model(images[3:4])
    for task in together:
        assert together[task].shape[-2:] == (70, 90)
        assert torch.allclose(together[task][3:4], alone[task], atol=1e-5), task


def test_frozen_backbone_gets_no_gradient_and_stays_in_eval_mode(compose) -> None:
    cfg = compose(["encoder=degmix", "decoder=degmix", "encoder.dim=32", "tasks=nyud", "model.freeze_backbone=true"])
    model = build_model(cfg)
    assert isinstance(model, MultiTaskModel)
    model.train()
    assert not model.backbone.training and all(not m.training for m in model.backbone.modules())
    assert model.decoder.training
    out = model(torch.randn(2, 3, 40, 48))
    sum(o.mean() for o in out.values()).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.heads.parameters())
    groups = parameter_groups(model, 1e-3, 1.0)
    assert [g["name"] for g in groups] == ["head"]
    trainable = sum(p.numel() for g in groups for p in g["params"])
    assert trainable == count(model) - count(model.backbone)


def test_fcn_baselines_single_and_multi_task(compose) -> None:
    """ATRC FCNHead per task on the concatenated maps: 3x3 conv C_in -> C_in/4, BN, ReLU, 1x1 logits."""
    single = build_model(
        compose(
            ["encoder=concat", "decoder=fcn", "tasks=nyud", "tasks.names=[semseg]", "dataset.num_semseg_classes=40"]
        )
    )
    head = 1440 * 360 * 9 + 2 * 360 + 360 * 40 + 40
    assert count(single) == 27_520_698 + head
    multi = build_model(compose(["encoder=concat", "decoder=fcn", "tasks=nyud", "dataset.num_semseg_classes=40"]))
    assert multi.tasks == ("semseg", "depth", "normals", "edge")
    assert count(multi) == 27_520_698 + 4 * (1440 * 360 * 9 + 2 * 360) + 360 * 45 + 45
    with torch.no_grad():
        out = multi.eval()(torch.randn(1, 3, 37, 53))
    assert {t: o.shape[1] for t, o in out.items()} == {"semseg": 40, "depth": 1, "normals": 3, "edge": 1}


def test_degmix_vit_b_count_matches_spec_without_the_unused_projection(compose) -> None:
    """SPEC 1.9: ViT-B + DemtViTHead = 98,014,721 including the never-used linear1 (369,408)."""
    cfg = compose(
        [
            "backbone=vit_b",
            "encoder=degmix_vit",
            "decoder=degmix",
            "tasks=nyud",
            "dataset.num_semseg_classes=40",
            "model.bottleneck_channels=180",
        ]
    )
    model = build_model(cfg)
    assert count(model) == 98_014_721 - 369_408
    assert count(model.encoder.neck) == 5_901_312


def test_neck_and_projection_typos_are_rejected_by_name() -> None:
    with pytest.raises(ValueError, match="encoder.neck='fpn'"):
        DeformableMixerEncoder([8, 8], ["a"], neck="fpn")
    with pytest.raises(ValueError, match="projection=none needs the neck to output dim=256"):
        DeformableMixerEncoder([8, 8], ["a"], projection="none")
