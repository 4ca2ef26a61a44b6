"""The BlendMask paper's findings as data (each with its number in bmbench/report/paper/claims.md, its text, where it
is stated, and what measures it) and what judging one returns: a Check (verdict and evidence) and a Verdict (a check
with its finding, scope and environment), in the verdict words that bmbench.schema declares. speed_findings.py and
accuracy_findings.py judge them; judge.py gathers the verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass

from bmbench.schema import FAILS, HOLDS, NOT_MEASURED, NOT_SIGNIFICANT, UNSTABLE  # noqa: F401 - the vocabulary

ABLATION = "an ablation suite over K, M and R (`bmbench ablate suites/quick.yaml`)"
R_SWEEP = "a speed run sweeping R (`bmbench speed --vary R`)"
N_SWEEP = "a speed run at several instance counts (`bmbench speed --instances 1..100`)"
BOTH = "a speed run with end-to-end times and an ablation suite with BlendMask and Mask R-CNN cells"
PAPER_SOURCE = "BlendMask, Chen et al., CVPR 2020 (arXiv 2001.00309)"
ADELAIDET_SOURCE = "aim-uofa/AdelaiDet configs/BlendMask/README.md (R-50 1x, GTX 1080Ti)"


@dataclass(frozen=True)
class Finding:
    id: int  # its number in bmbench/report/paper/claims.md
    text: str  # the finding as the paper states it
    source: str  # where it is stated
    needs: str = ABLATION  # what measures it, for the message when nothing does


FINDINGS: tuple[Finding, ...] = (
    Finding(1, "BlendMask works with a single base: K=1 already gives usable masks.", PAPER_SOURCE),
    Finding(2, "K=4 bases give the best accuracy/speed trade-off.", PAPER_SOURCE),
    Finding(3, "The best model in the R × K × M grid is R=56, K=4, M=7.", PAPER_SOURCE),
    Finding(
        4,
        "M (attention side) is small, at most 14; M=1 is the YOLACT-like case and loses accuracy, most of all where "
        "instances of the same class touch or overlap.",
        PAPER_SOURCE,
    ),
    Finding(
        5,
        "Raising the mask resolution R raises the mask-branch cost quadratically (time ∝ R^2).",
        PAPER_SOURCE,
        R_SWEEP,
    ),
    Finding(6, "More instances raise the mask-branch cost linearly (time ∝ N).", PAPER_SOURCE, N_SWEEP),
    Finding(
        7,
        "Moving the computation before RoI sampling (bases for the whole image, one conv for attentions) makes the "
        "per-instance cost far lower than Mask R-CNN's RoI head, so BlendMask's mask branch grows much more slowly "
        "with N.",
        PAPER_SOURCE,
        N_SWEEP,
    ),
    Finding(
        8,
        "Overall, BlendMask R-50 is about 20 % faster than Mask R-CNN R-50 at equal or better mask AP (AdelaiDet: "
        "73 ms vs 80 ms, 35.8 vs 35.2 mask AP, 1x schedule, 1080Ti).",
        ADELAIDET_SOURCE,
        BOTH,
    ),
)


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
