"""Every finding's verdict over the environments found: the speed findings (speed_findings.py) on each speed run,
the accuracy findings (accuracy_findings.py) on each ablation suite, finding 7 from a suite's own times where no
speed run measures it, and finding 8 on each pairing of a speed run with a suite.
"""

from __future__ import annotations

import pandas as pd

from bmbench.report.accuracy_findings import (
    bases_note,
    check_attention_side,
    check_best_cell,
    check_end_to_end,
    check_four_bases,
    check_single_base,
)
from bmbench.report.findings import FINDINGS, NOT_MEASURED, Check, Verdict
from bmbench.report.load import AblationSuite, Environment
from bmbench.report.speed_findings import check_per_instance_cost, stable_speed_checks
from bmbench.report.tables import latency_at


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
        add(1, bases_note(check_single_base(runs), runs), scope)
        add(2, bases_note(check_four_bases(runs, latency[1] if latency else None), runs), scope)
        add(3, bases_note(check_best_cell(runs), runs), scope)
        add(4, bases_note(check_attention_side(runs), runs), scope)
    for run in env.speed_runs:
        scope = f"speed `{run.name}`" + (f" ({1 + len(run.repeats)} runs)" if run.repeats else "")
        for finding, check in stable_speed_checks(run).items():
            add(finding, check, scope)
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


def judge_findings(environments: list[Environment]) -> list[Verdict]:
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
