"""One check per finding of the BlendMask paper (bmbench.report.findings) that computes its verdict from our tables.

A check returns ``holds``, ``does not hold``, ``not significant at this budget`` (accuracy findings, whose
differences are compared with their spread over seeds: bmbench.report.accuracy) or ``not measured`` with the
numbers it used; nothing is hard-coded. The speed findings (5-7) live here, the accuracy ones in accuracy.py.
Each threshold below is a named constant with the reason for its value. Letters: N instances, K bases, M attention
side, R mask side; AP in points (0..100), times in ms.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bmbench.report.accuracy import (  # findings 1-4 and 8 (re-exported: claims.check_* is the public surface)
    AP_MARGIN,
    COLLAPSED_BASES_R,
    E2E_FASTER_BY,
    K1_USABLE_FRACTION,
    MIN_TRAINED_AP,
    PAPER_BEST,
    check_attention_side,
    check_best_cell,
    check_end_to_end,
    check_four_bases,
    check_single_base,
)
from bmbench.report.findings import FINDINGS
from bmbench.report.load import AblationSuite, Environment, SpeedRun
from bmbench.report.tables import latency_at
from bmbench.report.verdicts import FAILS, HOLDS, NOT_MEASURED, NOT_SIGNIFICANT, Check, Verdict
from bmbench.report.verdicts import holds as _holds

__all__ = [  # the checks and the vocabulary, wherever they are defined
    "AP_MARGIN",
    "COLLAPSED_BASES_R",
    "E2E_FASTER_BY",
    "FAILS",
    "HOLDS",
    "K1_USABLE_FRACTION",
    "MIN_TRAINED_AP",
    "NOT_MEASURED",
    "NOT_SIGNIFICANT",
    "PAPER_BEST",
    "Check",
    "Verdict",
    "check_attention_side",
    "check_best_cell",
    "check_end_to_end",
    "check_four_bases",
    "check_linear_in_n",
    "check_per_instance_cost",
    "check_quadratic_in_r",
    "check_single_base",
    "evaluate",
]

R_EXPONENT, R_TOLERANCE = 2.0, 0.3  # quadratic in R; ±0.3 is the acceptance band of the speed issue
N_EXPONENT, N_TOLERANCE = 1.0, 0.2  # linear in N; ±0.2 likewise
MIN_FIT_R2 = 0.9  # a fitted exponent describes the data only if the power law fits the points this well
PER_INSTANCE_RATIO_MAX = 0.5  # "far lower": BlendMask's ms per added instance under half of Mask R-CNN's
PER_INSTANCE_RANGE = (10, 100)  # per-instance slopes over N 10..100: above the fixed per-call overheads of small N


# --- speed findings, from one speed run ----------------------------------------------------------------------------


def _fit_text(fit: pd.Series) -> str:
    where = f"{fit['x']} {int(fit['x_min'])}..{int(fit['x_max'])}, {int(fit['points'])} points, {fit['at']}"
    return f"{fit['variant']} {fit['stage']} ∝ {fit['x']}^{fit['slope']:.2f} (R² {fit['r2']:.2f}; {where})"


def _exponent_check(fits: pd.DataFrame, target: float, tolerance: float, what: str) -> Check:
    judged = fits[fits["stage"] == "merge"]
    ok = bool(((judged["slope"] - target).abs() <= tolerance).all() and (judged["r2"] >= MIN_FIT_R2).all())
    shown = ", ".join(_fit_text(fit) for _, fit in fits.iterrows())
    rule = f"merge slope within {target:g} ± {tolerance:g} with R² ≥ {MIN_FIT_R2}"
    return _holds(ok, f"BlendMask {what}: {shown} (rule: {rule}; total includes per-image stages)")


def check_quadratic_in_r(scaling: pd.DataFrame) -> Check:
    """Finding 5: BlendMask's merge time fitted against R (at the largest N) has slope R_EXPONENT ± R_TOLERANCE."""
    fits = scaling[(scaling["family"] == "blendmask") & (scaling["x"] == "R")]
    if fits[fits["stage"] == "merge"].empty:
        return Check(NOT_MEASURED, "no R sweep of a BlendMask variant (run `bmbench speed --vary R`)")
    return _exponent_check(fits, R_EXPONENT, R_TOLERANCE, "time against R")


def check_linear_in_n(scaling: pd.DataFrame) -> Check:
    """Finding 6: BlendMask's merge time fitted against N (at its own spec) has slope N_EXPONENT ± N_TOLERANCE."""
    fits = scaling[(scaling["family"] == "blendmask") & (scaling["x"] == "N")]
    if "own" in fits and fits["own"].any():
        fits = fits[fits["own"].astype(bool)]
    if fits[fits["stage"] == "merge"].empty:
        return Check(NOT_MEASURED, "no BlendMask times at two or more instance counts")
    return _exponent_check(fits, N_EXPONENT, N_TOLERANCE, "time against N")


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


def _scaling_with_own(run: SpeedRun) -> pd.DataFrame:
    """The run's fits, with ``own`` True for N fits at the variant's own spec."""
    own = run.own_rows().drop_duplicates("variant").set_index("variant")
    labels = {
        variant: ("own" if pd.isna(row["axis_value"]) or not row["axis_applies"] else f"{run.axis}={row['axis_value']}")
        for variant, row in own.iterrows()
    }
    fits = run.scaling.copy()
    fits["own"] = (fits["x"] == "N") & ((fits["at"] == "own") | (fits["at"] == fits["variant"].map(labels)))
    return fits


def _suite_times(suite: AblationSuite) -> tuple[pd.DataFrame, str]:
    """The suite cells' times in the shape check_per_instance_cost reads, and their stage: ``merge`` when the
    summary has merge_ms_n{N} columns, else ``total`` (mask_ms_n{N}). The paper's cell stands for BlendMask when
    present, else every BlendMask cell is judged."""
    stage, part = ("merge", "merge") if suite.per_n("merge") else ("total", "mask")
    cells = suite.cells()
    rows = [
        {"variant": cell["spec"], "family": cell["family"], "instances": n, "stage": stage, "median_ms": cell[col]}
        for _, cell in cells.iterrows()
        for n, col in suite.per_n(part).items()
        if not pd.isna(cell[col])
    ]
    frame = pd.DataFrame(rows, columns=["variant", "family", "instances", "stage", "median_ms"])
    blend = frame[frame["family"] == "blendmask"]
    paper = cells[(cells["family"] == "blendmask") & (cells["K"] == 4) & (cells["M"] == 7) & (cells["R"] == 56)]
    if len(paper):
        frame = pd.concat([frame[frame["family"] != "blendmask"], blend[blend["variant"] == paper["spec"].iloc[0]]])
    return frame, stage


def evaluate_environment(env: Environment) -> list[Verdict]:
    """Every check that the environment's runs and suites allow, each with its scope."""
    found: list[Verdict] = []

    def add(finding: int, check: Check, scope: str) -> None:
        found.append(Verdict(FINDINGS[finding - 1], check.verdict, check.evidence, scope, env.label))

    for suite in env.suites:
        runs, scope = suite.runs(), f"ablate `{suite.name}`"  # one row per spec and seed
        latency = latency_at(suite)
        add(1, check_single_base(runs), scope)
        add(2, check_four_bases(runs, latency[1] if latency else None), scope)
        add(3, check_best_cell(runs), scope)
        add(4, check_attention_side(runs), scope)
    for run in env.speed_runs:
        scope, scaling = f"speed `{run.name}`", _scaling_with_own(run)
        if scaling.empty:
            absent = Check(NOT_MEASURED, "the run has no scaling fits (scaling.csv absent: an unfinished run?)")
            add(5, absent, scope)
            add(6, absent, scope)
        else:
            add(5, check_quadratic_in_r(scaling), scope)
            add(6, check_linear_in_n(scaling), scope)
        add(7, check_per_instance_cost(run.own_rows()), scope)
    if not any(v.finding.id == 7 and v.verdict != NOT_MEASURED for v in found):
        for suite in env.suites:
            times, stage = _suite_times(suite)
            add(7, check_per_instance_cost(times, stage), f"ablate `{suite.name}` ({stage} times of its cells)")
    wholes = [(f"speed `{run.name}`", run.own_rows()) for run in env.speed_runs] or [("no speed run", None)]
    suites = [(f"ablate `{suite.name}`", suite.runs()) for suite in env.suites] or [("no ablation", None)]
    for time_scope, whole in wholes:
        for ap_scope, runs in suites:
            add(8, check_end_to_end(whole, runs), f"{time_scope} + {ap_scope}")
    return found


def evaluate(environments: list[Environment]) -> list[Verdict]:
    """Verdicts for every finding, in finding order. Where some scope measured a finding, its not-measured verdicts
    elsewhere are dropped; a finding nothing measured keeps one not-measured verdict per distinct reason."""
    verdicts = [v for env in environments for v in evaluate_environment(env)]
    kept: list[Verdict] = []
    for finding in FINDINGS:
        mine = [v for v in verdicts if v.finding.id == finding.id]
        measured = [v for v in mine if v.verdict != NOT_MEASURED]
        if measured:
            kept += measured
        elif mine:
            kept += list({v.evidence: v for v in mine}.values())
        else:
            kept.append(Verdict(finding, NOT_MEASURED, f"nothing here measures it; it needs {finding.needs}", "–", "–"))
    return kept
