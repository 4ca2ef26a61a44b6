"""Every blender formulation equals ours; the checks run and report ratios and bandwidths."""

from __future__ import annotations

import pytest
import torch

from bmbench.bench.checks import run_checks
from bmbench.bench.formulations import FORMULATIONS
from bmbench.bench.options import make_config
from bmbench.models.heads.blendmask import blend


@pytest.mark.parametrize(("K", "M", "R"), [(4, 7, 56), (2, 1, 8), (1, 3, 5), (3, 14, 14)])
@pytest.mark.parametrize("name", [name for name in FORMULATIONS if name != "blender"])
def test_formulation_equals_the_blender(name: str, K: int, M: int, R: int) -> None:
    bases = torch.randn(2, K, 24, 32)
    attentions = torch.randn(6, K * M * M) * 3
    xy = torch.rand(6, 2) * torch.tensor([80.0, 60.0])
    wh = torch.rand(6, 2) * 40 + 1
    rois = torch.cat((torch.tensor([0, 1, 0, 1, 1, 0.0])[:, None], xy, xy + wh), dim=1)
    with torch.inference_mode():
        expected = blend(bases, attentions, rois, M=M, R=R)
        got = FORMULATIONS[name](bases, attentions.clone(), rois, M=M, R=R)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_checks_report_formulations_bandwidth_and_repeatability(monkeypatch: pytest.MonkeyPatch) -> None:
    import bmbench.bench.checks as checks

    monkeypatch.setattr(checks, "COPY_MIB", 4)
    config = make_config(
        variants="blendmask,maskrcnn:R=8",
        instances="3",
        image_size="64x64",
        device="cpu",
        budget_s=0.005,
        trunk="small",
        threads=1,
    )
    # compile is exercised by `bmbench speed --check`; here it would cost a C++ build.
    monkeypatch.setattr(checks, "formulation_rows", _without_compile(checks.formulation_rows))
    run = run_checks(config)
    formulations = run.formulations.set_index("formulation")
    assert set(FORMULATIONS) <= set(formulations.index)
    assert formulations["equivalent"].all() and (formulations["status"] == "ok").all()
    assert formulations.loc["blender", "ratio_to_blender"] == pytest.approx(1.0)
    assert (formulations[["K", "M", "R"]].iloc[0].tolist()) == [4, 7, 56]
    what = run.bandwidth["what"].tolist()
    assert what[:2] == ["copy (clone, 4 MiB)", "copy (copy_, 4 MiB)"]
    assert {"blendmask merge N=3", "maskrcnn:R=8 merge N=3"} <= set(what)
    assert (run.bandwidth["gb_per_s"] > 0).all()
    repeat = run.repeatability
    assert set(repeat["stage"]) == {"bottom", "top", "merge", "paste", "total"}
    assert {"round1_ms", "round2_ms", "relative_spread", "within_5pct"} <= set(repeat.columns)


def _without_compile(rows):  # noqa: ANN001, ANN202
    return lambda workload, timer, compile=True: rows(workload, timer, compile=False)
