"""compare beside the paper: runs of a paper preset bring its published row, each run's difference to it and,
where the preset gives the paper's single-task numbers, Delta_m against them (values computed by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_compare import nyud_metrics, read_csv, run, write_run

ROW = "DeMT README, NYUD-v2, Swin-T"
PAPER = (
    "paper:\n"
    f"  row: {ROW}\n"
    "  params: 32.07M\n"
    "  metrics: {semseg/mIoU: 46.36, depth/rmse: 0.5871, normals/mean_angle: 20.6, edge/odsF: 76.9}\n"
)
SINGLE_TASK = "  single_task: {semseg/mIoU: 40.0, depth/rmse: 0.6, normals/mean_angle: 20.0, edge/odsF: 75.0}\n"


def preset_runs(root: Path, paper: str = PAPER) -> Path:
    """Two seeds of a paper preset: mIoU 45 and 47, rmse 0.50 and 0.51, mean angle 20, odsF 76."""
    for seed, (miou, rmse) in enumerate([(45.0, 0.50), (47.0, 0.51)]):
        overrides = ["+experiment=demt_nyud_swin_t", f"trainer.seed={seed}"]
        write_run(root / str(seed), overrides, nyud_metrics(miou, rmse, angle=20.0, odsf=76.0), extra_config=paper)
    return root


def test_the_published_row_comes_first_and_each_metric_has_its_difference(tmp_path: Path, capsys) -> None:
    out, _ = run([str(preset_runs(tmp_path)), "--format", "csv", "--no-plot"], capsys)
    paper, runs = read_csv(out)
    head = ["source", "n", "semseg/mIoU", "semseg/mIoU std", "semseg/mIoU vs paper", "semseg/mIoU vs paper std"]
    assert list(paper)[:6] == head and list(paper)[6:8] == ["depth/rmse", "depth/rmse std"]
    assert paper["source"] == f"paper: {ROW}" and paper["n"] == "0"
    assert float(paper["semseg/mIoU"]) == 46.36 and float(paper["edge/odsF"]) == 76.9
    assert paper["semseg/mIoU vs paper"] == "" and paper["model/parameters"] == ""
    assert runs["source"] == "run" and runs["n"] == "2"
    assert float(runs["semseg/mIoU"]) == pytest.approx(46.0)
    assert float(runs["semseg/mIoU vs paper"]) == pytest.approx(46.0 - 46.36)
    assert float(runs["depth/rmse vs paper"]) == pytest.approx(0.505 - 0.5871)
    assert float(runs["normals/mean_angle vs paper"]) == pytest.approx(-0.6)
    assert float(runs["edge/odsF vs paper"]) == pytest.approx(76.0 - 76.9)
    assert float(runs["semseg/mIoU vs paper std"]) == pytest.approx(2**0.5)  # the runs' spread, not the paper's


def test_delta_m_against_the_papers_single_task_numbers(tmp_path: Path, capsys) -> None:
    out, _ = run([str(preset_runs(tmp_path, PAPER + SINGLE_TASK)), "--format", "json", "--no-plot"], capsys)
    table = json.loads(out)
    paper, runs = table["rows"]
    key = "multi_task/delta_m_paper_refs"
    assert table["metrics"][key]["unit"] == "%"
    # Seed 0: mIoU +12.5 %, rmse +16.667 % (lower is better), angle 0, odsF +1.333 %; seed 1: +17.5, +15.0, 0, +1.333.
    assert runs["metrics"][key]["values"] == pytest.approx([(12.5 + 50 / 3 + 0 + 4 / 3) / 4, (17.5 + 15 + 4 / 3) / 4])
    # The paper's own: mIoU +15.9, rmse +2.15, angle -3.0, odsF +2.533.
    assert paper["metrics"][key]["values"] == pytest.approx([(15.9 + 2.15 - 3.0 + 1.9 / 0.75) / 4])
    assert paper["params"]["source"] == f"paper: {ROW}" and paper["runs"] == []


def test_the_markdown_table_signs_the_differences_and_spells_out_the_row(tmp_path: Path, capsys) -> None:
    out, _ = run([str(preset_runs(tmp_path))], capsys)
    lines = out.splitlines()
    assert all(len(line) <= 120 for line in lines)
    run_line = next(line for line in lines if line.startswith("| run "))
    assert "-0.36 ± 1.41" in run_line and "-0.0821 ± 0.0071" in run_line  # mIoU and rmse vs paper
    assert any(line.startswith("| [v1] ") and "46.36" in line for line in lines)
    assert f"[v1] paper: {ROW}" in out


def test_runs_without_a_paper_block_keep_the_table_they_had(tmp_path: Path, capsys) -> None:
    write_run(tmp_path / "0", ["trainer.seed=0"], nyud_metrics(45.0, 0.5))
    out, _ = run([str(tmp_path), "--format", "csv", "--no-plot"], capsys)
    (row,) = read_csv(out)
    assert "source" not in row and not any(key.endswith("vs paper") for key in row)


def test_a_paper_block_is_data_only_text_and_interpolations_are_left_out(tmp_path: Path, capsys) -> None:
    crafted = (
        "paper:\n  row: crafted\n"
        "  metrics: {semseg/mIoU: '${oc.env:HOME}', depth/rmse: 0.6, edge/odsF: true, normals/mean_angle: .nan}\n"
        "  single_task: {depth/rmse: 0.0}\n"
    )
    write_run(tmp_path / "0", ["trainer.seed=0"], nyud_metrics(45.0, 0.5), extra_config=crafted)
    out, _ = run([str(tmp_path), "--format", "csv", "--no-plot", "--metrics", "all"], capsys)
    paper, runs = read_csv(out)
    assert paper["source"] == "paper: crafted" and float(paper["depth/rmse"]) == 0.6 and paper["semseg/mIoU"] == ""
    assert float(runs["depth/rmse vs paper"]) == pytest.approx(-0.1)
    assert not any(key in runs for key in ("semseg/mIoU vs paper", "edge/odsF vs paper", "normals/mean_angle vs paper"))
    assert "multi_task/delta_m_paper_refs" not in runs  # a single-task number of 0 has no relative change


def test_the_plot_marks_the_published_number_with_a_star_and_a_line(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.lines import Line2D

    from demt_exp.results.metrics import select_metrics
    from demt_exp.results.runs import load_runs, table_rows
    from demt_exp.viz.plots import build_figure

    runs, _ = load_runs([preset_runs(tmp_path)])
    keys, rows = table_rows(runs)
    metrics, _ = select_metrics(runs, ["semseg/mIoU"])
    assert metrics == ["semseg/mIoU", "semseg/mIoU vs paper"]
    figure = build_figure(keys, rows, metrics)
    mIoU = figure.axes[0]
    stars = [line for line in mIoU.get_lines() if line.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_ydata()) == [46.36]
    dashed = [line for line in mIoU.get_lines() if isinstance(line, Line2D) and line.get_linestyle() == "--"]
    assert [list(line.get_ydata()) for line in dashed] == [[46.36, 46.36]]
    assert "star and dashed line" in figure.texts[0].get_text()
