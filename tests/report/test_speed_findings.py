"""Findings 5 and 6 on made-up speed tables: judged on the per-instance stages' cost model (fixed cost + marginal
cost · x^p) and p's interval: holds, does not hold, or not significant."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bmbench.bench.scaling import scaling_table
from bmbench.report import speed_findings
from bmbench.report.findings import FAILS, HOLDS, NOT_MEASURED, NOT_SIGNIFICANT

R_VALUES = (14, 28, 56, 84, 112)
N_VALUES = (1, 2, 5, 10, 20, 50, 100)


def _frame(merge, paste, *, spread: float = 0.01, seed: int = 0) -> pd.DataFrame:  # noqa: ANN001
    """A BlendMask speed table over R and N: ``merge(R, N)`` and ``paste(R, N)`` in ms, each point's 95 % interval
    ±spread, the medians themselves off by up to that much (seeded)."""
    rng = np.random.default_rng(seed)
    rows = []
    for R in R_VALUES:
        for num in N_VALUES:
            for stage, ms in (("bottom", 30.0), ("merge", merge(R, num)), ("paste", paste(R, num))):
                ms = ms * (1 + spread * rng.uniform(-1, 1) / 2)
                rows.append({"variant": "blendmask", "family": "blendmask", "stage": stage, "axis": "R"})
                rows[-1] |= {"axis_value": R, "axis_applies": True, "instances": num, "median_ms": ms}
                rows[-1] |= {"ci_low_ms": ms * (1 - spread), "ci_high_ms": ms * (1 + spread), "status": "ok"}
    scaling = scaling_table(pd.DataFrame(rows)).assign(family="blendmask")
    return scaling.assign(own=(scaling["x"] == "N") & (scaling["at"] == "R=56"))


def test_quadratic_with_a_fixed_cost_holds_where_a_power_law_on_it_would_not() -> None:
    scaling = _frame(lambda R, n: 8.0 + 0.0004 * n * R**2, lambda R, n: 5.0 + 0.05 * n)
    check = speed_findings.check_quadratic_in_r(scaling)
    assert check.verdict == HOLDS, check.evidence
    assert "merge carries the growth" in check.evidence and "ms fixed" in check.evidence
    merge_r = scaling[(scaling["stage"] == "merge") & (scaling["x"] == "R")].iloc[0]
    assert merge_r["slope"] < speed_findings.R_BAND[0]  # the log-log slope of the same times reads sub-quadratic


def test_sub_quadratic_does_not_hold() -> None:
    check = speed_findings.check_quadratic_in_r(_frame(lambda R, n: 0.01 * n * R**1.2, lambda R, n: 5.0 + 0.05 * n))
    assert check.verdict == FAILS, check.evidence


def test_too_wide_an_interval_is_not_significant() -> None:
    noisy = _frame(lambda R, n: 2.0 + 0.0004 * n * R**2, lambda R, n: 5.0 + 0.05 * n, spread=0.6, seed=3)
    assert speed_findings.check_quadratic_in_r(noisy).verdict == NOT_SIGNIFICANT

    def judged(**fit: float) -> str:
        row = pd.Series({"p": 1.9, "p_low": 1.2, "p_high": 2.7, "a_ms": 1.0} | fit)
        return speed_findings.judge_exponent(row, speed_findings.R_BAND, speed_findings.R_INTERVAL_BAND)

    assert judged() == NOT_SIGNIFICANT and judged(p_low=1.8, p_high=2.1) == HOLDS
    assert judged(p=1.2, p_high=1.6) == FAILS and judged(p=1.65, p_low=1.55, p_high=1.75) == NOT_SIGNIFICANT


def test_linear_in_n_with_a_large_fixed_cost_holds_and_steeper_fails() -> None:
    linear = _frame(lambda R, n: 40.0 + 0.02 * n * R / 56, lambda R, n: 60.0 + 0.3 * n)
    check = speed_findings.check_linear_in_n(linear)
    assert check.verdict == HOLDS and "paste carries the growth" in check.evidence, check.evidence
    steep = _frame(lambda R, n: 1.0 + 0.02 * n**1.6, lambda R, n: 5.0 + 0.01 * n)
    assert speed_findings.check_linear_in_n(steep).verdict == FAILS


def test_without_a_cost_model_the_findings_are_not_measured() -> None:
    scaling = _frame(lambda R, n: 0.0004 * n * R**2, lambda R, n: 5.0 + 0.05 * n)
    old = scaling.drop(columns=["a_ms", "b", "p", "p_low", "p_high"])
    assert speed_findings.check_quadratic_in_r(old).verdict == NOT_MEASURED
