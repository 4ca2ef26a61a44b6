"""One check per finding of the BlendMask paper (bmbench.report.findings) that computes its verdict from our tables.

A check returns ``holds``, ``does not hold`` or ``not measured`` with the numbers it used; nothing is hard-coded.
Each threshold below is a named constant with the reason for its value. Letters: N instances, K bases, M attention
side, R mask side; AP in points (0..100), times in ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bmbench.report.findings import FINDINGS, Finding
from bmbench.report.load import BASES_CORR_COLUMN, END_TO_END, TOUCHING_AP_COLUMNS, AblationSuite, Environment, SpeedRun
from bmbench.report.tables import latency_at, pareto_front, spec_label

HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured"

AP_MARGIN = 0.5  # AP points: a smaller difference is within the seed-to-seed spread of a short training run
MIN_TRAINED_AP = 5.0  # AP points: below this the models learned too little for accuracy comparisons to mean anything
COLLAPSED_BASES_R = 0.95  # bases_corr at or above: the K bases are one map, so K and M cannot change the masks
K1_USABLE_FRACTION = 0.8  # "usable": K=1 keeps >= 80 % of the best multi-base cell's AP (degraded, not collapsed)
PAPER_BEST = {"R": 56, "K": 4, "M": 7}  # the paper's best grid point (finding 3)
R_EXPONENT, R_TOLERANCE = 2.0, 0.3  # quadratic in R; ±0.3 is the acceptance band of the speed issue
N_EXPONENT, N_TOLERANCE = 1.0, 0.2  # linear in N; ±0.2 likewise
MIN_FIT_R2 = 0.9  # a fitted exponent describes the data only if the power law fits the points this well
PER_INSTANCE_RATIO_MAX = 0.5  # "far lower": BlendMask's ms per added instance under half of Mask R-CNN's
PER_INSTANCE_RANGE = (10, 100)  # per-instance slopes over N 10..100: above the fixed per-call overheads of small N
E2E_FASTER_BY = 0.05  # "faster": end to end >= 5 % below Mask R-CNN, beyond the 5 % spread of repeated medians


@dataclass(frozen=True)
class Check:
    verdict: str  # HOLDS, FAILS or NOT_MEASURED
    evidence: str  # the numbers behind it, in one or two sentences


@dataclass(frozen=True)
class Verdict:
    finding: Finding
    verdict: str
    evidence: str
    scope: str  # the run(s) or suite(s) it was computed from
    environment: str  # device · dtype


def _holds(ok: bool, evidence: str) -> Check:
    return Check(HOLDS if ok else FAILS, evidence)


def _blend(cells: pd.DataFrame) -> pd.DataFrame:
    if cells.empty or "mask_AP" not in cells:
        return cells.iloc[0:0]
    return cells[(cells["family"] == "blendmask") & cells["mask_AP"].notna()]


def _not_comparable(cells: pd.DataFrame) -> Check | None:
    """Not measured when the models learned too little, or when the K>1 bases collapsed into one map (then the
    attention's softmax over identical bases returns that map whatever K and M are: no K or M comparison holds)."""
    best = cells["mask_AP"].max()
    if best < MIN_TRAINED_AP:
        return Check(
            NOT_MEASURED,
            f"the best cell reaches only {best:.1f} mask AP (< {MIN_TRAINED_AP}): too little "
            "training to compare accuracy; run a longer suite",
        )
    corr = cells[cells["K"] > 1][BASES_CORR_COLUMN].dropna() if BASES_CORR_COLUMN in cells else pd.Series([])
    if len(corr) and corr.median() >= COLLAPSED_BASES_R:
        return Check(
            NOT_MEASURED,
            f"the K>1 cells' bases collapsed into one map (median bases r {corr.median():.2f} ≥ "
            f"{COLLAPSED_BASES_R}): K and M cannot change the masks; train longer or jointly",
        )
    return None


def _cell(row: pd.Series) -> str:
    return f"{spec_label(row)} ({row['mask_AP']:.1f} AP)"


# --- accuracy findings, from one suite's cells (metrics averaged over seeds) --------------------------------------


def check_single_base(cells: pd.DataFrame) -> Check:
    """Finding 1: the best K=1 cell keeps at least K1_USABLE_FRACTION of the best K>1 cell's mask AP."""
    blend = _blend(cells)
    single, multi = blend[blend["K"] == 1], blend[blend["K"] > 1]
    if single.empty or multi.empty:
        return Check(NOT_MEASURED, "needs BlendMask cells with K=1 and with K>1")
    if (weak := _not_comparable(blend)) is not None:
        return weak
    one, best = single.loc[single["mask_AP"].idxmax()], multi.loc[multi["mask_AP"].idxmax()]
    ratio = one["mask_AP"] / best["mask_AP"]
    return _holds(
        ratio >= K1_USABLE_FRACTION,
        f"best K=1 cell {_cell(one)} reaches {ratio:.0%} of the best K>1 cell {_cell(best)}; "
        f"usable means at least {K1_USABLE_FRACTION:.0%}",
    )


def _matched(blend: pd.DataFrame, axis: str, value: int, other: int, latency: str | None) -> pd.DataFrame:
    keys = [k for k in ("R", "K", "M") if k != axis]
    columns = keys + ["mask_AP"] + ([latency] if latency else [])
    here = blend[blend[axis] == value][columns]
    there = blend[blend[axis] == other][columns]
    return here.merge(there, on=keys, suffixes=("", "_other"))


def check_four_bases(cells: pd.DataFrame, latency: str | None = None) -> Check:
    """Finding 2: at matched R and M, K=4 gains at least AP_MARGIN over each smaller K, each larger K gains less
    than AP_MARGIN over K=4, and (with times) some K=4 cell is on the AP-vs-ms Pareto front of the grid."""
    blend = _blend(cells)
    if blend.empty or not (blend["K"] == 4).any():
        return Check(NOT_MEASURED, "needs BlendMask cells with K=4")
    parts, ok = [], True
    for other in sorted(set(blend["K"].dropna().astype(int)) - {4}):
        pairs = _matched(blend, "K", 4, other, latency)
        if pairs.empty:
            continue
        gain = float((pairs["mask_AP"] - pairs["mask_AP_other"]).mean())  # K=4 minus K=other
        if other < 4:
            ok &= gain >= AP_MARGIN
            text = f"K=4 vs K={other}: {gain:+.1f} AP"
        else:
            ok &= -gain < AP_MARGIN
            text = f"K={other} vs K=4: {-gain:+.1f} AP"
        if latency:
            text += f", ms ×{float((pairs[latency + '_other'] / pairs[latency]).mean()):.2f} vs K=4"
        parts.append(f"{text} ({len(pairs)} matched R/M)")
    if not parts:
        return Check(NOT_MEASURED, "no other K measured at the same R and M as K=4")
    if (weak := _not_comparable(blend)) is not None:
        return weak
    if latency and blend[latency].notna().any():
        on_front = pareto_front(blend["mask_AP"], blend[latency]) & (blend["K"] == 4)
        ok &= bool(on_front.any())
        parts.append(f"K=4 on the AP-vs-ms Pareto front: {'yes' if on_front.any() else 'no'}")
    if blend["K"].max() <= 4:
        parts.append("no K > 4 measured, so whether more bases pay off is untested")
    rule = f"rule: fewer bases lose ≥ {AP_MARGIN} AP, more bases gain < {AP_MARGIN} AP"
    return _holds(ok, "; ".join(parts) + f" ({rule})")


def check_best_cell(cells: pd.DataFrame) -> Check:
    """Finding 3: the R=56, K=4, M=7 cell is the most accurate, or within AP_MARGIN of the most accurate."""
    blend = _blend(cells)
    paper = blend[(blend["R"] == PAPER_BEST["R"]) & (blend["K"] == PAPER_BEST["K"]) & (blend["M"] == PAPER_BEST["M"])]
    if paper.empty or len(blend) < 3:
        return Check(NOT_MEASURED, "needs the R=56, K=4, M=7 cell in a grid of at least 3 BlendMask cells")
    if (weak := _not_comparable(blend)) is not None:
        return weak
    best, ours = blend.loc[blend["mask_AP"].idxmax()], paper.iloc[0]
    rank = int((blend["mask_AP"] > ours["mask_AP"]).sum()) + 1
    return _holds(
        ours["mask_AP"] >= best["mask_AP"] - AP_MARGIN,
        f"most accurate cell {_cell(best)}; R=56 K=4 M=7 has {ours['mask_AP']:.1f} AP, rank {rank} of {len(blend)} "
        f"(a tie within {AP_MARGIN} AP counts)",
    )


def _m1_gain(blend: pd.DataFrame, column: str) -> tuple[float, int]:
    """Mean over matched (R, K) of (best M>1) minus M=1, and how many (R, K) were matched."""
    gains = []
    for _, group in blend.dropna(subset=[column]).groupby(["R", "K"]):
        one, more = group[group["M"] == 1], group[group["M"] > 1]
        if len(one) and len(more):
            gains.append(float(more[column].max() - one[column].iloc[0]))
    return (float(np.mean(gains)), len(gains)) if gains else (math.nan, 0)


def check_attention_side(cells: pd.DataFrame) -> Check:
    """Finding 4: at matched R and K, M=1 loses at least AP_MARGIN to the best M>1; where a touching-instances AP
    is measured, the loss must be larger there."""
    blend = _blend(cells)
    gain, pairs = _m1_gain(blend, "mask_AP")
    if not pairs:
        return Check(NOT_MEASURED, "needs BlendMask cells with M=1 and M>1 at the same R and K")
    if (weak := _not_comparable(blend)) is not None:
        return weak
    ok = gain >= AP_MARGIN
    parts = [f"M=1 loses {gain:.1f} AP to the best M>1 (mean of {pairs} matched R/K; needs ≥ {AP_MARGIN})"]
    touching = next((c for c in TOUCHING_AP_COLUMNS if c in blend and blend[c].notna().any()), None)
    if touching:
        touch_gain, _ = _m1_gain(blend, touching)
        ok &= touch_gain > gain
        parts.append(f"on touching/overlapping instances ({touching}) it loses {touch_gain:.1f} AP")
    else:
        parts.append("the touching-instances part is not measured (no per-subset AP in the summary)")
    sevens, fourteens = blend[blend["M"] == 7], blend[blend["M"] == 14]
    if len(sevens) and len(fourteens):
        parts.append(f"M=14 vs M=7: {fourteens['mask_AP'].mean() - sevens['mask_AP'].mean():+.1f} AP on average")
    return _holds(ok, "; ".join(parts))


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


def _pick(frame: pd.DataFrame, family: str, prefer: dict[str, int], by: str) -> pd.Series | None:
    rows = frame[frame["family"] == family]
    if rows.empty:
        return None
    preferred = rows
    for key, value in prefer.items():
        preferred = preferred[preferred[key] == value] if key in preferred else preferred.iloc[0:0]
    chosen = preferred if len(preferred) else rows
    return chosen.loc[chosen[by].idxmax()] if by in chosen and chosen[by].notna().any() else chosen.iloc[0]


def check_end_to_end(whole: pd.DataFrame | None, cells: pd.DataFrame | None) -> Check:
    """Finding 8: BlendMask's whole model at least E2E_FASTER_BY faster than Mask R-CNN's, at a mask AP no more
    than AP_MARGIN below. ``whole``: end-to-end rows at each variant's own spec; ``cells``: a suite's cells."""
    parts, time_ok, ap_ok = [], None, None
    if whole is not None and not whole.empty:
        rows = whole[whole["stage"] == END_TO_END]
        ours, theirs = _pick(rows, "blendmask", PAPER_BEST, "instances"), _pick(rows, "maskrcnn", {}, "instances")
        if ours is not None and theirs is not None:
            faster = 1 - ours["median_ms"] / theirs["median_ms"]
            time_ok = faster >= E2E_FASTER_BY
            parts.append(
                f"end to end: {ours['variant']} {ours['median_ms']:.1f} ms vs {theirs['variant']} "
                f"{theirs['median_ms']:.1f} ms at N={int(ours['instances'])}, {faster:+.0%} faster "
                f"(needs ≥ {E2E_FASTER_BY:.0%}; AdelaiDet: 73 vs 80 ms)"
            )
    blend = _blend(cells) if cells is not None else None
    if cells is not None and blend is not None and not blend.empty and (cells["family"] == "maskrcnn").any():
        ours, theirs = _pick(blend, "blendmask", PAPER_BEST, "mask_AP"), _pick(cells, "maskrcnn", {}, "mask_AP")
        if theirs is not None and not pd.isna(theirs["mask_AP"]):
            ap_ok = ours["mask_AP"] >= theirs["mask_AP"] - AP_MARGIN
            parts.append(
                f"mask AP: BlendMask {spec_label(ours)} {ours['mask_AP']:.1f} vs Mask R-CNN {theirs['mask_AP']:.1f} "
                f"(needs ≥ Mask R-CNN − {AP_MARGIN}; AdelaiDet: 35.8 vs 35.2)"
            )
            if max(ours["mask_AP"], theirs["mask_AP"]) < MIN_TRAINED_AP:
                ap_ok = None
                parts.append(f"both below {MIN_TRAINED_AP} AP: too little training to compare")
    if time_ok is None or ap_ok is None:
        missing = [what for what, ok in (("end-to-end times", time_ok), ("a comparable mask AP", ap_ok)) if ok is None]
        return Check(NOT_MEASURED, "; ".join([*parts, f"missing: {' and '.join(missing)} of both models"]))
    return _holds(bool(time_ok and ap_ok), "; ".join(parts))


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
        cells, scope = suite.cells(), f"ablate `{suite.name}`"
        latency = latency_at(suite)
        add(1, check_single_base(cells), scope)
        add(2, check_four_bases(cells, latency[1] if latency else None), scope)
        add(3, check_best_cell(cells), scope)
        add(4, check_attention_side(cells), scope)
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
    suites = [(f"ablate `{suite.name}`", suite.cells()) for suite in env.suites] or [("no ablation", None)]
    for time_scope, whole in wholes:
        for ap_scope, cells in suites:
            add(8, check_end_to_end(whole, cells), f"{time_scope} + {ap_scope}")
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
