"""The cost model t = a + b·x^p: recovered from synthetic timings with known values, intervals on p."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bmbench.bench.scaling import bootstrap_p, fit_cost, fit_loglog, scaling_table
from bmbench.schema import SCALING_COLUMNS

N = np.array([1, 2, 5, 10, 20, 50, 100], dtype=float)
R = np.array([14, 28, 42, 56, 84, 112], dtype=float)


def test_fit_recovers_a_large_fixed_cost_beside_a_linear_marginal_cost() -> None:
    times = 50.0 + 0.02 * N  # the fixed cost is 25x the marginal cost at N=100
    fit = fit_cost(N, times)
    assert fit.a == pytest.approx(50.0, rel=1e-3) and fit.b == pytest.approx(0.02, rel=1e-2)
    assert fit.p == pytest.approx(1.0, abs=0.01) and fit.r2 == pytest.approx(1.0)
    slope, _ = fit_loglog(N, times)
    assert slope < 0.05  # what a pure power law reads on the same times
    assert bootstrap_p(N, times, fit) == (pytest.approx(fit.p), pytest.approx(fit.p))  # exact data: no spread


def test_fit_recovers_a_quadratic_with_noise_and_its_interval_covers_it() -> None:
    rng = np.random.default_rng(7)
    times = (4.0 + 0.003 * R**2) * (1 + 0.01 * rng.standard_normal(len(R)))
    fit = fit_cost(R, times)
    assert fit.a == pytest.approx(4.0, rel=0.2) and fit.b == pytest.approx(0.003, rel=0.2)
    assert fit.p == pytest.approx(2.0, abs=0.05)
    low, high = bootstrap_p(R, times, fit, np.full(len(R), 0.01 * 20))
    assert low <= 2.0 <= high and high - low < 0.3


def test_no_fixed_cost_and_no_growth() -> None:
    fit = fit_cost(N, 0.3 * N**1.5)
    assert fit.a == pytest.approx(0.0, abs=1e-6) and fit.p == pytest.approx(1.5, abs=0.01)
    flat = fit_cost(N, np.full(len(N), 7.0))
    assert flat.a == pytest.approx(7.0) and flat.b == 0.0 and np.isnan(flat.p)


def test_scaling_table_carries_the_cost_model_beside_the_slope() -> None:
    rows = []
    for r in R:
        for n in N:
            ms = 20.0 + 0.0005 * n * r**2
            rows.append({"variant": "v", "stage": "merge", "axis": "R", "axis_value": int(r), "axis_applies": True})
            rows[-1] |= {"instances": int(n), "median_ms": ms, "ci_low_ms": ms * 0.99, "ci_high_ms": ms * 1.01}
            rows[-1] |= {"status": "ok"}
    table = scaling_table(pd.DataFrame(rows))
    assert list(table.columns) == list(SCALING_COLUMNS)
    by_r = table[table["x"] == "R"].iloc[0]
    assert by_r["p"] == pytest.approx(2.0, abs=0.05) and by_r["a_ms"] == pytest.approx(20.0, rel=0.05)
    assert by_r["p_low"] <= 2.0 <= by_r["p_high"] and by_r["slope"] < 1.7  # the log-log slope is dragged down
    assert by_r["marginal_unit"] == "ms per R²" and by_r["marginal_ms"] == pytest.approx(0.05, rel=0.05)
    by_n = table[(table["x"] == "N") & (table["at"] == "R=56")].iloc[0]
    assert by_n["p"] == pytest.approx(1.0, abs=0.02) and by_n["marginal_ms"] == pytest.approx(0.0005 * 56**2, rel=0.02)
    assert by_n["fit_points"] == 7 and by_n["points"] == 4  # the slope keeps N in 10..100


def test_two_values_give_a_slope_but_no_cost_model() -> None:
    rows = [
        {"variant": "v", "stage": "merge", "axis": "R", "axis_value": r, "axis_applies": True, "instances": 10}
        | {"median_ms": 0.01 * r**2, "status": "ok"}
        for r in (28, 56)
    ]
    row = scaling_table(pd.DataFrame(rows)).iloc[0]
    assert row["slope"] == pytest.approx(2.0) and np.isnan(row["p"]) and row["fit_points"] == 2
