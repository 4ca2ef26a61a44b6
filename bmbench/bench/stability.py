"""What a second run of the same sweep repeats: the stability table (schema.STABILITY_COLUMNS).

Two runs agree on a point when their 95 % intervals overlap, in milliseconds and in ``ratio_to_ref`` (which
cancels what slowed the whole machine between the runs); the table gives the share of points that agree and the
median |difference| of their medians. Every fit present in both runs gets a row with both exponents (the fit a
verdict reads: floor, else paired, else pooled) and whether their intervals overlap. Whether the findings' verdicts
agree is the report's to say (bmbench.report.speed_findings judges each run; a verdict the runs disagree on
reads "unstable here").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bmbench.bench.paired import FIT_KEYS
from bmbench.schema import STABILITY_COLUMNS, judged_exponent

POINT_KEYS = ["variant", "spec", "instances", "stage"]
_MEASURES = {"points-ms": ("median_ms", "ci_low_ms", "ci_high_ms"), "points-ratio": ("ratio_to_ref",)}
_MEASURES["points-ratio"] += ("ratio_ci_low", "ratio_ci_high")


def overlaps(a_low: np.ndarray, a_high: np.ndarray, b_low: np.ndarray, b_high: np.ndarray) -> np.ndarray:
    """Elementwise: do the intervals [a_low, a_high] and [b_low, b_high] share a point."""
    return (np.asarray(a_low) <= np.asarray(b_high)) & (np.asarray(b_low) <= np.asarray(a_high))


def _point_row(kind: str, both: pd.DataFrame) -> dict[str, object]:
    median, low, high = _MEASURES[kind]
    usable = both.dropna(subset=[f"{c}_{side}" for c in (median, low, high) for side in ("a", "b")])
    if usable.empty:
        return {"kind": kind, "name": "every point", "points": 0}
    agree = overlaps(usable[f"{low}_a"], usable[f"{high}_a"], usable[f"{low}_b"], usable[f"{high}_b"])
    diff = (usable[f"{median}_b"] - usable[f"{median}_a"]).abs() / usable[f"{median}_a"]
    return {
        "kind": kind,
        "name": "every point",
        "agree": float(np.mean(agree)),
        "median_abs_diff_pct": float(100 * diff.median()),
        "points": len(usable),
    }


def _fit_value(fit: pd.Series) -> tuple[float, float, float]:
    """The fit's exponent and interval, as a verdict reads them (schema.judged_exponent)."""
    return judged_exponent(fit)[:3]


def stability_table(
    first: pd.DataFrame, second: pd.DataFrame, first_fits: pd.DataFrame, second_fits: pd.DataFrame
) -> pd.DataFrame:
    """Compare two runs' speed tables (schema.SPEED_COLUMNS) and scaling tables (schema.SCALING_COLUMNS)."""
    ok_a, ok_b = (frame[frame["status"] == "ok"] for frame in (first, second))
    columns = [c for measure in _MEASURES.values() for c in measure]
    both = ok_a[POINT_KEYS + columns].merge(ok_b[POINT_KEYS + columns], on=POINT_KEYS, suffixes=("_a", "_b"))
    rows: list[dict[str, object]] = [_point_row(kind, both) for kind in _MEASURES]
    fits = first_fits.merge(second_fits, on=list(FIT_KEYS), suffixes=("_a", "_b"))
    for _, fit in fits.iterrows():
        a = _fit_value(fit.rename(lambda c: c[:-2] if c.endswith("_a") else c))
        b = _fit_value(fit.rename(lambda c: c[:-2] if c.endswith("_b") else c))
        if any(pd.isna(v) for v in (*a, *b)):
            continue
        rows.append(
            {
                "kind": "exponent",
                "name": f"{fit['variant']} {fit['stage']} vs {fit['x']} at {fit['at']}",
                "first": a[0],
                "second": b[0],
                "first_low": a[1],
                "first_high": a[2],
                "second_low": b[1],
                "second_high": b[2],
                "agree": float(overlaps(a[1], a[2], b[1], b[2])),
                "points": 2,
            }
        )
    return pd.DataFrame(rows, columns=list(STABILITY_COLUMNS))
