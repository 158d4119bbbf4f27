"""Paper presets (conf/experiment): recipe, initialisation, loss constants and parameter counts, all from SPEC.

Every count here is derived from the layer shapes (SPEC 1.2, 1.7, 1.9 building blocks), never
copied from the code's output; the SPEC's own totals cross-check the arithmetic.
"""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from paths import FIXTURES_DIR, REPO_ROOT
from reference_backbones import HRNET_CONFIGS

from demt_exp.bench.official_model import OfficialModel, randomize_
from demt_exp.losses.task_losses import balanced_cross_entropy_loss
from demt_exp.models.load_weights import load_state
from demt_exp.models.model import build_model

REPO = REPO_ROOT
PRESETS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
KEY_DIR = FIXTURES_DIR / "official_keys"
D = 256  # head width, hard-coded in both official heads

# ----------------------------------------------------------------------------- SPEC 2 loss constants

LOSS_WEIGHTS = {
    "nyud": {"semseg": 1.0, "depth": 1.0, "normals": 10.0, "edge": 50.0},
    "pascal": {"semseg": 1.0, "human_parts": 2.0, "sal": 5.0, "normals": 10.0, "edge": 50.0},
    "cityscapes": {"semseg": 1.0, "depth": 1.0},  # ours: the NYUD weights of these two tasks
}
EDGE_POS_WEIGHT = {"nyud": 0.8, "pascal": 0.95, "cityscapes": None}
TASK_CHANNELS = {
    "nyud": {"semseg": 40, "depth": 1, "normals": 3, "edge": 1},
    "pascal": {"semseg": 21, "human_parts": 7, "sal": 2, "normals": 3, "edge": 1},
    "cityscapes": {"semseg": 19, "depth": 1},
}


def data_of(preset: str) -> str:
    return next(d for d in ("nyud", "pascal", "cityscapes") if f"_{d}_" in preset)


# ----------------------------------------------------------------------------- backbone counts from layer shapes

SWIN = {
    "swin_t": (96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
    "swin_s": (96, (2, 2, 18, 2), (3, 6, 12, 24), 7),
    "swin_b": (128, (2, 2, 18, 2), (4, 8, 16, 32), 7),
    "swin_l": (192, (2, 2, 18, 2), (6, 12, 24, 48), 12),
}


def linear(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def conv(i: int, o: int, k: int, bias: bool = False, groups: int = 1) -> int:
    return o * (i // groups) * k * k + (o if bias else 0)


def swin_params(name: str) -> int:
    """Patch conv + LN, blocks (LN, bias table, qkv, proj, LN, MLP 4x), patch merging, output LNs."""
    embed, depths, heads, window = SWIN[name]
    total = conv(3, embed, 4, bias=True) + 2 * embed
    for stage, (depth, h) in enumerate(zip(depths, heads)):
        d = embed * 2**stage
        if stage:
            total += 2 * (2 * d) + linear(2 * d, d, bias=False)  # LN(4c) + Linear(4c -> 2c) from c = d/2
        block = (
            2 * d
            + (2 * window - 1) ** 2 * h
            + linear(d, 3 * d)
            + linear(d, d)
            + 2 * d
            + linear(d, 4 * d)
            + linear(4 * d, d)
        )
        total += depth * block + 2 * d
    return total


def vit_params(width: int, depth: int) -> int:
    """Bias-free 16x16 patch conv, class token, 32x32+1 position table, pre-norm blocks, no final norm."""
    block = (
        2 * width
        + linear(width, 3 * width)
        + linear(width, width)
        + 2 * width
        + linear(width, 4 * width)
        + linear(4 * width, width)
    )
    return conv(3, width, 16) + width + 1025 * width + depth * block


def hrnet_params(variant: str) -> int:
    """Stem, Bottleneck stage 1, transitions, BasicBlock modules with their fusion convs (BN: 2 per channel)."""
    cfg = HRNET_CONFIGS[variant]
    widths = cfg["widths"]

    def bn(c: int) -> int:
        return 2 * c

    total = conv(3, 64, 3) + bn(64) + conv(64, 64, 3) + bn(64)
    for k in range(cfg["stage1"][0]):
        cin = 64 if k == 0 else 256
        total += conv(cin, 64, 1) + bn(64) + conv(64, 64, 3) + bn(64) + conv(64, 256, 1) + bn(256)
        total += conv(64, 256, 1) + bn(256) if k == 0 else 0
    previous: tuple[int, ...] = (256,)
    for stage, modules in enumerate(cfg["modules"], start=2):
        current = widths[:stage]
        for i, c in enumerate(current):
            if i >= len(previous):
                total += conv(previous[-1], c, 3) + bn(c)
            elif previous[i] != c:
                total += conv(previous[i], c, 3) + bn(c)
        module = sum(cfg["blocks"][0] * 2 * (conv(c, c, 3) + bn(c)) for c in current)
        for i, ci in enumerate(current):
            for j, cj in enumerate(current):
                if j > i:
                    module += conv(cj, ci, 1) + bn(ci)
                elif j < i:
                    module += (i - j - 1) * (conv(cj, cj, 3) + bn(cj)) + conv(cj, ci, 3) + bn(ci)
        total += modules * module
        previous = current
    return total


BACKBONE_CHANNELS = {"swin_t": 1440, "swin_s": 1440, "swin_b": 1920, "swin_l": 2880, "hrnet18": 270, "hrnet48": 720}


def backbone_params(name: str) -> int:
    if name.startswith("swin"):
        return swin_params(name)
    if name.startswith("hrnet"):
        return hrnet_params(name)
    return vit_params(768, 12) if name == "vit_b" else vit_params(1024, 24)


# ----------------------------------------------------------------------------- head counts from SPEC 1.9 blocks

MIXER_BLOCK = (
    conv(D, D, 1, bias=True)
    + 2 * D
    + conv(D, D, 1, bias=True)
    + conv(D, 18, 3, bias=True)
    + conv(18, 2 * D, 3, bias=True, groups=2)
    + 2 * D
)
MHA = linear(D, 3 * D) + linear(D, D)
LINEAR_LN = linear(D, D) + 2 * D
ANY_ATTENTION = 3 * 2 * D + 3 * linear(D, D, bias=False) + linear(D, D)
SGATE = 2 * D + linear(D, 2 * D) + 2 * D + linear(D, D) + linear(D, D)


def featconv_params(width: int) -> int:
    """SPEC 1.7: four (3x3 width->128, BN, 3x3 128->128, BN) branches, then (3x3 512->256, BN, 3x3 256->256, BN)."""
    branch = conv(width, 128, 3) + 256 + conv(128, 128, 3) + 256
    return 4 * branch + conv(512, D, 3) + 2 * D + conv(D, D, 3) + 2 * D


def head_params(head: str, c_in: int, channels: dict[str, int], projection: str, bottleneck: int | None = None) -> int:
    """Our head: the official one without DeGMix's unused `linear1` (SPEC 8 item 9)."""
    t, out = len(channels), bottleneck or c_in // 8
    total = t * (conv(D, out, 3) + 2 * out) + sum(linear(out, c) for c in channels.values())
    total += MHA + LINEAR_LN + t * LINEAR_LN
    projections = {
        "linear": linear(c_in, D) + 2 * D,
        "patch": conv(c_in, D, 4, bias=True) + 2 * D,
        "none": featconv_params(c_in),
    }
    if head == "demt":
        return total + t * MIXER_BLOCK + projections[projection] + t * MHA
    return total + 2 * t * MIXER_BLOCK + projections[projection] + t * ANY_ATTENTION + SGATE


def preset_parts(preset: str) -> tuple[str, str, str]:
    head = "degmix" if preset.startswith("degmix") else "demt"
    backbone = next(b for b in (*BACKBONE_CHANNELS, "vit_b", "vit_l") if preset.endswith(b))
    projection = "none" if "vit" in backbone else ("patch" if head == "degmix" else "linear")
    return head, backbone, projection


def expected_parameters(preset: str, projection: str | None = None) -> tuple[int, int]:
    """(total, head) of a preset from the arithmetic above."""
    head, backbone, default_projection = preset_parts(preset)
    projection = projection or default_projection
    channels = TASK_CHANNELS[data_of(preset)]
    if backbone.startswith("vit"):
        width = 768 if backbone == "vit_b" else 1024
        head_count = head_params(head, width, channels, "none", bottleneck=180)
    else:
        head_count = head_params(head, BACKBONE_CHANNELS[backbone], channels, projection)
    return backbone_params(backbone) + head_count, head_count


def test_arithmetic_reproduces_the_spec_totals() -> None:
    """SPEC 1.2 / 1.9 totals, recomputed from the layer shapes above."""
    assert [swin_params(n) for n in ("swin_t", "swin_s", "swin_b", "swin_l")] == [
        27_520_698,
        48_838_602,
        86_745_016,
        195_201_204,
    ]
    assert (vit_params(768, 12), hrnet_params("hrnet18"), hrnet_params("hrnet48")) == (
        86_432_256,
        3_860_720,
        65_325_120,
    )
    assert (MIXER_BLOCK, MHA, LINEAR_LN, ANY_ATTENTION, SGATE) == (216_082, 263_168, 66_304, 263_936, 264_192)
    assert featconv_params(768) == 5_901_312
    nyud = TASK_CHANNELS["nyud"]
    assert head_params("demt", 1440, nyud, "linear") == 4_549_561  # SPEC 1.9 head total
    assert head_params("degmix", 1440, nyud, "patch") + 369_408 == 11_580_161  # + the unused linear1
    assert expected_parameters("demt_nyud_hrnet18")[0] == 6_748_218
    assert expected_parameters("degmix_nyud_swin_t", "linear")[0] == 33_201_851  # the README's 33.2M
    assert expected_parameters("degmix_pascal_swin_b", "linear")[0] == 94_418_382  # the README's 94.4M
    assert expected_parameters("degmix_nyud_swin_l", "linear")[0] == 202_919_417  # the README's 202.92M
    assert expected_parameters("degmix_nyud_vit_b")[0] + 369_408 == 98_014_721


# ----------------------------------------------------------------------------- presets


def test_presets_exist_for_the_readme_rows_and_cityscapes() -> None:
    rows = {f"{h}_{d}_swin_{s}" for h in ("demt", "degmix") for d in ("nyud", "pascal") for s in "tsb"}
    rows |= {
        "demt_nyud_swin_l",
        "degmix_nyud_swin_l",
        "degmix_pascal_swin_l",
        "demt_nyud_hrnet18",
        "demt_pascal_hrnet18",
        "degmix_nyud_vit_b",
        "degmix_nyud_vit_l",
        "degmix_tuning_nyud_swin_t",
        "degmix_tuning_pascal_swin_t",
        "degmix_tuning_pascal_swin_l",
    }
    rows |= {f"{h}_cityscapes_swin_{s}" for h in ("demt", "degmix") for s in "tb"}
    assert rows <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_recipe_init_losses_and_parameter_counts(compose, preset: str) -> None:
    cfg = compose([f"experiment={preset}"])
    data = data_of(preset)
    assert cfg.trainer.steps == 40_000 and cfg.trainer.batch_size == 8
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.trainer.poly_power == 0.9
    assert cfg.optimizer.momentum == 0.9 and cfg.optimizer.weight_decay == 5e-4
    expected_data = {
        "nyud": ("nyud", [425, 560]),
        "pascal": ("pascal_context", [512, 512]),
        "cityscapes": ("cityscapes", [512, 1024]),
    }[data]
    assert (cfg.dataset.name, list(cfg.dataset.image_size)) == expected_data
    assert (
        list(cfg.tasks.names) == list(TASK_CHANNELS[data])
        and cfg.dataset.num_semseg_classes == TASK_CHANNELS[data]["semseg"]
    )
    loss = instantiate(cfg.tasks.loss)
    assert loss.weights == LOSS_WEIGHTS[data] and loss.edge_pos_weight == EDGE_POS_WEIGHT[data]
    # initialisation: one key naming the official (or timm ImageNet) file, under model.init_dir
    assert cfg.model.init.startswith(f"{cfg.model.init_dir}/") and cfg.model.init.endswith((".pth", ".safetensors"))
    assert cfg.paper is not None and set(cfg.paper) == {"row", "params", "flops", "metrics", "note"}
    _, _, projection = preset_parts(preset)
    assert cfg.encoder.projection == projection
    with torch.device("meta"):
        model = build_model(cfg)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    expected_total, expected_head = expected_parameters(preset)
    assert total == expected_total
    assert trainable == (expected_head if "tuning" in preset else expected_total)


@pytest.mark.parametrize("preset", ["degmix_nyud_swin_t", "degmix_pascal_swin_l", "degmix_tuning_nyud_swin_t"])
def test_degmix_stride4_variant_is_one_override_away(compose, preset: str) -> None:
    cfg = compose([f"experiment={preset}", "encoder.projection=linear"])
    with torch.device("meta"):
        model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) == expected_parameters(preset, "linear")[0]


def test_sal_balancing_and_weights_of_the_pascal_preset(compose) -> None:
    """SPEC 2 by hand: 3 negatives and 1 positive, logits 0 (CE log 2 each), w+ = 3/4, divided by |V| = 4."""
    loss = instantiate(compose(["experiment=degmix_pascal_swin_t"]).tasks.loss)
    target = torch.tensor([[[[0.0, 0.0], [0.0, 1.0]]]])
    value = balanced_cross_entropy_loss(torch.zeros(1, 2, 2, 2), target).item()
    assert value == pytest.approx((3 * (1 - 3 / 4) + 1 * (3 / 4)) * math.log(2) / 4)
    assert loss.weights["sal"] == 5.0


@pytest.mark.parametrize("data", ["nyud", "pascal"])
def test_official_degmix_checkpoint_loads_strictly_into_the_preset(compose, data: str) -> None:
    """A state dict in the official layout (names and shapes of the fixture key list) fills the preset's model."""
    reference = randomize_(OfficialModel("degmix", TASK_CHANNELS[data]), seed=12)
    state = reference.state_dict()
    lines = (KEY_DIR / f"degmix_swin-t_{data}.txt").read_text().splitlines()
    official = [(k, shape) for k, shape, _ in (line.split("\t") for line in lines if line and not line.startswith("#"))]

    def as_text(t: torch.Tensor) -> str:
        return "scalar" if t.dim() == 0 else "x".join(map(str, t.shape))

    assert [(k, as_text(v)) for k, v in state.items()] == official
    model = build_model(compose([f"experiment=degmix_{data}_swin_t"]))
    report = load_state(model, state, "official")
    assert report.source_format == "official" and report.converted == len(model.state_dict())
    assert report.dropped["unused_linear1"] == 4
    assert torch.equal(model.encoder.projection.proj.weight, state["head.patch_embed.projection.weight"])


def test_hrnet48_model_count(compose) -> None:
    """No README row uses HRNet-W48, but the backbone is offered: DeMT NYUD on it, from the arithmetic."""
    cfg = compose(["experiment=demt_nyud_hrnet18", "backbone=hrnet48"])
    with torch.device("meta"):
        model = build_model(cfg)
    expected = hrnet_params("hrnet48") + head_params("demt", 720, TASK_CHANNELS["nyud"], "linear")
    assert sum(p.numel() for p in model.parameters()) == expected
