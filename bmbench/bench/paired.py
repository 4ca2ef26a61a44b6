"""Paired scaling fits: the cost model ``t = a + b·x^p`` fitted within each cycle, on that cycle's points, and the
median p over cycles with a bootstrap interval (cycles resampled).

Letters: N instances, R mask side (or the swept K or M). The points of one cycle were timed within seconds of each
other, in a shuffled order: whatever slowed the machine in that cycle scales them alike, and an exponent does not
move when every point is scaled by the same factor. A fit of pooled medians, by contrast, bends when the points of
one end of the curve were timed during a slow spell. The pooled fit stays beside the paired one in scaling.csv.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from bmbench.bench.scaling import AXIS_STAGES, N_STAGES, fit_powers

PAIRED_BOOTSTRAP = 2000  # resamples of the cycles behind the interval of the median p
PAIRED_SEED = 0
MIN_PAIRED_CYCLES = 3  # fewer cycles holding every point: no paired fit
FIT_KEYS = ("variant", "stage", "x", "at")  # one row of scaling.csv
PAIRED_COLUMNS = (*FIT_KEYS, "p_paired", "p_paired_low", "p_paired_high", "cycles_paired")


def cycle_table(samples: pd.DataFrame, x: str) -> pd.DataFrame:
    """The times of one (variant, stage) at fixed other variables as ``[cycles, x]`` (ms), keeping the cycles that
    hold every value of `x` (``axis_value`` or ``instances``): what both the paired and the floor fit read."""
    return samples.pivot_table(index="cycle", columns=x, values="ms", aggfunc="median").dropna()


def cycle_exponents(samples: pd.DataFrame, x: str) -> np.ndarray:
    """The cost model's p in each cycle holding every value of `x`, from samples of one (variant, stage) at fixed
    other variables: ``[C]`` over those cycles (0 for a cycle whose times do not grow, as
    bench.scaling.bootstrap_p counts it). Needs 3 distinct x."""
    table = cycle_table(samples, x)
    if table.shape[1] < 3 or table.empty:
        return np.empty(0)
    return np.nan_to_num(fit_powers(table.columns.to_numpy(dtype=float), table.to_numpy(dtype=float)), nan=0.0)


def median_interval_bootstrap(values: np.ndarray, *, samples: int = PAIRED_BOOTSTRAP) -> tuple[float, float, float]:
    """The median of `values` and the 95 % percentile bootstrap interval of that median."""
    rng = np.random.default_rng(PAIRED_SEED)
    drawn = rng.choice(values, size=(samples, len(values)), replace=True)
    low, high = np.percentile(np.median(drawn, axis=1), [2.5, 97.5])
    return float(np.median(values)), float(low), float(high)


def _paired_row(variant: str, stage: str, x: str, at: str, powers: np.ndarray) -> dict[str, object] | None:
    if len(powers) < MIN_PAIRED_CYCLES:
        return None
    p, low, high = median_interval_bootstrap(powers)
    return {
        "variant": variant,
        "stage": stage,
        "x": x,
        "at": at,
        "p_paired": p,
        "p_paired_low": low,
        "p_paired_high": high,
        "cycles_paired": len(powers),
    }


def fit_groups(samples: pd.DataFrame, axis: str) -> Iterator[tuple[str, str, str, str, pd.DataFrame]]:
    """The groups of samples that bench.scaling.scaling_table fits, as (variant, stage, x, at, samples): against the
    swept axis at the largest N (where the axis applies), and against N at each axis value.
    ``samples``: schema.SAMPLE_COLUMNS; the drift probe's rows and failed calls are left out."""
    timed = samples[(samples["stage"] != "probe") & (samples["ms"] > 0)]
    for (variant, stage), group in timed.groupby(["variant", "stage"], sort=False):
        largest = int(group["instances"].max())
        applies = group[group["axis_applies"].astype(bool) & (group["instances"] == largest)]
        if stage in AXIS_STAGES and applies["axis_value"].nunique() >= 3:
            yield variant, stage, "axis_value", f"N={largest}", applies
        if stage not in N_STAGES:
            continue
        for value, by_n in group.groupby("axis_value", dropna=False, sort=True):
            if by_n["instances"].nunique() >= 3:
                yield variant, stage, "instances", "own" if pd.isna(value) else f"{axis}={int(value)}", by_n


def paired_fits(samples: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Paired fits per variant and stage, the same fits as bench.scaling.scaling_table. ``samples``:
    schema.SAMPLE_COLUMNS."""
    rows = [
        _paired_row(variant, stage, axis if column == "axis_value" else "N", at, cycle_exponents(group, column))
        for variant, stage, column, at, group in fit_groups(samples, axis)
    ]
    return pd.DataFrame([row for row in rows if row is not None], columns=list(PAIRED_COLUMNS))


def with_fits(scaling: pd.DataFrame, fits: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """The scaling table with `columns` filled from `fits` (rows keyed by FIT_KEYS; nan where `fits` has none)."""
    base = scaling.drop(columns=[c for c in columns if c in scaling.columns])
    if fits.empty or base.empty:
        return base.assign(**{c: np.nan for c in columns})[list(scaling.columns)]
    return base.merge(fits[[*FIT_KEYS, *columns]], on=list(FIT_KEYS), how="left")[list(scaling.columns)]


def with_paired(scaling: pd.DataFrame, samples: pd.DataFrame | None, axis: str) -> pd.DataFrame:
    """The scaling table with its paired columns filled from `samples` (nan where no paired fit exists)."""
    fits = paired_fits(samples, axis) if samples is not None and not samples.empty else pd.DataFrame()
    return with_fits(scaling, fits, PAIRED_COLUMNS[len(FIT_KEYS) :])
