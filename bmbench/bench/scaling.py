"""Fitted scaling exponents: the slope of log(time) against log(axis value) and against log(N), with R².

Letters: N instances, R mask side (or whichever axis was swept: K bases, M attention side).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SCALING_STAGES = ("merge", "total")
N_FIT_RANGE = (10, 100)  # the N range of the N fits, when it holds at least two counts
SCALING_COLUMNS = ("variant", "stage", "x", "at", "slope", "r2", "points", "x_min", "x_max")


def fit_loglog(x: list[float] | np.ndarray, y: list[float] | np.ndarray) -> tuple[float, float]:
    """Least-squares slope of log(y) on log(x), and R² of that fit (1.0 when the fit is exact or y is constant)."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    slope, intercept = np.polyfit(lx, ly, 1)
    residual = float(((ly - (slope * lx + intercept)) ** 2).sum())
    spread = float(((ly - ly.mean()) ** 2).sum())
    return float(slope), 1.0 - residual / spread if spread > 0 else 1.0


def _fit_row(variant: str, stage: str, x: str, at: str, xs: pd.Series, ys: pd.Series) -> dict[str, object]:
    slope, r2 = fit_loglog(xs.to_numpy(), ys.to_numpy())
    return {
        "variant": variant,
        "stage": stage,
        "x": x,
        "at": at,
        "slope": slope,
        "r2": r2,
        "points": len(xs),
        "x_min": int(xs.min()),
        "x_max": int(xs.max()),
    }


def scaling_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Fits per variant, for merge and total, from a speed table (SPEED_COLUMNS):

    - against the swept axis at the largest N, where the axis applies and at least two values were measured;
    - against N at each axis value, over N in 10..100 when that holds at least two counts, else over all N.
    """
    ok = frame[(frame["status"] == "ok") & frame["stage"].isin(SCALING_STAGES) & (frame["median_ms"] > 0)]
    rows: list[dict[str, object]] = []
    for (variant, stage), group in ok.groupby(["variant", "stage"], sort=False):
        axis = str(group["axis"].iloc[0])
        applies = group[group["axis_applies"].astype(bool)]
        largest = int(group["instances"].max())
        at_largest = applies[applies["instances"] == largest].dropna(subset=["axis_value"])
        if at_largest["axis_value"].nunique() >= 2:
            rows.append(
                _fit_row(
                    variant, stage, axis, f"N={largest}", at_largest["axis_value"].astype(int), at_largest["median_ms"]
                )
            )
        for value, by_n in group.groupby("axis_value", dropna=False, sort=True):
            low, high = N_FIT_RANGE
            in_range = by_n[(by_n["instances"] >= low) & (by_n["instances"] <= high)]
            chosen = in_range if in_range["instances"].nunique() >= 2 else by_n
            if chosen["instances"].nunique() < 2:
                continue
            at = "own" if pd.isna(value) else f"{axis}={int(value)}"
            rows.append(_fit_row(variant, stage, "N", at, chosen["instances"], chosen["median_ms"]))
    return pd.DataFrame(rows, columns=list(SCALING_COLUMNS))
