"""Learning curves of an ablation suite (``curves.csv``: AP at 25, 50 and 100 % of each cell's schedule): a table of
each spec's AP along its schedule, and whether the specs rank the same at 50 % as at 100 % (Kendall's tau-b).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from bmbench.report.load import AblationSuite
from bmbench.report.stats import kendall_tau_b
from bmbench.report.tables import DASH, fmt_spread

CURVE_POINTS = (0.25, 0.5, 1.0)  # the schedule fractions each cell is evaluated at
RANKING_AT = (0.5, 1.0)  # the ranking of the specs is compared between these two fractions
FRACTION_TOLERANCE = 0.05  # a curve point counts as fraction f when within ±0.05 of it (steps round)


def _at_fraction(curves: pd.DataFrame, fraction: float) -> pd.DataFrame:
    return curves[(curves["fraction"] - fraction).abs() <= FRACTION_TOLERANCE]


def curve_table(suite: AblationSuite, metric: str = "mask_AP") -> pd.DataFrame:
    """Each spec's ``metric`` (mean ± std over seeds) at each of CURVE_POINTS of its schedule, with the steps."""
    curves = suite.curves
    if curves is None or curves.empty or metric not in curves:
        return pd.DataFrame()
    rows = {}
    for fraction in CURVE_POINTS:
        points = _at_fraction(curves, fraction)
        for spec, group in points.groupby("spec", sort=False):
            row = rows.setdefault(spec, {"spec": spec})
            steps = "/".join(str(int(s)) for s in sorted(group["step"].unique()))
            values = group[metric].dropna()
            row[f"{fraction:.0%} (step)"] = f"{fmt_spread(values.mean(), values.std(), len(values))} ({steps})"
    return pd.DataFrame(list(rows.values())).fillna(DASH)


@dataclass(frozen=True)
class Ranking:
    """Whether the specs rank the same early and at the end of their schedule."""

    tau: float  # Kendall's tau-b between the specs' mean AP at RANKING_AT[0] and at RANKING_AT[1]; NaN: < 2 specs
    specs: int  # specs measured at both fractions
    top_early: str  # the most accurate spec at RANKING_AT[0]
    top_late: str  # and at RANKING_AT[1]

    @property
    def same(self) -> bool:
        return not math.isnan(self.tau) and self.tau > 1 - 1e-9

    def text(self) -> str:
        early, late = (f"{f:.0%}" for f in RANKING_AT)
        if self.specs < 2 or math.isnan(self.tau):
            return f"the ranking at {early} and {late} cannot be compared: {self.specs} spec(s) measured at both"
        verdict = "the same" if self.same else "not the same"
        return (
            f"the ranking of the {self.specs} specs by mean mask AP at {early} and at {late} of the schedule is "
            f"{verdict} (Kendall's τ-b {self.tau:+.2f}; 1 is the same order); most accurate at {early}: "
            f"{self.top_early}, at {late}: {self.top_late}"
        )


def curve_ranking(suite: AblationSuite, metric: str = "mask_AP") -> Ranking | None:
    """The Ranking of the suite's specs between RANKING_AT[0] and RANKING_AT[1]; None without curves."""
    curves = suite.curves
    if curves is None or curves.empty:
        return None
    early, late = (_at_fraction(curves, f).groupby("spec")[metric].mean() for f in RANKING_AT)
    both = early.dropna().index.intersection(late.dropna().index)
    if len(both) == 0:
        return Ranking(math.nan, 0, DASH, DASH)
    tau = kendall_tau_b(early[both].to_numpy(), late[both].to_numpy()) if len(both) > 1 else math.nan
    return Ranking(tau, len(both), str(early[both].idxmax()), str(late[both].idxmax()))
