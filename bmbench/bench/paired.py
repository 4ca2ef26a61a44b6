"""Paired scaling fits: the cost model ``t = a + b·x^p`` fitted within each cycle, on that cycle's points, and the
median p over cycles with a bootstrap interval (cycles resampled).

Letters: N instances, R mask side (or the swept K or M). The points of one cycle were timed within seconds of each
other, in a shuffled order: whatever slowed the machine in that cycle scales them alike, and an exponent does not
move when every point is scaled by the same factor. A fit of pooled medians, by contrast, bends when the points of
one end of the curve were timed during a slow spell. The pooled fit stays beside the paired one in scaling.csv.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bmbench.bench.scaling import AXIS_STAGES, N_STAGES, fit_cost

PAIRED_BOOTSTRAP = 2000  # resamples of the cycles behind the interval of the median p
PAIRED_SEED = 0
MIN_PAIRED_CYCLES = 3  # fewer cycles holding every point: no paired fit
PAIRED_COLUMNS = ("variant", "stage", "x", "at", "p_paired", "p_paired_low", "p_paired_high", "cycles_paired")


def cycle_exponents(samples: pd.DataFrame, x: str) -> np.ndarray:
    """The cost model's p in each cycle holding every value of `x` (``axis_value`` or ``instances``), from
    samples of one (variant, stage) at fixed other variables: ``Tensor[C]`` over those cycles (0 for a cycle whose
    times do not grow, as bench.scaling.bootstrap_p counts it). Needs 3 distinct x."""
    table = samples.pivot_table(index="cycle", columns=x, values="ms", aggfunc="median").dropna()
    if table.shape[1] < 3 or table.empty:
        return np.empty(0)
    xs = table.columns.to_numpy(dtype=float)
    powers = [fit_cost(xs, row).p for row in table.to_numpy(dtype=float)]
    return np.nan_to_num(np.asarray(powers, dtype=float), nan=0.0)


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


def paired_fits(samples: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Paired fits per variant and stage, the same fits as bench.scaling.scaling_table: against the swept axis at
    the largest N (where the axis applies), and against N at each axis value. ``samples``: schema.SAMPLE_COLUMNS."""
    timed = samples[(samples["stage"] != "probe") & (samples["ms"] > 0)]
    rows: list[dict[str, object] | None] = []
    for (variant, stage), group in timed.groupby(["variant", "stage"], sort=False):
        largest = int(group["instances"].max())
        applies = group[group["axis_applies"].astype(bool) & (group["instances"] == largest)]
        if stage in AXIS_STAGES and applies["axis_value"].nunique() >= 3:
            rows.append(_paired_row(variant, stage, axis, f"N={largest}", cycle_exponents(applies, "axis_value")))
        if stage not in N_STAGES:
            continue
        for value, by_n in group.groupby("axis_value", dropna=False, sort=True):
            if by_n["instances"].nunique() >= 3:
                at = "own" if pd.isna(value) else f"{axis}={int(value)}"
                rows.append(_paired_row(variant, stage, "N", at, cycle_exponents(by_n, "instances")))
    return pd.DataFrame([row for row in rows if row is not None], columns=list(PAIRED_COLUMNS))


def with_paired(scaling: pd.DataFrame, samples: pd.DataFrame | None, axis: str) -> pd.DataFrame:
    """The scaling table with its paired columns filled from `samples` (nan where no paired fit exists)."""
    columns = [c for c in PAIRED_COLUMNS if c not in ("variant", "stage", "x", "at")]
    keys = ["variant", "stage", "x", "at"]
    base = scaling.drop(columns=[c for c in columns if c in scaling.columns])
    if samples is None or samples.empty or base.empty:
        return base.assign(**{c: np.nan for c in columns})[list(scaling.columns)]
    merged = base.merge(paired_fits(samples, axis), on=keys, how="left")
    return merged[list(scaling.columns)]
