"""Learning curves and the gaps table: what the report says with and without curves.csv and subset APs."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import CURVE_STEPS, curves_frame, suite_frame, write_suite

from bmbench.errors import BmbenchError
from bmbench.report import curves, load
from bmbench.report.render import curves_section
from bmbench.report.tables import class_columns, class_table, gaps_table, grid_table

PAPER, RIVAL = "blendmask:K=4,M=7,R=56", "blendmask:K=2,M=7,R=56"


def suite_with_curves(tmp_path: Path, **kwargs) -> load.AblationSuite:  # noqa: ANN003
    frame = suite_frame()
    folder = write_suite(tmp_path / "quick", frame)
    curves_frame(frame, **kwargs).to_csv(folder / "curves.csv", index=False)
    return load.load_ablation(folder)


def test_curves_load_in_points_and_split_with_their_cells(tmp_path: Path) -> None:
    suite = suite_with_curves(tmp_path)
    assert suite.curves is not None and set(suite.curves["step"]) == set(CURVE_STEPS)
    final = suite.curves[(suite.curves["spec"] == PAPER) & (suite.curves["step"] == CURVE_STEPS[-1])]
    assert final["mask_AP"].mean() == pytest.approx(35.0)  # points, as the summary's
    cpu = suite.frame.assign(device_name=suite.frame["family"].map({"maskrcnn": "GPU"}).fillna("CPU"))
    parts = load._split_suite(load.AblationSuite(suite.name, suite.path, cpu, {}, suite.curves))
    assert set(parts[("GPU", "fp32")].curves["spec"]) == {"maskrcnn:R=28"}
    assert "maskrcnn:R=28" not in set(parts[("CPU", "fp32")].curves["spec"])


def test_fraction_is_derived_when_absent_and_a_foreign_table_is_an_error(tmp_path: Path) -> None:
    frame = suite_frame()
    folder = write_suite(tmp_path / "quick", frame)
    curves_frame(frame).drop(columns="fraction").to_csv(folder / "curves.csv", index=False)
    assert sorted(load.load_ablation(folder).curves["fraction"].round(2).unique()) == [0.25, 0.5, 1.0]
    pd.DataFrame({"step": [1]}).to_csv(folder / "curves.csv", index=False)
    with pytest.raises(BmbenchError, match="missing column"):
        load.load_ablation(folder)


def test_same_ranking_at_half_and_full_schedule(tmp_path: Path) -> None:
    ranking = curves.curve_ranking(suite_with_curves(tmp_path))
    assert ranking is not None and ranking.same and ranking.tau == pytest.approx(1.0) and ranking.specs == 18
    assert "is the same (Kendall's τ-b +1.00" in ranking.text()


def test_a_swap_at_half_schedule_changes_the_ranking(tmp_path: Path) -> None:
    ranking = curves.curve_ranking(suite_with_curves(tmp_path, swap=(PAPER, RIVAL)))
    assert ranking is not None and not ranking.same and ranking.tau < 1.0
    assert "not the same" in ranking.text()
    table = curves.curve_table(suite_with_curves(tmp_path / "b"))
    assert list(table.columns) == ["spec", "25% (step)", "50% (step)", "100% (step)"]
    assert table.set_index("spec").loc[PAPER, "100% (step)"].startswith("35.0 ± ")


def test_the_curves_section_with_and_without_curves(tmp_path: Path) -> None:
    without = load.load_ablation(write_suite(tmp_path / "plain"))
    assert without.curves is None and curves.curve_ranking(without) is None
    text = "\n".join(curves_section(without, [], tmp_path / "report.md"))
    assert "Not measured: the suite has no `curves.csv`" in text
    text = "\n".join(curves_section(suite_with_curves(tmp_path), [], tmp_path / "report.md"))
    assert "Ranking: the ranking of the 18 specs" in text and "Mask AP along the schedule" in text
    assert "Not measured" not in text


def test_one_spec_gives_no_tau(tmp_path: Path) -> None:
    frame = suite_frame(ks=(4,), ms=(7,), rs=(56,))
    frame = frame[frame["family"] == "blendmask"]
    folder = write_suite(tmp_path / "one", frame)
    curves_frame(frame).to_csv(folder / "curves.csv", index=False)
    ranking = curves.curve_ranking(load.load_ablation(folder))
    assert ranking is not None and math.isnan(ranking.tau) and "cannot be compared" in ranking.text()


def with_subsets(frame: pd.DataFrame) -> pd.DataFrame:
    """Touching AP: M=1 loses 5 more points; thin and boundary AP: R=56 gains 3 more points than on mask AP."""
    blend = frame["family"].eq("blendmask")
    m1 = blend & frame["M"].eq(1).fillna(False)
    r56 = blend & frame["R"].eq(56).fillna(False)
    return frame.assign(
        mask_AP_touching=frame["mask_AP"] - 0.05 * m1,
        mask_AP_thin=frame["mask_AP"] + 0.03 * r56,
        boundary_AP=frame["mask_AP"] - 0.1 + 0.03 * r56,
    )


def test_the_gaps_the_quick_suite_reports_with_their_intervals(tmp_path: Path) -> None:
    suite = load.load_ablation(write_suite(tmp_path / "quick", with_subsets(suite_frame())))
    table = gaps_table(suite).set_index(["comparison", "metric"])
    assert table.loc[("M=7 − M=1", "mask_AP_touching"), "difference"] == "+7.5"
    assert table.loc[("M=7 − M=1", "mask_AP"), "difference"] == "+2.5"
    assert table.loc[("R=56 − R=28", "mask_AP_thin"), "difference"] == "+4.0"
    assert table.loc[("R=56 − R=28", "boundary_AP"), "difference"] == "+4.0"
    assert table.loc[("K=4 − K=1", "mask_AP"), "difference"] == "+3.5"
    assert set(table["reading"]) == {"significant"} and table["95 % CI"].str.startswith("[+").all()
    r_rows = [metric for comparison, metric in table.index if comparison.startswith("R=")]
    assert r_rows == ["mask_AP", "boundary_AP", "mask_AP_thin"]  # boundary AP beside mask AP
    grid = list(grid_table(suite).columns)
    assert grid.index("boundary AP") == grid.index("mask AP 95 % CI") + 1 == grid.index("mask AP") + 2


def test_gaps_with_one_seed_read_not_significant(tmp_path: Path) -> None:
    suite = load.load_ablation(write_suite(tmp_path / "quick", suite_frame(seeds=(0,))))
    table = gaps_table(suite)
    assert set(table["reading"]) == {"not significant at this budget (one seed)"} and set(table["95 % CI"]) == {"–"}
    assert "boundary_AP" not in set(table["metric"])  # absent in this (older) summary: no row, no error
    assert "mask AP 95 % CI" not in grid_table(suite).columns


def test_per_class_ap_gets_its_own_table(tmp_path: Path) -> None:
    frame = with_subsets(suite_frame()).assign(mask_AP_disc=0.4, mask_AP_class_thin=0.2)  # a class named like a subset
    suite = load.load_ablation(write_suite(tmp_path / "quick", frame))
    assert class_columns(suite.frame) == {"disc": "mask_AP_disc", "thin": "mask_AP_class_thin"}
    table = class_table(suite)
    assert list(table.columns) == ["spec", "disc", "thin"] and set(table["disc"]) == {"40.0 ± 0.0"}
    assert class_table(load.load_ablation(write_suite(tmp_path / "plain"))).empty
