"""The verdict vocabulary shared by every finding's check (bmbench.report.claims, bmbench.report.accuracy)."""

from __future__ import annotations

from dataclasses import dataclass

from bmbench.report.findings import Finding

HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured"
NOT_SIGNIFICANT = "not significant at this budget"  # measured, but a difference it rests on is inside the spread
UNSTABLE = "unstable here"  # runs of the same sweep on this machine gave different verdicts


@dataclass(frozen=True)
class Check:
    verdict: str  # HOLDS, FAILS, NOT_SIGNIFICANT or NOT_MEASURED
    evidence: str  # the numbers behind it, in one or two sentences


@dataclass(frozen=True)
class Verdict:
    finding: Finding
    verdict: str
    evidence: str
    scope: str  # the run(s) or suite(s) it was computed from
    environment: str  # device · dtype


def holds(ok: bool, evidence: str) -> Check:
    return Check(HOLDS if ok else FAILS, evidence)
