"""The compare figure: a panel per metric with its unit, a labelled point per row, error bars over seeds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from test_compare import nyud_metrics, seeds_sweep, two_key_sweep, write_run

from demt_exp.compare import main
from demt_exp.results.runs import load_runs, table_rows
from demt_exp.viz.plots import build_figure, short_keys

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

DEFAULT = ["semseg/mIoU", "depth/rmse", "normals/mean_angle", "edge/odsF", "multi_task/delta_m", "model/parameters"]


def figure_of(root: Path, metrics: list[str]):
    runs, _ = load_runs([root])
    keys, rows = table_rows(runs)
    return build_figure(keys, rows, metrics)


def means(axis) -> list[tuple[float, float]]:
    """(x, y) of the row markers: the errorbar data lines, which must draw no line between rows."""
    points = []
    for line in axis.lines:
        if isinstance(line, Line2D) and line.get_marker() == "o":
            assert line.get_linestyle() == "None"
            points += list(zip(line.get_xdata(), line.get_ydata()))
    return points


def test_one_panel_per_metric_with_its_unit_and_every_key_on_the_ticks(tmp_path: Path) -> None:
    figure = figure_of(two_key_sweep(tmp_path), DEFAULT)
    axes = figure.axes
    assert [a.get_title() for a in axes] == DEFAULT
    assert [a.get_ylabel() for a in axes] == ["%", "m", "degrees", "%", "%", "millions"]
    ticks = [t.get_text() for t in axes[0].get_xticklabels()]
    assert ticks == [
        "backbone=swin_t\ndepth=1",
        "backbone=swin_t\ndepth=2",
        "backbone=swin_s\ndepth=1",
        "backbone=swin_s\ndepth=2",
    ]
    assert means(axes[0]) == [(0, 40.0), (1, 42.0), (2, 45.0), (3, 47.5)]
    assert means(axes[1]) == [(0, 0.60), (1, 0.58), (2, 0.55), (3, 0.5125)]
    assert [y for _, y in means(axes[5])] == pytest.approx([30.0, 30.001, 30.002, 30.003])  # millions
    assert not any(a.collections for a in axes)  # one run per row: no error bar, no dots


def test_a_seed_group_has_its_sample_std_as_error_bar_and_its_runs_as_dots(tmp_path: Path) -> None:
    job = 0
    for arch, mious in [("demt", [40.0, 42.0, 47.0]), ("degmix", [50.0, 52.0])]:
        for seed, miou in enumerate(mious):
            write_run(tmp_path / str(job), [f"+arch={arch}", f"trainer.seed={seed}"], nyud_metrics(miou, 0.6))
            job += 1
    axis = figure_of(tmp_path, ["semseg/mIoU"]).axes[0]
    assert means(axis) == [(0, 43.0), (1, 51.0)]
    bars = [c for c in axis.collections if isinstance(c, LineCollection)]
    segments = sorted([tuple(map(tuple, s)) for c in bars for s in c.get_segments()])
    assert segments == [
        ((0, pytest.approx(43 - math.sqrt(13))), (0, pytest.approx(43 + math.sqrt(13)))),
        ((1, pytest.approx(51 - math.sqrt(2))), (1, pytest.approx(51 + math.sqrt(2)))),
    ]
    dots = sorted(y for c in axis.collections if not isinstance(c, LineCollection) for _, y in c.get_offsets())
    assert dots == [40.0, 42.0, 47.0, 50.0, 52.0]
    assert [t.get_text() for t in axis.get_xticklabels()] == ["arch=demt\nn=3", "arch=degmix\nn=2"]


def test_a_seeds_only_sweep_gets_its_plot(tmp_path: Path, capsys) -> None:
    root = seeds_sweep(tmp_path, [40.0, 42.0, 47.0])
    main([str(root)])
    assert f"wrote {root / 'compare.png'}" in capsys.readouterr().err.splitlines()
    assert (root / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    axis = figure_of(root, ["semseg/mIoU"]).axes[0]
    assert [t.get_text() for t in axis.get_xticklabels()] == ["all runs, n=3"] and means(axis) == [(0, 43.0)]


def test_no_plot_writes_no_png(tmp_path: Path, capsys) -> None:
    root = two_key_sweep(tmp_path)
    main([str(root), "--no-plot"])
    assert not (root / "compare.png").exists() and (root / "compare.csv").exists()


def test_short_keys_keep_the_full_key_where_the_last_part_repeats() -> None:
    assert short_keys(["encoder.depth", "backbone", "decoder.depth", "tasks.loss_weights.edge"]) == {
        "encoder.depth": "encoder.depth",
        "backbone": "backbone",
        "decoder.depth": "decoder.depth",
        "tasks.loss_weights.edge": "edge",
    }
