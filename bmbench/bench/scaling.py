"""Scaling fits of the speed table: a cost model ``t = a + b·x^p`` (a fixed cost, a marginal cost and its exponent)
with a bootstrap interval on p, and the log-log slope beside it, against the swept axis and against N.

Letters: N instances, R mask side (or whichever axis was swept: K bases, M attention side). The cost model is what
findings 5 and 6 read: a pure power law fitted to a stage with a fixed overhead reads sub-linear even when its
per-instance cost is exactly linear, while ``a`` absorbs that overhead. No scipy here: for each p on a grid the
best (a, b) >= 0 is a two-unknown least-squares problem in closed form, and p is the grid's best, refined on a finer
grid around it. Residuals are relative (times span decades; each point's repeats have about the same relative
spread).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bmbench.schema import SCALING_COLUMNS

AXIS_STAGES = ("bottom", "top", "merge", "paste", "total")  # fitted against the swept axis
N_STAGES = ("merge", "paste", "total")  # against N: bottom and top take no per-instance input
N_FIT_RANGE = (10, 100)  # the N range of the log-log slope, when it holds at least two counts
P_RANGE = (0.05, 4.0)  # exponents searched: from nearly flat to steeper than any stage here
P_COARSE, P_FINE = 160, 60  # grid points over P_RANGE, then across one coarse step around the best
NO_GROWTH = 1e-9  # a marginal part below this fraction of the largest time is no growth (p undefined)
FIT_CHUNK = 64  # rows of fit_powers searched at once
BOOTSTRAP_SAMPLES = 300  # resamples behind p's interval (percentile, 95 %)
BOOTSTRAP_SEED = 0
Z95 = 1.96  # a median's 95 % interval spans about ±1.96 standard errors
MARGINAL_UNITS = {
    "N": ("ms per instance", 1.0),
    "R": ("ms per R²", 2.0),
    "K": ("ms per K", 1.0),
    "M": ("ms per M²", 2.0),
}


@dataclass(frozen=True)
class CostFit:
    """``t = a + b·x^p`` fitted by relative least squares."""

    a: float  # ms, >= 0
    b: float  # ms per x^p, >= 0
    p: float  # nan when b == 0
    r2: float  # on the times
    rmse_rel: float

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        power = 0.0 if np.isnan(self.p) else self.p
        return self.a + self.b * np.asarray(x, dtype=float) ** power


def fit_loglog(x: list[float] | np.ndarray, y: list[float] | np.ndarray) -> tuple[float, float]:
    """Least-squares slope of log(y) on log(x), and R² of that fit (1.0 when the fit is exact or y is constant)."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    slope, intercept = np.polyfit(lx, ly, 1)
    residual = float(((ly - (slope * lx + intercept)) ** 2).sum())
    spread = float(((ly - ly.mean()) ** 2).sum())
    return float(slope), 1.0 - residual / spread if spread > 0 else 1.0


def _best_ab(x: np.ndarray, y: np.ndarray, powers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row of ``y: [B, n]`` and each p of its row of ``powers: [B, P]`` (or of one row ``[1, P]`` for all),
    the (a, b) >= 0 minimising sum(((a + b x^p - y) / y)^2): arrays a, b, sse, each ``[B, P]``."""
    u = 1.0 / y  # [B, n]: the constant column, relative
    v = x[None, None, :] ** powers[:, :, None] / y[:, None, :]  # [B, P, n]: the power column, relative
    suu, suv, svv = (u * u).sum(-1)[:, None], (u[:, None, :] * v).sum(-1), (v * v).sum(-1)
    sut, svt = u.sum(-1)[:, None], v.sum(-1)  # against the target: ones
    det = suu * svv - suv**2
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(det > 0, (svv * sut - suv * svt) / det, 0.0)
        b = np.where(det > 0, (suu * svt - suv * sut) / det, 0.0)
    only_b = a < 0  # the constrained optimum lies on a = 0 or b = 0
    a = np.where(only_b, 0.0, a)
    b = np.where(only_b, svt / svv, b)
    only_a = b < 0
    b = np.where(only_a, 0.0, b)
    a = np.where(only_a, np.broadcast_to(sut / suu, a.shape), a)
    sse = (((a[..., None] * u[:, None, :] + b[..., None] * v) - 1.0) ** 2).sum(-1)
    return a, b, sse


def _search(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cost model's (a, b, p) for each row of ``y: [B, n]`` at the points ``x: [n]``: p on the coarse grid,
    refined across one coarse step around its best; p is nan (and b 0) where the marginal part does not grow."""
    rows = np.arange(len(y))
    coarse = np.linspace(*P_RANGE, P_COARSE)
    _, _, sse = _best_ab(x, y, coarse[None, :])  # one grid for every row
    centre = coarse[sse.argmin(1)]
    step = coarse[1] - coarse[0]
    fine = np.clip(np.linspace(centre - step, centre + step, P_FINE, axis=1), *P_RANGE)
    a, b, sse = _best_ab(x, y, fine)
    best = sse.argmin(1)
    a, b, p = a[rows, best], b[rows, best], fine[rows, best]
    grows = b * x.max() ** p > NO_GROWTH * y.max(1)  # else p is not identifiable
    return a, np.where(grows, b, 0.0), np.where(grows, p, np.nan)


def fit_powers(x: np.ndarray | list[float], y: np.ndarray) -> np.ndarray:
    """The cost model's p fitted to each row of ``y: [B, n]`` at ``x: [n]`` at once (nan where a row does not
    grow): ``[B]``, what fit_cost gives row by row, for bootstraps of thousands of resamples. Rows go in chunks
    whose [chunk, P, n] temporaries stay in cache."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return np.concatenate([_search(x, y[i : i + FIT_CHUNK])[2] for i in range(0, len(y), FIT_CHUNK)] or [np.empty(0)])


def fit_cost(x: np.ndarray | list[float], y: np.ndarray | list[float]) -> CostFit:
    """The cost model ``t = a + b·x^p`` (a, b >= 0, p in P_RANGE) by relative least squares; needs 3 distinct x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    a, b, p = (float(v[0]) for v in _search(x, y[None, :]))
    fit = CostFit(a, b, p, float("nan"), float("nan"))
    predicted = fit.predict(x)
    spread = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - predicted) ** 2).sum()) / spread if spread > 0 else 1.0
    rmse = float(np.sqrt((((y - predicted) / y) ** 2).mean()))
    return CostFit(fit.a, fit.b, fit.p, r2, rmse)


def bootstrap_p(
    x: np.ndarray, y: np.ndarray, fit: CostFit, sd: np.ndarray | None = None, *, samples: int = BOOTSTRAP_SAMPLES
) -> tuple[float, float]:
    """95 % percentile interval of p over refits of resampled times: each resample is the fitted curve times
    (1 + a relative residual drawn with replacement, inflated for the three fitted parameters), plus each point's
    own measurement error (normal, ``sd``: from its median's interval). Exact data with no error give [p, p]."""
    if np.isnan(fit.p):
        return float("nan"), float("nan")
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    predicted = fit.predict(x)
    residuals = (y - predicted) / predicted
    n = len(x)
    residuals = residuals * np.sqrt(n / (n - 3)) if n > 3 else residuals * 0.0
    sd = np.zeros(n) if sd is None else np.nan_to_num(np.asarray(sd, dtype=float))
    powers = []
    for _ in range(samples):
        drawn = predicted * (1 + rng.choice(residuals, size=n)) + rng.normal(0.0, 1.0, n) * sd
        refit = fit_cost(x, np.maximum(drawn, 1e-9))
        powers.append(refit.p if not np.isnan(refit.p) else 0.0)  # no growth at all: the flattest exponent
    low, high = np.percentile(powers, [2.5, 97.5])
    return float(low), float(high)


def _points(group: pd.DataFrame, x: str) -> pd.DataFrame:
    """One point per x: median and the standard error its interval implies."""
    columns = [x, "median_ms"] + [c for c in ("ci_low_ms", "ci_high_ms") if c in group]
    points = group[columns].groupby(x, as_index=False).first().sort_values(x)
    if {"ci_low_ms", "ci_high_ms"} <= set(points):
        points["sd"] = (points["ci_high_ms"] - points["ci_low_ms"]) / (2 * Z95)
    else:
        points["sd"] = 0.0
    return points


def _fit_row(variant: str, stage: str, x: str, at: str, slope_points: pd.DataFrame, cost_points: pd.DataFrame) -> dict:
    column = "instances" if x == "N" else "axis_value"
    xs, ys = slope_points[column].astype(float), slope_points["median_ms"].astype(float)
    slope, r2 = fit_loglog(xs.to_numpy(), ys.to_numpy())
    row: dict[str, object] = {
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
    cx = cost_points[column].astype(float).to_numpy()
    cy = cost_points["median_ms"].astype(float).to_numpy()
    unit, power = MARGINAL_UNITS.get(x, (f"ms per {x}", 1.0))
    nan = float("nan")
    row |= {"a_ms": nan, "b": nan, "p": nan, "p_low": nan, "p_high": nan, "marginal_ms": nan}
    row |= {"marginal_unit": unit, "fit_r2": nan, "fit_rmse_rel": nan, "fit_points": len(cx)}
    if len(np.unique(cx)) >= 3:
        fit = fit_cost(cx, cy)
        low, high = bootstrap_p(cx, cy, fit, cost_points["sd"].to_numpy())
        top = cx.max()
        row |= {"a_ms": fit.a, "b": fit.b, "p": fit.p, "p_low": low, "p_high": high}
        row |= {"marginal_ms": float(fit.predict(top) - fit.a) / top**power, "fit_r2": fit.r2}
        row["fit_rmse_rel"] = fit.rmse_rel
    return row


def scaling_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Fits per variant and stage, from a speed table (SPEED_COLUMNS):

    - against the swept axis at the largest N, where the axis applies and at least two values were measured
      (AXIS_STAGES);
    - against N at each axis value (N_STAGES): the log-log slope over N in 10..100 when that holds at least two
      counts, else over all N; the cost model over all N.

    The cost model needs three distinct x; with fewer its columns are nan.
    """
    ok = frame[(frame["status"] == "ok") & frame["stage"].isin(AXIS_STAGES) & (frame["median_ms"] > 0)]
    rows: list[dict[str, object]] = []
    for (variant, stage), group in ok.groupby(["variant", "stage"], sort=False):
        axis = str(group["axis"].iloc[0])
        applies = group[group["axis_applies"].astype(bool)]
        largest = int(group["instances"].max())
        at_largest = applies[applies["instances"] == largest].dropna(subset=["axis_value"])
        if at_largest["axis_value"].nunique() >= 2:
            points = _points(at_largest, "axis_value")
            rows.append(_fit_row(variant, stage, axis, f"N={largest}", points, points))
        if stage not in N_STAGES:
            continue
        for value, by_n in group.groupby("axis_value", dropna=False, sort=True):
            low, high = N_FIT_RANGE
            in_range = by_n[(by_n["instances"] >= low) & (by_n["instances"] <= high)]
            chosen = in_range if in_range["instances"].nunique() >= 2 else by_n
            if chosen["instances"].nunique() < 2:
                continue
            at = "own" if pd.isna(value) else f"{axis}={int(value)}"
            rows.append(_fit_row(variant, stage, "N", at, _points(chosen, "instances"), _points(by_n, "instances")))
    return pd.DataFrame(rows, columns=list(SCALING_COLUMNS))
