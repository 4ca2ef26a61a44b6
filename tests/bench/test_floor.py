"""Floor fits and the order a verdict reads the fits in, on constructed times with known exponents."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bmbench.bench import floor
from bmbench.bench.floor import draw_size, floor_fit, floor_fits, with_cycle_fits
from bmbench.bench.scaling import fit_cost, fit_powers, scaling_table
from bmbench.report.findings import HOLDS
from bmbench.report.speed_findings import R_BAND, R_INTERVAL_BAND, check_quadratic_in_r
from bmbench.schema import SCALING_COLUMNS

R_VALUES = np.array([14.0, 28.0, 42.0, 56.0, 84.0, 112.0])
N_VALUES = (1, 10, 50, 100)


def _cost(r: np.ndarray, n: int = 100) -> np.ndarray:
    """A merge: 0.5 ms fixed + 1e-4·R²·N/100 ms."""
    return 0.5 + 1e-4 * r**2 * n / 100


def _contended(cycles: int, seed: int = 0) -> np.ndarray:
    """``[cycles, R]`` times of a machine shared with another process: a call is delayed with a chance that grows
    with its length (it spans more time slices), by up to half the longest call. Every point keeps some clean calls."""
    rng = np.random.default_rng(seed)
    clean = np.broadcast_to(_cost(R_VALUES), (cycles, len(R_VALUES)))
    hit = rng.random(clean.shape) < 0.8 * clean / clean.max()
    hit[0] = False  # the first cycle ran alone
    return clean + hit * rng.uniform(0.0, 0.5 * clean.max(), clean.shape)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_powers_is_fit_cost_row_by_row(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = _cost(R_VALUES)[None, :] * rng.uniform(0.8, 1.25, (70, len(R_VALUES)))  # more rows than one chunk
    rows[3] = 2.0  # a flat row: no growth, nan
    expected = [fit_cost(R_VALUES, row).p for row in rows]
    np.testing.assert_array_equal(fit_powers(R_VALUES, rows), expected)


def test_the_floor_keeps_the_exponent_that_contention_steepens() -> None:
    times = _contended(40)
    median_p = fit_cost(R_VALUES, np.median(times, axis=0)).p
    p, low, high = floor_fit(R_VALUES, times)
    assert p == pytest.approx(2.0, abs=0.01) and low <= 2.0 <= high + 0.01
    assert median_p > p + 0.2  # what the median reads under the same load: steeper
    assert R_BAND[0] <= p <= R_BAND[1] and R_INTERVAL_BAND[0] <= low and high <= R_INTERVAL_BAND[1]


def test_the_floor_of_flat_times_reads_zero() -> None:
    p, low, high = floor_fit(R_VALUES, np.full((10, len(R_VALUES)), 3.0))
    assert (p, low, high) == (0.0, 0.0, 0.0)


def _rarely_fast(cycles: int, seed: int) -> np.ndarray:
    """``[cycles, R]`` times of a machine where a call runs at full speed one time in ten (a little above the
    cost, by up to 3 %) and 1.3-1.7x slower otherwise: the mix the CPU demo sweep's merge showed."""
    rng = np.random.default_rng(seed)
    clean = np.broadcast_to(_cost(R_VALUES), (cycles, len(R_VALUES)))
    fast = rng.random(clean.shape) < 0.1
    return clean * np.where(fast, 1 + rng.uniform(0, 0.03, clean.shape), rng.uniform(1.3, 1.7, clean.shape))


def test_draw_size_is_a_vanishing_share_of_the_cycles() -> None:
    assert [draw_size(c) for c in (2, 3, 4, 30, 200)] == [2, 3, 4, 16, 70]
    assert draw_size(10_000) / 10_000 < 0.2


def test_the_floor_interval_draws_fewer_cycles_than_the_plain_bootstrap_and_is_wider(monkeypatch) -> None:  # noqa: ANN001
    times = _rarely_fast(200, seed=0)
    drawn: list[int] = []
    monkeypatch.setattr(floor, "draw_size", lambda cycles: drawn.append(draw_size(cycles)) or drawn[-1])
    p, low, high = floor_fit(R_VALUES, times, samples=400)
    assert drawn == [70] and low <= p <= high  # 200^0.8 of the 200 cycles in each resample
    monkeypatch.setattr(floor, "draw_size", lambda cycles: cycles)  # the plain bootstrap: n of n
    p_plain, low_plain, high_plain = floor_fit(R_VALUES, times, samples=400)
    assert p_plain == p and high - low > 1.3 * (high_plain - low_plain)


def _samples(times: np.ndarray) -> pd.DataFrame:
    """Samples of one merge at N=100 over R (from ``times: [C, R]``) and over N at R=56 (clean)."""
    rows = []
    for cycle, row in enumerate(times):
        for r, ms in zip(R_VALUES, row, strict=True):
            rows.append({"axis_value": int(r), "instances": 100, "cycle": cycle, "ms": ms})
        for n in N_VALUES[:-1]:
            rows.append({"axis_value": 56, "instances": n, "cycle": cycle, "ms": float(_cost(np.array(56.0), n))})
    frame = pd.DataFrame(rows).assign(variant="bm", stage="merge", axis_applies=True, ref_ms=1.0, at_s=0.0)
    return frame.assign(spec="bm:R=" + frame["axis_value"].astype(str))


def test_floor_fits_per_variant_stage_and_axis() -> None:
    fits = floor_fits(_samples(_contended(30)), "R").set_index(["x", "at"])
    assert fits.loc[("R", "N=100"), "p_floor"] == pytest.approx(2.0, abs=0.01)
    assert fits.loc[("N", "R=56"), "p_floor"] == pytest.approx(1.0, abs=0.01)
    assert floor_fits(_samples(_contended(2)), "R").empty  # fewer than three cycles: no floor fit


def test_with_cycle_fits_fills_paired_and_floor_columns() -> None:
    samples = _samples(_contended(30))
    medians = samples.groupby(["variant", "spec", "axis_value", "axis_applies", "instances", "stage"], as_index=False)
    frame = medians["ms"].median().rename(columns={"ms": "median_ms"})
    frame = frame.assign(status="ok", axis="R", ci_low_ms=frame["median_ms"], ci_high_ms=frame["median_ms"])
    scaling = with_cycle_fits(scaling_table(frame), samples, "R")
    assert list(scaling.columns) == list(SCALING_COLUMNS)
    row = scaling[scaling["x"] == "R"].iloc[0]
    assert row["p_floor"] == pytest.approx(2.0, abs=0.01) and row["p_paired"] > row["p_floor"]
    none = with_cycle_fits(scaling_table(frame), None, "R")
    assert none[["p_floor", "p_paired"]].isna().all().all()


def test_finding_5_is_judged_on_the_floor_fit() -> None:
    row = {column: np.nan for column in SCALING_COLUMNS} | {"p": 2.6, "p_low": 2.4, "p_high": 2.8}
    row |= {"p_paired": 2.4, "p_paired_low": 2.3, "p_paired_high": 2.6, "cycles_paired": 30}
    row |= {"p_floor": 2.05, "p_floor_low": 2.0, "p_floor_high": 2.1}
    row |= {"variant": "bm", "family": "blendmask", "stage": "merge", "x": "R", "at": "N=100"}
    row |= {
        "a_ms": 0.5,
        "b": 1e-4,
        "x_min": 14.0,
        "x_max": 112.0,
        "slope": 1.8,
        "r2": 0.99,
        "fit_r2": 0.99,
        "points": 6,
    }
    check = check_quadratic_in_r(pd.DataFrame([row]))
    assert check.verdict == HOLDS and "floor p 2.05" in check.evidence
