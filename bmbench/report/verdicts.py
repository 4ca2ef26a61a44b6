"""What every finding's check returns (bmbench.report.claims, bmbench.report.accuracy), in the verdict words that
bmbench.schema declares (imported here so that the checks name them in one place)."""

from __future__ import annotations

from dataclasses import dataclass

from bmbench.report.findings import Finding
from bmbench.schema import FAILS, HOLDS, NOT_MEASURED, NOT_SIGNIFICANT, UNSTABLE  # noqa: F401 - the vocabulary


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
