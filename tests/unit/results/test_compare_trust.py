"""Run folders are data: crafted `.hydra` files can neither resolve interpolations, nor construct Python
objects, nor instantiate targets, nor write control characters to the terminal."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_compare import nyud_metrics, write_run

from demt_exp.compare import main


def crafted_run(folder: Path, overrides: str, config: str) -> Path:
    write_run(folder, [], nyud_metrics(41.0, 0.6))
    (folder / ".hydra" / "overrides.yaml").write_text(overrides)
    (folder / ".hydra" / "config.yaml").write_text(config)
    return folder


def test_interpolations_in_run_files_stay_literal_text(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COMPARE_SECRET", "leaked-secret-value")
    monkeypatch.setenv("COMPARE_DATASET", "nyud")
    marker = tmp_path / "instantiated"
    run = crafted_run(
        tmp_path / "run",
        "- model.init=${oc.env:COMPARE_SECRET}\n- backbone=${oc.env:HOME}\n",
        "dataset:\n  name: ${oc.env:COMPARE_DATASET}\n"
        f"  _target_: builtins.exec\n  _args_:\n  - open({str(marker)!r}, 'w').close()\n"
        "logger:\n  _target_: pathlib.Path.touch\n",
    )
    main([str(run), "--format", "json", "--no-plot"])
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    assert payload["rows"][0]["params"] == {"model.init": "${oc.env:COMPARE_SECRET}", "backbone": "${oc.env:HOME}"}
    assert "leaked-secret-value" not in captured.out + captured.err + (run / "compare.csv").read_text()
    # `dataset.name` read as written: an interpolation names no dataset, so every metric is shown, and said so
    assert "no Delta_m metric set for dataset '${oc.env:COMPARE_DATASET}'" in captured.err
    assert len(payload["metrics"]) == 24
    assert not marker.exists()


def test_python_tags_are_refused_and_the_folder_skipped(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "constructed"
    write_run(tmp_path / "0", ["backbone=swin_t"], nyud_metrics(40.0, 0.6))
    crafted_run(tmp_path / "1", f"- !!python/object/apply:os.system ['touch {marker}']\n", "dataset:\n  name: nyud\n")
    crafted_run(tmp_path / "2", "- backbone=swin_s\n", f"dataset: !!python/object/apply:os.system ['touch {marker}']\n")
    main([str(tmp_path), "--format", "csv", "--no-plot"])
    captured = capsys.readouterr()
    assert not marker.exists()
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and skipped[0].startswith(
        f"skipped {tmp_path / '1'}: .hydra/overrides.yaml cannot be read as YAML (could not determine a constructor"
    )
    # a config.yaml it cannot read only costs the run its dataset: shown with every metric, and said so
    assert captured.out.splitlines()[0].startswith("backbone,n,depth/abs_rel,")
    assert "no Delta_m metric set for dataset unrecorded" in captured.err


@pytest.mark.parametrize("overrides", ["backbone: swin_t\n", "- [backbone=swin_t]\n", "- backbone=swin_t\n- 3\n"])
def test_overrides_that_are_not_a_list_of_strings_skip_the_folder(overrides: str, tmp_path: Path, capsys) -> None:
    write_run(tmp_path / "0", ["backbone=swin_t"], nyud_metrics(40.0, 0.6))
    crafted_run(tmp_path / "1", overrides, "dataset:\n  name: nyud\n")
    main([str(tmp_path), "--no-plot"])
    assert (
        f"skipped {tmp_path / '1'}: .hydra/overrides.yaml is not a YAML list of `key=value` strings"
        in capsys.readouterr().err.splitlines()
    )


def test_control_characters_are_escaped_on_the_console(tmp_path: Path, capsys) -> None:
    run = crafted_run(tmp_path / "run", '- "backbone=swin_t\\e]0;title\\a\\e[2J"\n', "dataset:\n  name: nyud\n")
    main([str(run), "--no-plot"])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "swin_t\\x1b]0;title\\x07\\x1b[2J" in out  # shown, escaped (a legend entry: longer than a cell)
    with (run / "compare.csv").open(newline="") as handle:  # the CSV is for programs: the value as it is
        assert next(csv.DictReader(handle))["backbone"] == "swin_t\x1b]0;title\x07\x1b[2J"
