"""Paired fits, ratio_to_ref, the drift summary and the stability table on constructed rows with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bmbench.bench.drift import drift_summary, ratio_stats
from bmbench.bench.paired import cycle_exponents, median_interval_bootstrap, paired_fits, with_paired
from bmbench.bench.scaling import scaling_table
from bmbench.bench.stability import stability_table
from bmbench.schema import SCALING_COLUMNS, STABILITY_COLUMNS

R_VALUES = (14, 28, 56, 112)
N_VALUES = (1, 10, 50, 100)


def _samples(cycle_scale: list[float], p_r: float = 2.0) -> pd.DataFrame:
    """Merge times 0.5 + 1e-4·R^p_r·N/100 ms, every cycle scaled by its own factor (the machine's state)."""
    rows = []
    for cycle, scale in enumerate(cycle_scale):
        for r in R_VALUES:
            for n in N_VALUES:
                ms = scale * (0.5 + 1e-4 * r**p_r * n / 100)
                rows.append(
                    {"variant": "bm", "spec": f"bm:R={r}", "axis_value": r, "axis_applies": True, "instances": n}
                    | {"stage": "merge", "cycle": cycle, "ms": ms, "ref_ms": scale * 2.0, "at_s": float(cycle)}
                )
    return pd.DataFrame(rows)


def test_a_cycle_scaled_as_a_whole_keeps_its_exponent() -> None:
    scales = [1.0, 1.3, 0.8, 2.0, 1.1]  # a machine whose speed changes from cycle to cycle
    samples = _samples(scales)
    at_largest = samples[samples["instances"] == 100]
    powers = cycle_exponents(at_largest, "axis_value")
    assert len(powers) == 5 and np.allclose(powers, 2.0, atol=0.02)
    fits = paired_fits(samples, "R")
    merge_r = fits[(fits["x"] == "R")].iloc[0]
    assert merge_r["at"] == "N=100" and merge_r["cycles_paired"] == 5
    assert merge_r["p_paired"] == pytest.approx(2.0, abs=0.02)
    assert merge_r["p_paired_low"] <= merge_r["p_paired"] <= merge_r["p_paired_high"]
    by_n = fits[(fits["x"] == "N") & (fits["at"] == "R=112")].iloc[0]
    assert by_n["p_paired"] == pytest.approx(1.0, abs=0.02)


def test_a_cycle_missing_a_point_is_left_out_of_the_paired_fit() -> None:
    samples = _samples([1.0, 1.0, 1.0, 1.0])
    samples = samples[~((samples["cycle"] == 3) & (samples["axis_value"] == 56))]
    powers = cycle_exponents(samples[samples["instances"] == 100], "axis_value")
    assert len(powers) == 3


def test_the_bootstrap_interval_of_a_median() -> None:
    median, low, high = median_interval_bootstrap(np.array([1.9, 2.0, 2.1, 2.0, 1.95, 2.05, 2.0]))
    assert median == 2.0 and 1.9 <= low <= 2.0 <= high <= 2.1
    constant = median_interval_bootstrap(np.full(10, 1.5))
    assert constant == (1.5, 1.5, 1.5)


def test_ratio_to_ref_is_the_median_of_per_cycle_ratios() -> None:
    # the stage takes twice the probe in every cycle, whatever the machine does: the ratio is exactly 2
    times = [2.0, 4.0, 3.0, 10.0, 2.2, 2.4]
    refs = [1.0, 2.0, 1.5, 5.0, 1.1, 1.2]
    stats = ratio_stats(times, refs)
    assert stats["ratio_to_ref"] == pytest.approx(2.0)
    assert stats["ratio_ci_low"] == pytest.approx(2.0) and stats["ratio_ci_high"] == pytest.approx(2.0)
    mixed = ratio_stats([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], [1.0] * 7)
    assert mixed["ratio_to_ref"] == 4.0 and mixed["ratio_ci_low"] == 1.0 and mixed["ratio_ci_high"] == 7.0
    assert math.isnan(ratio_stats([], [])["ratio_to_ref"])


def test_drift_summary_reports_range_and_trend() -> None:
    minutes = np.arange(0, 10)
    drift = drift_summary([1.0 + 0.01 * m for m in minutes], list(minutes * 60.0), "probe")
    assert drift["cycles"] == 10 and drift["ref_ms_min"] == 1.0 and drift["ref_ms_max"] == 1.09
    assert drift["trend_pct_per_min"] == pytest.approx(100 * 0.01 / 1.045, abs=0.01)  # per minute, of the median
    assert drift["range_pct"] == pytest.approx(100 * 0.09 / 1.045, abs=0.1)


def _frame(medians: dict[int, float], spread: float, ratio_scale: float) -> pd.DataFrame:
    rows = [
        {"variant": "bm", "spec": f"bm:R={r}", "instances": 100, "stage": "merge", "status": "ok"}
        | {"median_ms": m, "ci_low_ms": m * (1 - spread), "ci_high_ms": m * (1 + spread)}
        | {"ratio_to_ref": m / ratio_scale, "ratio_ci_low": m * (1 - spread) / ratio_scale}
        | {"ratio_ci_high": m * (1 + spread) / ratio_scale}
        for r, m in medians.items()
    ]
    return pd.DataFrame(rows)


def _fits(p: float, low: float, high: float) -> pd.DataFrame:
    row = {column: np.nan for column in SCALING_COLUMNS}
    row |= {"variant": "bm", "stage": "merge", "x": "R", "at": "N=100", "p": 1.5, "p_low": 1.0, "p_high": 3.0}
    row |= {"p_paired": p, "p_paired_low": low, "p_paired_high": high, "cycles_paired": 20}
    return pd.DataFrame([row])


def test_stability_of_two_runs_that_agree() -> None:
    first = _frame({14: 1.0, 28: 2.0, 56: 8.0, 112: 30.0}, 0.03, 2.0)
    second = _frame({14: 1.01, 28: 2.02, 56: 7.95, 112: 30.3}, 0.03, 2.0)
    table = stability_table(first, second, _fits(1.9, 1.8, 2.0), _fits(1.95, 1.85, 2.05))
    assert list(table.columns) == list(STABILITY_COLUMNS)
    points = table.set_index("kind")
    assert points.loc["points-ms", "agree"] == 1.0 and points.loc["points-ratio", "agree"] == 1.0
    assert points.loc["points-ms", "median_abs_diff_pct"] == pytest.approx(1.0, abs=0.01)
    exponent = points.loc["exponent"]
    assert exponent["first"] == 1.9 and exponent["second"] == 1.95 and exponent["agree"] == 1.0  # the paired p


def test_stability_of_two_runs_that_do_not_agree() -> None:
    # the second run's machine is 20 % slower throughout: ms disagree, the ratio to the probe does not
    first = _frame({14: 1.0, 28: 2.0, 56: 8.0, 112: 30.0}, 0.03, 2.0)
    second = _frame({14: 1.2, 28: 2.4, 56: 9.6, 112: 36.0}, 0.03, 2.4)
    table = stability_table(first, second, _fits(1.6, 1.5, 1.7), _fits(2.0, 1.9, 2.1)).set_index("kind")
    assert table.loc["points-ms", "agree"] == 0.0 and table.loc["points-ratio", "agree"] == 1.0
    assert table.loc["points-ms", "median_abs_diff_pct"] == pytest.approx(20.0)
    assert table.loc["exponent", "agree"] == 0.0


def test_with_paired_fills_the_scaling_table_from_samples() -> None:
    samples = _samples([1.0, 1.2, 0.9, 1.1])
    medians = samples.groupby(["variant", "spec", "axis_value", "axis_applies", "instances", "stage"], as_index=False)
    frame = medians["ms"].median().rename(columns={"ms": "median_ms"})
    frame = frame.assign(status="ok", axis="R", ci_low_ms=frame["median_ms"], ci_high_ms=frame["median_ms"])
    scaling = with_paired(scaling_table(frame), samples, "R")
    assert list(scaling.columns) == list(SCALING_COLUMNS)
    row = scaling[(scaling["x"] == "R")].iloc[0]
    assert row["p_paired"] == pytest.approx(2.0, abs=0.02) and row["cycles_paired"] == 4
    assert with_paired(scaling_table(frame), None, "R")["p_paired"].isna().all()
