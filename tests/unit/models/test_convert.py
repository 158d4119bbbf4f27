"""Official checkpoint import, in-process: exact official key lists, lossless round trips, equal outputs, clear
errors. The official models are Swin-T (their key lists and parity are what is checked); each config is built once
per module and every test works on its own copy. `python -m demt_exp.convert`: tests/integration/test_convert_cli.py."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path

import official_checkpoints
import pytest
import torch
from official_checkpoints import TASK_CHANNELS, assert_same_tensors, overrides, save_lightning, scramble_
from paths import FIXTURES_DIR

from demt_exp.bench.official_model import OfficialModel, randomize_
from demt_exp.bench.official_swin import SwinTransformer, mmseg_relative_position_index
from demt_exp.config.compose import compose_config
from demt_exp.models.load_weights import load_weights
from demt_exp.models.model import MultiTaskModel, build_model
from demt_exp.models.official_export import cycle_offset, ours_to_official
from demt_exp.models.official_layout import mmseg_backbone_to_ours, official_to_ours
from demt_exp.models.state_dict import ConversionError
from demt_exp.models.swin import SwinBackbone

KEY_DIR = FIXTURES_DIR / "official_keys"  # copies of the official state-dict listings

CASES = [(head, data) for head in ("demt", "degmix") for data in ("nyud", "pascal")]
KeyList = list[tuple[str, str, str]]
Build = Callable[[str, str], torch.nn.Module]


def official_keys(head: str, data: str) -> KeyList:
    lines = (KEY_DIR / f"{head}_swin-t_{data}.txt").read_text().splitlines()
    return [tuple(line.split("\t")) for line in lines if line.strip() and not line.startswith("#")]


def key_list(state: dict[str, torch.Tensor]) -> KeyList:
    """(key, shape, dtype) in the official files' notation."""
    shape = lambda t: "scalar" if t.dim() == 0 else "x".join(str(s) for s in t.shape)  # noqa: E731
    return [(k, shape(v), str(v.dtype).removeprefix("torch.")) for k, v in state.items()]


def built_once(build: Build) -> Iterator[Build]:
    """`build(head, data)`, called once per config: each call returns a deep copy (a fraction of a Swin-T build),
    which its test owns and may change; the built models are freed with the module."""
    built: dict[tuple[str, str], torch.nn.Module] = {}

    def fresh(head: str, data: str) -> torch.nn.Module:
        if (head, data) not in built:
            built[head, data] = build(head, data)
        return copy.deepcopy(built[head, data])

    yield fresh
    built.clear()


@pytest.fixture(scope="module")
def ours() -> Iterator[Build]:
    """ours(head, data): our model of the official config, freshly initialised."""
    yield from built_once(lambda head, data: build_model(compose_config(overrides(head, data))))


@pytest.fixture(scope="module")
def reference() -> Iterator[Build]:
    """reference(head, data): the re-implementation of the released model, freshly initialised."""
    yield from built_once(lambda head, data: OfficialModel(head, TASK_CHANNELS[data]))


@pytest.fixture(scope="module")
def tiny_demt() -> tuple[list[str], MultiTaskModel]:
    """A DeMT NYUD model with a narrow head (the official names do not depend on the width)."""
    return official_checkpoints.tiny_demt()


@pytest.mark.parametrize(("head", "data"), CASES)
def test_export_has_official_keys_and_round_trips(ours: Build, head: str, data: str) -> None:
    model = scramble_(ours(head, data))
    official = ours_to_official(model)
    assert key_list(official) == official_keys(head, data)
    for key, value in official.items():
        if key.endswith(".offset"):
            assert torch.equal(value, cycle_offset(value.shape[1] // 2)), key
        if key.endswith(".relative_position_index"):
            assert torch.equal(value, mmseg_relative_position_index(7)), key
    converted, report = official_to_ours(official, model)
    assert_same_tensors(converted, model.state_dict())
    assert report.converted == len(model.state_dict())
    assert report.converted + sum(report.dropped.values()) == len(official)


@pytest.mark.parametrize(("head", "data"), CASES)
def test_reference_model_has_official_keys(reference: Build, head: str, data: str) -> None:
    assert key_list(reference(head, data).state_dict()) == official_keys(head, data)


@pytest.mark.parametrize(("head", "data"), [("demt", "nyud"), ("degmix", "pascal")])
def test_outputs_equal_the_reference_model(ours: Build, reference: Build, tmp_path: Path, head: str, data: str) -> None:
    official = randomize_(reference(head, data), seed=1).eval()
    model = ours(head, data)
    assert model.decoder.attention == "official"
    report = load_weights(model, save_lightning(official.state_dict(), tmp_path / "official.ckpt"))
    assert report.source_format == "official"
    model.eval()
    gen = torch.Generator().manual_seed(2)
    # 45x61: odd sizes pad before the patch conv, in window attention and in patch merging; 64x96 divides by 4.
    for size in ((45, 61), (64, 96)):
        image = torch.randn(1, 3, *size, generator=gen)
        with torch.no_grad():
            expected, actual = official(image), model(image)
        assert list(actual) == list(expected)
        for task, logits in expected.items():
            assert actual[task].shape == (1, TASK_CHANNELS[data][task], *size)
            torch.testing.assert_close(actual[task], logits, atol=1e-4, rtol=1e-4, msg=f"{head} {task} {size}")


def test_linear_projection_degmix_uses_linear1() -> None:
    """The README-count DeGMix variant projects with `linear1` and has no `patch_embed`."""
    model = scramble_(build_model(compose_config([*overrides("degmix", "nyud"), "encoder.projection=linear"])))
    official = ours_to_official(model)
    expected = [k for k in official_keys("degmix", "nyud") if not k[0].startswith("head.patch_embed.")]
    assert key_list(official) == expected
    assert torch.equal(official["head.linear1.0.weight"], model.encoder.projection.linear.weight)
    converted, report = official_to_ours(official, model)
    assert_same_tensors(converted, model.state_dict())
    assert "unused_linear1" not in report.dropped
    released = {**official, "head.patch_embed.norm.bias": torch.zeros(256)}
    with pytest.raises(ConversionError, match=r"unexpected keys: head\.patch_embed\.norm\.bias"):
        official_to_ours(released, model)


def test_deeper_swin_sizes_convert() -> None:
    """Swin-S (18 blocks in stage 3) in mmseg layout loads into our Swin-S backbone and back unchanged."""
    reference = SwinTransformer("swin_s").state_dict()
    backbone = SwinBackbone("swin_s")
    converted, report = mmseg_backbone_to_ours({f"backbone.{k}": v for k, v in reference.items()}, backbone)
    backbone.load_state_dict(converted, strict=True)
    assert report.dropped["relative_position_index"] == 24
    assert torch.equal(
        backbone.stages[3].downsample.reduction.weight[:, :4],
        reference["stages.2.downsample.reduction.weight"][:, [0, 4, 8, 12]],
    )


def test_mmseg_upernet_checkpoint_fills_only_the_backbone(ours: Build, tmp_path: Path) -> None:
    swin = randomize_(SwinTransformer("swin_t"), seed=4).eval()
    state = {f"backbone.{k}": v for k, v in swin.state_dict().items()}
    state["decode_head.conv_seg.weight"] = torch.randn(150, 512, 1, 1)
    state["decode_head.conv_seg.bias"] = torch.randn(150)
    state["auxiliary_head.conv_seg.weight"] = torch.randn(150, 256, 1, 1)
    path = tmp_path / "upernet.pth"
    torch.save({"meta": {"CLASSES": ["wall", "building"]}, "state_dict": state}, path)

    model = ours("degmix", "nyud").eval()
    head_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    report = load_weights(model, path)
    assert report.source_format == "mmseg_backbone" and report.scope == "backbone"
    assert report.dropped["upernet_head"] == 3
    head_after = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    assert_same_tensors(head_after, head_before)
    image = torch.randn(1, 3, 45, 61, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for ours, theirs in zip(model.backbone(image), swin(image)):
            torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_mismatches_fail_naming_the_key(tiny_demt: tuple[list[str], MultiTaskModel]) -> None:
    _, model = tiny_demt
    official = ours_to_official(model)

    missing = dict(official)
    del missing["head.smlp2.2.0.weight"]
    with pytest.raises(ConversionError, match=r"missing keys: head\.smlp2\.2\.0\.weight"):
        official_to_ours(missing, model)

    unexpected = {**official, "head.smlp3.0.weight": torch.zeros(32, 32)}
    with pytest.raises(ConversionError, match=r"unexpected keys: head\.smlp3\.0\.weight"):
        official_to_ours(unexpected, model)

    wrong = {**official, "backbone.stages.1.downsample.reduction.weight": torch.zeros(384, 700)}
    pattern = r"backbone\.stages\.1\.downsample\.reduction\.weight: checkpoint \(384, 700\) vs model \(384, 768\)"
    with pytest.raises(ConversionError, match=pattern):
        official_to_ours(wrong, model)
