"""`python -m demt_exp.report presets`: one row per preset with counts, MACs, init and its README row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from demt_exp.config.compose import compose_config
from demt_exp.models.model import build_model
from demt_exp.report import main
from demt_exp.results.model_size import model_report
from demt_exp.results.presets import preset_names


def test_every_preset_has_a_row_with_its_counts_init_and_published_numbers(tmp_path: Path, capsys) -> None:
    path = tmp_path / "presets.json"
    report = main(["presets", "--no-macs", "--json", str(path)])
    assert json.loads(path.read_text()) == json.loads(json.dumps(report))
    rows = {r["preset"]: r for r in report["presets"]}
    assert sorted(rows) == preset_names() and len(rows) >= 26
    out = capsys.readouterr().out
    for name, row in rows.items():
        cfg = compose_config([f"experiment={name}"])
        assert row["init"] == cfg.model.init and row["input"] == list(cfg.dataset.image_size)
        assert any(line.startswith(name + " ") and f"{row['parameters']:,}" in line for line in out.splitlines())
    tuning = rows["degmix_tuning_pascal_swin_t"]
    with torch.device("meta"):
        model = build_model(compose_config(["experiment=degmix_tuning_pascal_swin_t"]))
    assert tuning["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad) < tuning["parameters"]
    swin_t = rows["demt_nyud_swin_t"]
    assert swin_t["readme_row"] == "DeMT README, NYUD-v2, Swin-T"
    assert swin_t["published"].startswith("params 32.07M, FLOPs 100.70G, semseg/mIoU 46.36, depth/rmse 0.5871")
    assert "not a target" in rows["degmix_nyud_vit_b"]["published"]  # the README row copied from Swin-L
    assert rows["demt_cityscapes_swin_t"]["readme_row"] is None
    assert not swin_t["init_present"]  # no official file on a test machine, and the table says so
    lines = out.splitlines()
    assert max(map(len, lines)) <= 120
    (swin_t_line,) = [line for line in lines if line.startswith("demt_nyud_swin_t ")]
    label = swin_t_line.split()[-2]
    assert swin_t_line.endswith(f"{label} MISSING") and f"  {label} MISSING  {Path(swin_t['init']).name}" in lines
    assert lines[lines.index(swin_t_line) + 1].startswith("    DeMT README, NYUD-v2, Swin-T: params 32.07M")


def test_the_table_marks_each_init_file_present_or_missing(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DEMT_WEIGHTS", str(tmp_path))
    swin_t = Path(compose_config(["experiment=demt_nyud_swin_t"]).model.init)
    hrnet = Path(compose_config(["experiment=demt_nyud_hrnet18"]).model.init)
    swin_t.write_bytes(b"")  # present (the table checks the file is there, not what it holds)
    report = main(["presets", "demt_nyud_swin_t", "demt_nyud_hrnet18", "degmix_nyud_swin_t", "--no-macs"])
    assert [(r["init"], r["init_present"]) for r in report["presets"]] == [
        (str(swin_t), True),
        (str(hrnet), False),
        (str(swin_t), True),
    ]
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 120
    rows = [
        line for line in lines if line.split(" ")[0] in {"demt_nyud_swin_t", "demt_nyud_hrnet18", "degmix_nyud_swin_t"}
    ]
    assert [row.split("  ")[-1] for row in rows] == ["[1] present", "[2] MISSING", "[1] present"]
    assert f"  [1] present  {swin_t.name}" in lines and f"  [2] MISSING  {hrnet.name}" in lines
    text = " ".join(line.strip() for line in lines)  # the legend wraps at 120 columns wherever the path ends
    assert f"init files (model.init) in {tmp_path}; MISSING: not on this machine" in text


def test_presets_macs_equal_the_model_report_at_the_preset_input(capsys) -> None:
    report = main(["presets", "demt_nyud_hrnet18"])
    row = report["presets"][0]
    detail = model_report(["experiment=demt_nyud_hrnet18"], input_size=[425, 560])
    assert row["macs"] == detail["macs"]["total"]["total"] > 0
    assert "demt_nyud_hrnet18" in capsys.readouterr().out


def test_unknown_preset_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown presets \['demt_nyud_swin_x'\]"):
        main(["presets", "demt_nyud_swin_x", "--no-macs"])
