"""Paper presets (conf/experiment): every one composes, carries the official recipe and builds its model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from demt_exp.models.model import build_model

PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "conf" / "experiment").glob("*.yaml"))

# Parameter counts of the rows the SPEC pins down (SPEC 1.9, 6).
EXPECTED_PARAMETERS = {
    "demt_nyud_swin_t": 32_070_259,
    "demt_nyud_swin_s": 53_388_163,
    "demt_nyud_swin_b": 91_973_597,
    "demt_nyud_swin_l": 201_787_825,
    "degmix_nyud_swin_t": 33_201_851,
    "degmix_nyud_swin_s": 54_519_755,
    "degmix_nyud_swin_b": 93_105_189,
    "degmix_nyud_swin_l": 202_919_417,
    "degmix_nyud_vit_b": 98_014_721 - 369_408,
    "demt_pascal_swin_t": 33_028_902,
    "demt_pascal_swin_s": 54_346_806,
    "demt_pascal_swin_b": 93_069_940,
    "degmix_pascal_swin_t": 34_377_344,
    "degmix_pascal_swin_s": 55_695_248,
    "degmix_pascal_swin_b": 94_418_382,
}


def test_presets_exist_for_the_readme_rows() -> None:
    assert set(EXPECTED_PARAMETERS) <= set(PRESETS)
    assert {"degmix_tuning_nyud_swin_t", "degmix_tuning_pascal_swin_t", "degmix_tuning_pascal_swin_l"} <= set(PRESETS)
    assert {"degmix_pascal_swin_l", "demt_nyud_hrnet18", "demt_pascal_hrnet18"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_with_the_official_recipe_and_builds(compose, preset: str) -> None:
    cfg = compose([f"experiment={preset}"])
    assert cfg.trainer.steps == 40_000 and cfg.trainer.batch_size == 8
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.trainer.poly_power == 0.9
    assert cfg.optimizer.momentum == 0.9 and cfg.optimizer.weight_decay == 5e-4
    if "nyud" in preset:
        assert cfg.dataset.name == "nyud" and list(cfg.dataset.image_size) == [425, 560]
        assert list(cfg.tasks.names) == ["semseg", "depth", "normals", "edge"]
    else:
        assert cfg.dataset.name == "pascal_context" and list(cfg.dataset.image_size) == [512, 512]
        assert list(cfg.tasks.names) == ["semseg", "human_parts", "sal", "normals", "edge"]
        assert cfg.trainer.eval_interval == 1875
    with torch.device("meta"):
        model = build_model(cfg)
    total = sum(p.numel() for p in model.parameters())
    if preset in EXPECTED_PARAMETERS:
        assert total == EXPECTED_PARAMETERS[preset]
    if "tuning" in preset:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert trainable == total - sum(p.numel() for p in model.backbone.parameters())
