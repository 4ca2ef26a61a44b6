"""Findings 5, 6 and 7 of the BlendMask paper (bmbench.report.findings), judged on one speed run's own tables.

A check returns ``holds``, ``does not hold``, ``not significant at this budget``, ``unstable here`` (several runs of
one sweep disagree) or ``not measured``, with the numbers it used; nothing is hard-coded. Each threshold below is a
named constant with the reason for its value. The accuracy findings are judged in accuracy_findings.py, and
judge.py gathers both. Letters: N instances, K bases, M attention side, R mask side; times in ms.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bmbench.report.findings import FAILS, HOLDS, NOT_MEASURED, NOT_SIGNIFICANT, UNSTABLE, Check
from bmbench.report.findings import holds as _holds
from bmbench.report.load import StoredSpeedRun
from bmbench.schema import judged_exponent

# Finding 5, "quadratic in R": the per-instance cost model's exponent p within ±0.3 of 2 (the band of the speed
# issue) and its 95 % interval inside ±0.5 of 2, so that a linear-ish (≤ 1.5) or cubic-ish (≥ 2.5) growth is
# excluded by the data. An interval that misses the band entirely contradicts the finding; anything in between is
# not significant (the repeats were too noisy or the range too short to tell).
R_EXPONENT = 2.0
R_BAND = (1.7, 2.3)
R_INTERVAL_BAND = (1.5, 2.5)
# Finding 6, "linear in N": p within ±0.2 of 1 and its interval inside ±0.4 (halfway to N^0.5 and to N^1.5).
N_EXPONENT = 1.0
N_BAND = (0.8, 1.2)
N_INTERVAL_BAND = (0.6, 1.4)
# The stages whose work is per instance: where the claims about R and N live. Bottom and top run once per image;
# their fixed cost is what made power laws fitted to totals read exponents near 0.
PER_INSTANCE_STAGES = ("merge", "paste")
PER_INSTANCE_RATIO_MAX = 0.5  # "far lower": BlendMask's ms per added instance under half of Mask R-CNN's
PER_INSTANCE_RANGE = (10, 100)  # per-instance slopes over N 10..100: above the fixed per-call overheads of small N


# --- speed findings, from one speed run ----------------------------------------------------------------------------


def _fit_text(fit: pd.Series) -> str:
    where = f"{fit['x']} {int(fit['x_min'])}..{int(fit['x_max'])}, {int(fit['points'])} points, {fit['at']}"
    return f"{fit['variant']} {fit['stage']} ∝ {fit['x']}^{fit['slope']:.2f} (R² {fit['r2']:.2f}; {where})"


def _growth(fit: pd.Series) -> float:
    """The cost model's rise over the fitted range, ms: b·(x_max^p - x_min^p)."""
    if pd.isna(fit.get("p")) or pd.isna(fit.get("b")):
        return 0.0
    return float(fit["b"] * (fit["x_max"] ** fit["p"] - fit["x_min"] ** fit["p"]))


def _cost_text(fit: pd.Series, share: float) -> str:
    if pd.isna(fit.get("p")):
        return f"{fit['stage']}: no growth over {fit['x']} {int(fit['x_min'])}..{int(fit['x_max'])}"
    cycle_fits = []
    if not pd.isna(fit.get("p_floor")):
        cycle_fits.append(
            f"floor p {fit['p_floor']:.2f} (95 % interval {fit['p_floor_low']:.2f}..{fit['p_floor_high']:.2f})"
        )
    if not pd.isna(fit.get("p_paired")):
        cycle_fits.append(
            f"paired p {fit['p_paired']:.2f} (95 % interval {fit['p_paired_low']:.2f}..{fit['p_paired_high']:.2f}, "
            f"{int(fit['cycles_paired'])} cycles)"
        )
    paired = "; ".join(cycle_fits) + "; pooled " if cycle_fits else ""
    return (
        f"{fit['stage']}: {paired}{fit['a_ms']:.3g} ms fixed + {fit['b']:.3g}·{fit['x']}^{fit['p']:.2f} "
        f"(p 95 % interval {fit['p_low']:.2f}..{fit['p_high']:.2f}, fit R² {fit['fit_r2']:.3f}), "
        f"{share:.0%} of the per-instance growth"
    )


def judged_fit(fit: pd.Series) -> pd.Series:
    """The fit a verdict reads (schema.judged_exponent): the floor fit where the run has one (each point's
    fastest call, which load on the machine cannot raise), else the paired fit (within cycles, which drift over the
    run cannot bend), else the pooled cost model's."""
    p, low, high, name = judged_exponent(fit)
    if name == "pooled":
        return fit
    judged = fit.copy()
    judged["p"], judged["p_low"], judged["p_high"] = p, low, high
    return judged


def judge_exponent(fit: pd.Series, band: tuple[float, float], interval_band: tuple[float, float]) -> str:
    """HOLDS when p lies in ``band`` and its interval inside ``interval_band``; FAILS when the whole interval lies
    outside ``band``; NOT_SIGNIFICANT otherwise (too wide an interval to tell)."""
    p, low, high = fit.get("p"), fit.get("p_low"), fit.get("p_high")
    if pd.isna(p) or pd.isna(low) or pd.isna(high):
        return FAILS if pd.isna(p) and not pd.isna(fit.get("a_ms")) else NOT_MEASURED  # no growth at all: fails
    if band[0] <= p <= band[1] and interval_band[0] <= low and high <= interval_band[1]:
        return HOLDS
    if high < band[0] or low > band[1]:
        return FAILS
    return NOT_SIGNIFICANT


def _exponent_check(
    fits: pd.DataFrame, band: tuple[float, float], interval_band: tuple[float, float], what: str
) -> Check:
    """Judge the per-instance stage that carries the growth (the larger rise of its cost model over the range) and
    show every per-instance stage's fixed cost, exponent and interval, and the log-log slopes."""
    staged = fits[fits["stage"].isin(PER_INSTANCE_STAGES)]
    if "p" not in staged or staged["a_ms"].isna().all():
        return Check(NOT_MEASURED, f"BlendMask {what}: no cost model (fewer than 3 values, or an older scaling.csv)")
    staged = staged[staged["a_ms"].notna()]
    growth = {index: _growth(fit) for index, fit in staged.iterrows()}
    total = sum(growth.values())
    carrier = staged.loc[max(growth, key=growth.get)]
    verdict = judge_exponent(judged_fit(carrier), band, interval_band)
    costs = "; ".join(_cost_text(fit, growth[i] / total if total > 0 else 0.0) for i, fit in staged.iterrows())
    slopes = ", ".join(_fit_text(fit) for _, fit in fits.iterrows())
    rule = (
        f"the stage carrying the growth has p in [{band[0]:g}, {band[1]:g}] with its 95 % interval inside "
        f"[{interval_band[0]:g}, {interval_band[1]:g}]; an interval outside [{band[0]:g}, {band[1]:g}] contradicts"
    )
    evidence = (
        f"BlendMask {what} ({carrier['variant']}, {carrier['at']}): {carrier['stage']} carries the growth; {costs}. "
        f"Log-log slopes: {slopes} (rule: {rule})"
    )
    return Check(verdict, evidence)


def check_quadratic_in_r(scaling: pd.DataFrame) -> Check:
    """Finding 5: the cost model of BlendMask's per-instance stages against R (at the largest N): the stage that
    carries the growth has p in R_BAND with its interval inside R_INTERVAL_BAND."""
    fits = scaling[(scaling["family"] == "blendmask") & (scaling["x"] == "R")]
    if fits[fits["stage"] == "merge"].empty:
        return Check(NOT_MEASURED, "no R sweep of a BlendMask variant (run `bmbench speed --vary R`)")
    return _exponent_check(fits, R_BAND, R_INTERVAL_BAND, "time against R")


def check_linear_in_n(scaling: pd.DataFrame) -> Check:
    """Finding 6: the cost model of BlendMask's per-instance stages against N (at its own spec): the stage that
    carries the growth has p in N_BAND with its interval inside N_INTERVAL_BAND."""
    fits = scaling[(scaling["family"] == "blendmask") & (scaling["x"] == "N")]
    if "own" in fits and fits["own"].any():
        fits = fits[fits["own"].astype(bool)]
    if fits[fits["stage"] == "merge"].empty:
        return Check(NOT_MEASURED, "no BlendMask times at two or more instance counts")
    return _exponent_check(fits, N_BAND, N_INTERVAL_BAND, "time against N")


def per_instance_ms(times: pd.DataFrame) -> float:
    """The slope of a linear fit of ms against N over PER_INSTANCE_RANGE (all N when fewer than two are in it)."""
    low, high = PER_INSTANCE_RANGE
    inside = times[(times["instances"] >= low) & (times["instances"] <= high)]
    chosen = inside if inside["instances"].nunique() >= 2 else times
    if chosen["instances"].nunique() < 2:
        return math.nan
    return float(np.polyfit(chosen["instances"].astype(float), chosen["median_ms"].astype(float), 1)[0])


def check_per_instance_cost(times: pd.DataFrame, stage: str = "merge") -> Check:
    """Finding 7: BlendMask's ms per added instance in ``stage`` is below PER_INSTANCE_RATIO_MAX of Mask R-CNN's.
    ``times``: rows (variant, family, instances, stage, median_ms) at each variant's own spec."""
    rows = times[times["stage"] == stage]
    slopes = {
        (variant, family): per_instance_ms(group)
        for (variant, family), group in rows.groupby(["variant", "family"], sort=False)
    }
    blend = {v: s for (v, f), s in slopes.items() if f == "blendmask" and not math.isnan(s)}
    rcnn = {v: s for (v, f), s in slopes.items() if f == "maskrcnn" and not math.isnan(s)}
    if not blend or not rcnn:
        return Check(NOT_MEASURED, f"needs {stage} times of BlendMask and Mask R-CNN at two or more instance counts")
    reference_name, reference = next(iter(rcnn.items()))
    if reference <= 0:
        return Check(FAILS, f"{reference_name}'s {stage} time does not grow with N ({reference:.3f} ms per instance)")
    ratios = {name: slope / reference for name, slope in blend.items()}
    shown = ", ".join(f"{name} {blend[name]:.3f} ms (×{ratio:.2f})" for name, ratio in ratios.items())
    return _holds(
        all(ratio < PER_INSTANCE_RATIO_MAX for ratio in ratios.values()),
        f"{stage} ms per added instance: {shown} vs {reference_name} {reference:.3f} ms "
        f"(rule: ratio < {PER_INSTANCE_RATIO_MAX})",
    )


# --- evaluating every finding over every environment ----------------------------------------------------------------


def _scaling_with_own(run: StoredSpeedRun) -> pd.DataFrame:
    """The run's fits, with ``own`` True for N fits at the variant's own spec."""
    own = run.own_rows().drop_duplicates("variant").set_index("variant")
    labels = {
        variant: ("own" if pd.isna(row["axis_value"]) or not row["axis_applies"] else f"{run.axis}={row['axis_value']}")
        for variant, row in own.iterrows()
    }
    fits = run.scaling.copy()
    fits["own"] = (fits["x"] == "N") & ((fits["at"] == "own") | (fits["at"] == fits["variant"].map(labels)))
    return fits


def speed_checks(run: StoredSpeedRun) -> dict[int, Check]:
    """Findings 5, 6 and 7 judged on one speed run's own tables."""
    scaling = _scaling_with_own(run)
    if scaling.empty:
        absent = Check(NOT_MEASURED, "the run has no scaling fits (scaling.csv absent: an unfinished run?)")
        checks = {5: absent, 6: absent}
    else:
        checks = {5: check_quadratic_in_r(scaling), 6: check_linear_in_n(scaling)}
    return checks | {7: check_per_instance_cost(run.own_rows())}


def speed_verdicts(run: StoredSpeedRun) -> dict[int, str]:
    """Finding -> verdict, for findings 5-7 of one run (the console's per-run line of `bmbench speed --runs`)."""
    return {finding: check.verdict for finding, check in speed_checks(run).items()}


def stable_speed_checks(run: StoredSpeedRun) -> dict[int, Check]:
    """Findings 5-7 of a run and of its repeats (`bmbench speed --runs k`): the first run's check where every run
    gives the same verdict, else UNSTABLE, with each run's verdict: a verdict a second run of the same command does
    not repeat is not a finding of this machine."""
    first = speed_checks(run)
    later = [speed_checks(repeat) for repeat in run.repeats]
    checks: dict[int, Check] = {}
    for finding, check in first.items():
        seen = [check.verdict] + [other[finding].verdict for other in later]
        if len(set(seen)) == 1:
            checks[finding] = check
            continue
        each = "; ".join(f"run {index}: {verdict}" for index, verdict in enumerate(seen, start=1))
        checks[finding] = Check(
            UNSTABLE, f"{len(seen)} runs of the same sweep disagree ({each}). Run 1: {check.evidence}"
        )
    return checks
