"""DeMT model: exact parameter counts, official attention semantics, batch independence, any input size."""

from __future__ import annotations

import socket

import pytest
import timm
import torch
from torch import nn

from demt_exp.models.attention import per_pixel_task_attention, value_output_map
from demt_exp.models.decoder import TaskAwareDecoder
from demt_exp.models.encoder import DeformableMixerEncoder
from demt_exp.models.mixer import DeformableMixerBlock
from demt_exp.models.model import MultiTaskModel, build_model
from demt_exp.models.swin import SwinBackbone

NYUD = {"semseg": 40, "depth": 1, "normals": 3, "edge": 1}
PASCAL = {"semseg": 21, "human_parts": 7, "sal": 2, "normals": 3, "edge": 1}


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def demt(variant: str, task_channels: dict[str, int], **decoder_kwargs) -> MultiTaskModel:
    backbone = SwinBackbone(variant)
    tasks = list(task_channels)
    encoder = DeformableMixerEncoder(sum(backbone.out_channels), tasks)
    return MultiTaskModel(backbone, encoder, TaskAwareDecoder(tasks, **decoder_kwargs), task_channels)


@pytest.mark.parametrize(
    ("variant", "tasks", "expected"),
    [
        ("swin_t", NYUD, 32_070_259),
        ("swin_s", NYUD, 53_388_163),
        ("swin_b", NYUD, 91_973_597),
        ("swin_t", PASCAL, 33_028_902),
    ],
)
def test_parameter_counts_match_spec(variant: str, tasks: dict[str, int], expected: int) -> None:
    with torch.device("meta"):  # the real structure, without initialising 30-90M weights
        assert count(demt(variant, tasks)) == expected


def test_component_counts_match_spec_building_blocks() -> None:
    """SPEC 1.9: DefMixer block 216,082; Swin-T backbone 27,520,698; DeMT head (NYUD, Swin-T) 4,549,561."""
    assert count(DeformableMixerBlock(256)) == 216_082
    model = demt("swin_t", NYUD)
    assert count(model.backbone) == 27_520_698
    assert count(model) - count(model.backbone) == 4_549_561
    assert count(model.decoder.task_fusion) == 263_168


def test_random_init_needs_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    model = demt("swin_t", {"semseg": 5})
    assert count(model) > 0


@pytest.fixture(scope="module")
def small_model() -> MultiTaskModel:
    torch.manual_seed(0)
    backbone = SwinBackbone("swin_t", drop_path_rate=0.0)
    tasks = ["semseg", "depth", "normals"]
    encoder = DeformableMixerEncoder(sum(backbone.out_channels), tasks, dim=64)
    decoder = TaskAwareDecoder(tasks, dim=64)
    return MultiTaskModel(backbone, encoder, decoder, {"semseg": 6, "depth": 1, "normals": 3}).eval()


@pytest.mark.parametrize(("attention", "kv_stride"), [("official", 1), ("global", 1), ("global", 2)])
def test_predictions_do_not_depend_on_the_batch(small_model: MultiTaskModel, attention: str, kv_stride: int) -> None:
    small_model.decoder.attention, small_model.decoder.kv_stride = attention, kv_stride
    images = torch.randn(4, 3, 45, 61, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        together = small_model(images)
        alone = small_model(images[2:3])
    for task, pred in together.items():
        assert pred.shape[-2:] == (45, 61)
        assert torch.allclose(pred[2:3], alone[task], atol=1e-5), task
    small_model.decoder.attention, small_model.decoder.kv_stride = "official", 1


@pytest.mark.parametrize("size", [(33, 47), (64, 64), (85, 117), (29, 200)])
def test_any_input_size(small_model: MultiTaskModel, size: tuple[int, int]) -> None:
    with torch.no_grad():
        out = small_model(torch.randn(1, 3, *size))
    assert {t: tuple(p.shape) for t, p in out.items()} == {
        "semseg": (1, 6, *size),
        "depth": (1, 1, *size),
        "normals": (1, 3, *size),
    }


def test_backbone_stage_shapes_follow_mmseg_padding() -> None:
    """SPEC 1.8: 425x560 pads to 428x560 -> 107x140, 54x70, 27x35, 14x18."""
    backbone = SwinBackbone("swin_t").eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 425, 560))
    assert [tuple(f.shape[1:]) for f in feats] == [(96, 107, 140), (192, 54, 70), (384, 27, 35), (768, 14, 18)]


def test_backbone_equals_timm_where_windows_divide_the_maps() -> None:
    """At 448x448 every stage (112, 56, 28, 14) is a multiple of the window and larger than it,
    where timm's order (shift, then pad) and mmseg's (pad, then shift) coincide."""
    torch.manual_seed(0)
    backbone = SwinBackbone("swin_t", drop_path_rate=0.0).eval()
    reference = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0, img_size=448).eval()
    reference.patch_embed.load_state_dict(backbone.patch_embed.state_dict())
    reference.layers.load_state_dict(backbone.stages.state_dict())
    image = torch.randn(1, 3, 448, 448)
    with torch.no_grad():
        ours = backbone(image)
        theirs = reference.forward_intermediates(image, intermediates_only=True)
    for ours_map, their_map, norm in zip(ours, theirs, backbone.norms):
        expected = norm(their_map.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        assert torch.allclose(ours_map, expected, atol=1e-4)


def test_official_task_fusion_equals_sequence_first_mha_at_one_image() -> None:
    """The released code feeds (1, T*hw, C) to a sequence-first MHA: sequence length 1 per token."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4)
    tokens = torch.randn(1, 50, 32)
    official, _ = mha(tokens, tokens, tokens)  # exactly the official call at B = 1
    assert torch.allclose(value_output_map(mha, tokens), official, atol=1e-5)


def test_official_task_query_equals_per_pixel_mha_over_tasks() -> None:
    """SPEC 1.5.4: for each pixel, attention over the T fused features at that pixel."""
    torch.manual_seed(0)
    tasks, pixels, dim = 4, 30, 32
    mha = nn.MultiheadAttention(dim, 4)
    query = torch.randn(1, pixels, dim)
    fused = torch.randn(1, tasks, pixels, dim)
    # Sequence-first MHA with the T tasks as the sequence and the pixels as the batch.
    expected, _ = mha(query, fused[0], fused[0])
    assert torch.allclose(per_pixel_task_attention(mha, query, fused), expected, atol=1e-5)


def test_global_attention_equals_batch_first_mha() -> None:
    torch.manual_seed(0)
    tasks = ["a", "b"]
    decoder = TaskAwareDecoder(tasks, dim=32, fusion_heads=4, query_heads=4, attention="global").eval()
    maps = {t: torch.randn(2, 32, 3, 5) for t in tasks}
    out = decoder(maps)
    tokens = {t: maps[t].flatten(2).transpose(1, 2) for t in tasks}
    everything = torch.cat([tokens[t] for t in tasks], dim=1)

    def batch_first(mha: nn.MultiheadAttention, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return mha(q.transpose(0, 1), kv.transpose(0, 1), kv.transpose(0, 1))[0].transpose(0, 1)

    fused = decoder.fusion_mlp(batch_first(decoder.task_fusion, everything, everything))
    for t in tasks:
        queried = batch_first(decoder.task_queries[t], tokens[t], fused)
        expected = (tokens[t] + decoder.query_mlps[t](queried)).transpose(1, 2).reshape(2, 32, 3, 5)
        assert torch.allclose(out[t], expected, atol=1e-5)


def test_bad_attention_options_are_rejected_by_name() -> None:
    with pytest.raises(ValueError, match="decoder.attention='globl'"):
        TaskAwareDecoder(["a"], attention="globl")
    with pytest.raises(ValueError, match="decoder.kv_stride=0"):
        TaskAwareDecoder(["a"], kv_stride=0)


def test_build_model_from_composed_config(compose) -> None:
    cfg = compose(["tasks=nyud", "dataset.num_semseg_classes=40", "backbone=swin_t"])
    model = build_model(cfg)
    assert count(model) == 32_070_259
    assert model.tasks == ("semseg", "depth", "normals", "edge")
