"""Frontier gap: a run's oracle NLL against MLE's temperature curve at the same test NLL."""

from __future__ import annotations

import pytest

from llmgan.errors import ConfigError
from llmgan.frontier import (
    frontier_gaps,
    gap_markdown,
    interpolate,
    merge_csv,
    pareto_curve,
    read_csv,
    summarise,
    write_csv,
)

# MLE: colder -> lower oracle NLL, higher test NLL; T=1.2 is past the test-NLL minimum (both worse)
MLE = [
    {"run": "mle", "temperature": 0.8, "test_nll": 7.0, "oracle_nll": 8.0},
    {"run": "mle", "temperature": 0.9, "test_nll": 6.0, "oracle_nll": 8.5},
    {"run": "mle", "temperature": 1.0, "test_nll": 5.0, "oracle_nll": 9.0},
    {"run": "mle", "temperature": 1.2, "test_nll": 5.5, "oracle_nll": 10.0},
]


def test_pareto_curve_drops_the_hot_branch():
    assert pareto_curve([(r["test_nll"], r["oracle_nll"]) for r in MLE]) == [(5.0, 9.0), (6.0, 8.5), (7.0, 8.0)]


def test_interpolation_is_linear_between_neighbours_and_none_outside():
    curve = [(5.0, 9.0), (6.0, 8.5), (7.0, 8.0)]
    assert interpolate(curve, 5.5) == pytest.approx(8.75)
    assert interpolate(curve, 6.0) == pytest.approx(8.5)
    assert interpolate(curve, 6.9) == pytest.approx(8.05)
    assert interpolate(curve, 4.99) is None and interpolate(curve, 7.01) is None


def test_gaps_signs_positions_and_summary():
    rows = [
        {"run": "gan", "temperature": 1.0, "test_nll": 5.5, "oracle_nll": 8.55},  # 0.2 below MLE's 8.75
        {"run": "gan", "temperature": 0.9, "test_nll": 6.5, "oracle_nll": 8.35},  # 0.1 above MLE's 8.25
        {"run": "gan", "temperature": 0.5, "test_nll": 9.0, "oracle_nll": 7.0},  # right of MLE's range
        {"run": "hot", "temperature": 1.0, "test_nll": 4.0, "oracle_nll": 9.5},  # left of it
    ]
    g = frontier_gaps(MLE, rows)
    assert g[0]["gap"] == pytest.approx(-0.2) and g[0]["position"] == "on"
    assert g[1]["gap"] == pytest.approx(0.1)
    assert g[2]["gap"] is None and g[2]["position"] == "right"
    assert g[3]["gap"] is None and g[3]["position"] == "left"
    s = {r["run"]: r for r in summarise(g)}
    assert s["gan"]["best_gap"] == pytest.approx(-0.2) and s["gan"]["best_temperature"] == 1.0
    assert s["gan"]["gap_at_1"] == pytest.approx(-0.2) and s["gan"]["outside"] == 1
    assert s["hot"]["best_gap"] is None and s["hot"]["outside"] == 1
    table = gap_markdown(MLE, rows, noise=0.15)
    assert "| gan | gan | None | -0.200 | 1 | -0.200 | 1/3 | yes, better |" in table
    assert "| hot | hot | None | outside |  | outside | 1/1 |  |" in table
    assert "| no |" in gap_markdown(MLE, rows, noise=0.3)


def test_reference_needs_two_frontier_points():
    with pytest.raises(ConfigError, match="at least two"):
        frontier_gaps(MLE[2:3], MLE)


def test_csv_round_trip_and_bad_columns(tmp_path):
    rows = [{**r, "algorithm": "mle", "seed": 0} for r in MLE]
    p = tmp_path / "f.csv"
    write_csv(rows, str(p))
    assert p.read_text().splitlines()[0] == "run,algorithm,seed,temperature,oracle_nll,test_nll"
    back = read_csv(str(p))
    assert back[1]["test_nll"] == 6.0 and back[1]["temperature"] == 0.9
    (tmp_path / "bad.csv").write_text("run,temperature\nx,1\n")
    with pytest.raises(ConfigError, match="missing column"):
        read_csv(str(tmp_path / "bad.csv"))


def test_merge_csv_replaces_only_the_runs_it_is_given(tmp_path):
    # several benchmarks write into one oracle_frontier.csv: re-running one must not drop the others' rows
    p = str(tmp_path / "f.csv")
    point = {"algorithm": "x", "seed": 0, "temperature": 1.0, "test_nll": 8.0}
    write_csv([{**point, "run": "a", "oracle_nll": 1.0}, {**point, "run": "b", "oracle_nll": 2.0},
               {**point, "run": "b", "oracle_nll": 2.5}], p)
    merged = merge_csv([{**point, "run": "b", "oracle_nll": 3.0}, {**point, "run": "c", "oracle_nll": 4.0}], p)
    back = read_csv(p)
    assert [(r["run"], r["oracle_nll"]) for r in back] == [("a", 1.0), ("b", 3.0), ("c", 4.0)]
    assert [r["run"] for r in merged] == ["a", "b", "c"]
    assert [r["run"] for r in merge_csv([{**point, "run": "a", "oracle_nll": 5.0}], str(tmp_path / "new.csv"))] == ["a"]
