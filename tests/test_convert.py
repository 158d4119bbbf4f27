"""Official checkpoint import: exact official key lists, lossless round trips, equal outputs, clear errors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from paths import FIXTURES_DIR, REPO_ROOT
from torch import nn

from demt_exp.bench.official_model import OfficialModel, randomize_
from demt_exp.bench.official_swin import SwinTransformer, mmseg_relative_position_index
from demt_exp.engine.rng import rng_state
from demt_exp.models.load_weights import apply_init, load_weights
from demt_exp.models.model import MultiTaskModel, build_model
from demt_exp.models.official_export import cycle_offset, ours_to_official
from demt_exp.models.official_layout import mmseg_backbone_to_ours, official_to_ours
from demt_exp.models.state_dict import ConversionError
from demt_exp.models.swin import SwinBackbone

KEY_DIR = FIXTURES_DIR / "official_keys"  # copies of the official state-dict listings

TASK_CHANNELS = {
    "nyud": {"semseg": 40, "depth": 1, "normals": 3, "edge": 1},
    "pascal": {"semseg": 21, "human_parts": 7, "sal": 2, "normals": 3, "edge": 1},
}
CASES = [(head, data) for head in ("demt", "degmix") for data in ("nyud", "pascal")]
Compose = Callable[[list[str]], DictConfig]
KeyList = list[tuple[str, str, str]]


def overrides(head: str, data: str) -> list[str]:
    """Config of the official model: Swin-T, the data set's tasks, DeMT or DeGMix (patch projection)."""
    classes = TASK_CHANNELS[data]["semseg"]
    return [f"tasks={data}", f"dataset.num_semseg_classes={classes}", f"encoder={head}", f"decoder={head}"]


def official_keys(head: str, data: str) -> KeyList:
    lines = (KEY_DIR / f"{head}_swin-t_{data}.txt").read_text().splitlines()
    return [tuple(line.split("\t")) for line in lines if line.strip() and not line.startswith("#")]


def key_list(state: dict[str, torch.Tensor]) -> KeyList:
    """(key, shape, dtype) in the official files' notation."""
    shape = lambda t: "scalar" if t.dim() == 0 else "x".join(str(s) for s in t.shape)  # noqa: E731
    return [(k, shape(v), str(v.dtype).removeprefix("torch.")) for k, v in state.items()]


@torch.no_grad()
def scramble_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every tensor random (BN statistics and zero-initialised weights too), so equality means something."""
    gen = torch.Generator().manual_seed(seed)
    for tensor in model.state_dict().values():
        if tensor.is_floating_point():
            tensor.copy_(torch.randn(tensor.shape, generator=gen))
        else:
            tensor.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))
    return model


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype, key
        assert torch.equal(actual[key], value), key


def save_lightning(state: dict[str, torch.Tensor], path: Path) -> Path:
    """What a Lightning 1.1 checkpoint looks like to us: the state dict under "state_dict"."""
    torch.save({"epoch": 0, "global_step": 0, "pytorch-lightning_version": "1.1.8", "state_dict": state}, path)
    return path


@pytest.fixture(scope="module")
def tiny_demt() -> tuple[list[str], MultiTaskModel]:
    """A DeMT NYUD model with a narrow head (the official names do not depend on the width)."""
    from demt_exp.config.compose import compose_config

    args = [*overrides("demt", "nyud"), "encoder.dim=32"]
    model = build_model(compose_config(args))
    return args, scramble_(model, seed=3)


@pytest.mark.parametrize(("head", "data"), CASES)
def test_export_has_official_keys_and_round_trips(compose: Compose, head: str, data: str) -> None:
    model = scramble_(build_model(compose(overrides(head, data))))
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
def test_reference_model_has_official_keys(head: str, data: str) -> None:
    assert key_list(OfficialModel(head, TASK_CHANNELS[data]).state_dict()) == official_keys(head, data)


@pytest.mark.parametrize(("head", "data"), [("demt", "nyud"), ("degmix", "pascal")])
def test_outputs_equal_the_reference_model(compose: Compose, tmp_path: Path, head: str, data: str) -> None:
    reference = randomize_(OfficialModel(head, TASK_CHANNELS[data]), seed=1).eval()
    model = build_model(compose(overrides(head, data)))
    assert model.decoder.attention == "official"
    report = load_weights(model, save_lightning(reference.state_dict(), tmp_path / "official.ckpt"))
    assert report.source_format == "official"
    model.eval()
    gen = torch.Generator().manual_seed(2)
    # 45x61: odd sizes pad before the patch conv, in window attention and in patch merging; 64x96 divides by 4.
    for size in ((45, 61), (64, 96)):
        image = torch.randn(1, 3, *size, generator=gen)
        with torch.no_grad():
            expected, actual = reference(image), model(image)
        assert list(actual) == list(expected)
        for task, logits in expected.items():
            assert actual[task].shape == (1, TASK_CHANNELS[data][task], *size)
            torch.testing.assert_close(actual[task], logits, atol=1e-4, rtol=1e-4, msg=f"{head} {task} {size}")


def test_linear_projection_degmix_uses_linear1(compose: Compose) -> None:
    """The README-count DeGMix variant projects with `linear1` and has no `patch_embed`."""
    model = scramble_(build_model(compose([*overrides("degmix", "nyud"), "encoder.projection=linear"])))
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


def test_mmseg_upernet_checkpoint_fills_only_the_backbone(compose: Compose, tmp_path: Path) -> None:
    swin = randomize_(SwinTransformer("swin_t"), seed=4).eval()
    state = {f"backbone.{k}": v for k, v in swin.state_dict().items()}
    state["decode_head.conv_seg.weight"] = torch.randn(150, 512, 1, 1)
    state["decode_head.conv_seg.bias"] = torch.randn(150)
    state["auxiliary_head.conv_seg.weight"] = torch.randn(150, 256, 1, 1)
    path = tmp_path / "upernet.pth"
    torch.save({"meta": {"CLASSES": ["wall", "building"]}, "state_dict": state}, path)

    model = build_model(compose(overrides("degmix", "nyud"))).eval()
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


def test_cli_converts_and_model_weights_loads_both_formats(
    compose: Compose, tiny_demt: tuple[list[str], MultiTaskModel], tmp_path: Path
) -> None:
    args, model = tiny_demt
    official = save_lightning(ours_to_official(model), tmp_path / "official.ckpt")
    out = tmp_path / "converted" / "ours.pt"
    command = [sys.executable, "-m", "demt_exp.convert", "--official", str(official), "--out", str(out), *args]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "converted 325 tensors" in result.stdout and "dropped 16" in result.stdout, result.stdout
    assert_same_tensors(torch.load(out, weights_only=True), model.state_dict())

    # Our training checkpoints keep the state dict under "model", next to pickled RNG states.
    training = tmp_path / "last.pt"
    torch.save({"model": model.state_dict(), "optimizer": {}, "step": 7, "rng": rng_state()}, training)
    for path in (official, out, training):
        cfg = compose([*args, f"model.init={path}"])
        loaded = build_model(cfg)
        assert apply_init(loaded, cfg) == str(path)
        assert_same_tensors(loaded.state_dict(), model.state_dict())


def test_nothing_in_the_official_file_chooses_code(tiny_demt: tuple[list[str], MultiTaskModel], tmp_path: Path) -> None:
    from test_trust_boundary import write_code_pickle

    args, model = tiny_demt
    marker = tmp_path / "marker"
    aux = write_code_pickle(tmp_path / "aux.pt", marker)
    # A weights_only-safe file whose hyper-parameters name code: the command line alone describes the model.
    crafted = tmp_path / "official.ckpt"
    hyper = {"backbone": {"_target_": "torch.load", "f": str(aux), "weights_only": False}, "root": "${oc.env:HOME}"}
    torch.save({"state_dict": ours_to_official(model), "hyper_parameters": hyper}, crafted)
    out = tmp_path / "ours.pt"
    command = [sys.executable, "-m", "demt_exp.convert", "--official", str(crafted), "--out", str(out), *args]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert_same_tensors(torch.load(out, weights_only=True), model.state_dict())
    assert not marker.exists()
    # A file that is itself a code-running pickle: refused in one line naming it and the switch, nothing runs.
    command = [sys.executable, "-m", "demt_exp.convert", "--official", str(aux), "--out", str(tmp_path / "x.pt"), *args]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and str(aux) in errors[0] and "--trust" in errors[0], result.stderr
    assert not marker.exists() and not (tmp_path / "x.pt").exists()
