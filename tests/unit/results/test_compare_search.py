"""compare on a search folder: the best trial or the Pareto front (checked against a brute-force front), the
objective's direction from the metric or from hydra.sweeper.direction, and the front plot."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from test_compare import nyud_metrics, read_csv, run, write_run

from demt_exp.results.search import dominates, front

# (mIoU, rmse) per trial: trials 1, 2 and 4 are the front (up in mIoU, down in rmse); 0 and 3 are dominated.
TRIALS = [(40.0, 0.60), (44.0, 0.58), (41.0, 0.52), (43.0, 0.59), (46.0, 0.61)]


def search_folder(root: Path, objective: str, direction: str | None = None) -> Path:
    for job, (miou, rmse) in enumerate(TRIALS):
        folder = write_run(
            root / str(job), [f"optimizer.lr={0.0001 * (job + 1)}"], nyud_metrics(miou, rmse), extra_config=objective
        )
        if direction:
            (folder / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  sweeper:\n    direction: {direction}\n")
    return root


def test_the_front_is_every_point_no_other_beats(tmp_path: Path) -> None:
    up = (True, False)
    assert front(TRIALS, up) == [1, 2, 4]
    assert dominates((44.0, 0.58), (43.0, 0.59), up) and not dominates((44.0, 0.58), (44.0, 0.58), up)
    grid = [(float(a), float(b)) for a, b in itertools.product(range(4), range(4))]
    brute = [i for i, p in enumerate(grid) if all(not (q[0] >= p[0] and q[1] <= p[1] and q != p) for q in grid)]
    assert front(grid, up) == brute == [12]  # (3, 0): the most mIoU at the least rmse


def test_a_two_objective_search_marks_its_front(tmp_path: Path, capsys) -> None:
    root = search_folder(tmp_path, "objective: [semseg/mIoU, depth/rmse]\n")
    out, err = run([str(root), "--format", "csv"], capsys)
    rows = read_csv(out)
    assert [row["search"] for row in rows] == ["", "front", "front", "", "front"]
    assert list(rows[0])[:4] == ["search", "optimizer.lr", "n", "semseg/mIoU"]
    assert "search: 5 trials, objective semseg/mIoU (max), depth/rmse (min); Pareto front (3)" in err
    assert (root / "pareto.png").stat().st_size > 0  # matplotlib: the plot extra, in dev


def test_one_objective_marks_the_best_row_by_its_direction(tmp_path: Path, capsys) -> None:
    out, err = run([str(search_folder(tmp_path, "objective: depth/rmse\n")), "--format", "json", "--no-plot"], capsys)
    marks = [row["params"]["search"] for row in json.loads(out)["rows"]]
    assert marks == ["", "", "best", "", ""]  # the lowest rmse
    assert f"best: {tmp_path / '2'}" in err


def test_a_direction_the_search_set_wins_over_the_metrics(tmp_path: Path, capsys) -> None:
    root = search_folder(tmp_path, "objective: depth/rmse\n", direction="maximize")
    out, _ = run([str(root), "--format", "json", "--no-plot"], capsys)
    assert [row["params"]["search"] for row in json.loads(out)["rows"]] == ["", "", "", "", "best"]


def test_runs_without_an_objective_get_no_search_column(tmp_path: Path, capsys) -> None:
    out, _ = run([str(search_folder(tmp_path, "")), "--format", "csv", "--no-plot"], capsys)
    assert "search" not in read_csv(out)[0]
