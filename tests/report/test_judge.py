"""Each finding's check on made-up tables: the verdict flips when the numbers do."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import suite_frame, write_results, write_speed_run, write_suite

from bmbench.report import accuracy_findings, findings, judge, speed_findings
from bmbench.report.findings import FAILS, HOLDS, NOT_MEASURED
from bmbench.report.load import AblationSuite, load_ablation, load_results, load_speed_run


def cells_of(frame: pd.DataFrame, tmp_path: Path) -> pd.DataFrame:
    """The rows the accuracy checks read: one per spec and seed, AP in points."""
    return load_ablation(write_suite(tmp_path / "suite", frame)).runs()


def with_ap(frame: pd.DataFrame, where: pd.Series, ap: float) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[where, "mask_AP"] = ap / 100  # the summary stores COCOeval's 0..1
    return frame


@pytest.fixture()
def base() -> pd.DataFrame:
    return suite_frame()


def test_findings_match_the_shipped_paper_text() -> None:
    text = (resources.files("bmbench.report") / "paper" / "claims.md").read_text(encoding="utf-8")
    items = re.findall(r"^(\d)\. (.+?)(?=^\d\. |^\s*$)", text, flags=re.M | re.S)
    assert [int(number) for number, _ in items] == [f.id for f in findings.FINDINGS] == list(range(1, 9))
    for (_, body), finding in zip(items, findings.FINDINGS, strict=True):
        assert " ".join(body.split()) == finding.text


def test_single_base_flips(base: pd.DataFrame, tmp_path: Path) -> None:
    assert accuracy_findings.check_single_base(cells_of(base, tmp_path)).verdict == HOLDS
    weak = with_ap(base, base["K"].eq(1).fillna(False), 12.0)
    check = accuracy_findings.check_single_base(cells_of(weak, tmp_path))
    assert check.verdict == FAILS and "12.0 AP" in check.evidence
    assert accuracy_findings.check_single_base(cells_of(base[base["K"] != 1], tmp_path)).verdict == NOT_MEASURED


def test_four_bases_flips(base: pd.DataFrame, tmp_path: Path) -> None:
    cells = cells_of(base, tmp_path)
    assert accuracy_findings.check_four_bases(cells, "mask_ms_n100").verdict == HOLDS
    eight_better = with_ap(base, base["K"].eq(8).fillna(False), 40.0)
    assert accuracy_findings.check_four_bases(cells_of(eight_better, tmp_path), "mask_ms_n100").verdict == FAILS
    one_as_good = base.copy()
    one_as_good.loc[one_as_good["K"].eq(1).fillna(False), "mask_AP"] = 0.35
    one_as_good.loc[one_as_good["K"].eq(4).fillna(False), "mask_AP"] = 0.35
    assert accuracy_findings.check_four_bases(cells_of(one_as_good, tmp_path)).verdict == FAILS
    assert accuracy_findings.check_four_bases(cells_of(base[base["K"] != 4], tmp_path)).verdict == NOT_MEASURED


def test_best_cell_flips(base: pd.DataFrame, tmp_path: Path) -> None:
    assert accuracy_findings.check_best_cell(cells_of(base, tmp_path)).verdict == HOLDS
    other = base["K"].eq(2).fillna(False) & base["M"].eq(1).fillna(False) & base["R"].eq(28).fillna(False)
    check = accuracy_findings.check_best_cell(cells_of(with_ap(base, other, 45.0), tmp_path))
    assert check.verdict == FAILS and "K=2 M=1 R=28 (45.0 AP)" in check.evidence


def test_attention_side_flips(base: pd.DataFrame, tmp_path: Path) -> None:
    assert accuracy_findings.check_attention_side(cells_of(base, tmp_path)).verdict == HOLDS
    flat, blend = base.copy(), base["family"].eq("blendmask")
    flat.loc[blend & base["M"].eq(1), "mask_AP"] = flat.loc[blend & base["M"].eq(7), "mask_AP"].to_numpy()
    assert accuracy_findings.check_attention_side(cells_of(flat, tmp_path)).verdict == FAILS


def test_attention_side_uses_the_touching_subset_when_measured(base: pd.DataFrame, tmp_path: Path) -> None:
    m1 = base["family"].eq("blendmask") & base["M"].eq(1)
    larger = base.assign(mask_AP_touching=base["mask_AP"] - m1 * 0.05)  # M=1 loses 5 more points on touching
    check = accuracy_findings.check_attention_side(cells_of(larger, tmp_path))
    assert check.verdict == HOLDS and "mask_AP_touching" in check.evidence
    smaller = base.assign(mask_AP_touching=base["mask_AP"] + m1 * 0.02)  # M=1 loses less there
    assert accuracy_findings.check_attention_side(cells_of(smaller, tmp_path)).verdict == FAILS


def test_untrained_models_are_not_judged_on_accuracy(base: pd.DataFrame, tmp_path: Path) -> None:
    tiny = base.assign(mask_AP=base["mask_AP"] / 20)
    cells = cells_of(tiny, tmp_path)
    for check in (
        accuracy_findings.check_single_base,
        accuracy_findings.check_four_bases,
        accuracy_findings.check_best_cell,
        accuracy_findings.check_attention_side,
    ):
        result = check(cells)
        assert result.verdict == NOT_MEASURED and "too little" in result.evidence


def test_quadratic_in_r_flips(tmp_path: Path) -> None:
    square = load_speed_run(write_speed_run(tmp_path / "a", r_exponent=2.0))
    assert speed_findings.check_quadratic_in_r(square.scaling).verdict == HOLDS
    linear = load_speed_run(write_speed_run(tmp_path / "b", r_exponent=1.0))
    check = speed_findings.check_quadratic_in_r(linear.scaling)
    assert check.verdict == FAILS and "merge ∝ R^0.99" in check.evidence
    no_r = square.scaling[square.scaling["x"] != "R"]
    assert speed_findings.check_quadratic_in_r(no_r).verdict == NOT_MEASURED


def test_linear_in_n_flips(tmp_path: Path) -> None:
    run = load_speed_run(write_speed_run(tmp_path / "a", n_exponent=1.0))
    assert speed_findings.check_linear_in_n(speed_findings._scaling_with_own(run)).verdict == HOLDS
    steep = load_speed_run(write_speed_run(tmp_path / "b", n_exponent=1.6))
    assert speed_findings.check_linear_in_n(speed_findings._scaling_with_own(steep)).verdict == FAILS


def test_per_instance_cost_flips(tmp_path: Path) -> None:
    run = load_speed_run(write_speed_run(tmp_path / "a"))
    check = speed_findings.check_per_instance_cost(run.own_rows())
    assert check.verdict == HOLDS and "×0.07" in check.evidence
    costly = run.own_rows().copy()
    blend_merge = costly["family"].eq("blendmask") & costly["stage"].eq("merge")
    costly.loc[blend_merge, "median_ms"] *= 10  # 0.2 ms per instance against Mask R-CNN's 0.3
    assert speed_findings.check_per_instance_cost(costly).verdict == FAILS
    no_rcnn = costly[costly["family"] != "maskrcnn"]
    assert speed_findings.check_per_instance_cost(no_rcnn).verdict == NOT_MEASURED


def test_end_to_end_flips(base: pd.DataFrame, tmp_path: Path) -> None:
    whole = load_speed_run(write_speed_run(tmp_path / "a")).own_rows()
    cells = cells_of(base, tmp_path)
    assert accuracy_findings.check_end_to_end(whole, cells).verdict == HOLDS
    slow = whole.copy()
    slow.loc[slow["family"].eq("blendmask") & slow["stage"].eq("end_to_end"), "median_ms"] = 500.0
    assert accuracy_findings.check_end_to_end(slow, cells).verdict == FAILS
    worse = with_ap(base, base["family"].eq("blendmask"), 30.0)
    assert accuracy_findings.check_end_to_end(whole, cells_of(worse, tmp_path)).verdict == FAILS
    check = accuracy_findings.check_end_to_end(whole[whole["stage"] != "end_to_end"], cells)
    assert check.verdict == NOT_MEASURED and "end-to-end times" in check.evidence
    assert accuracy_findings.check_end_to_end(whole, None).verdict == NOT_MEASURED


def test_evaluate_covers_every_finding_and_says_what_is_missing(tmp_path: Path) -> None:
    verdicts = judge.judge_findings(load_results(write_results(tmp_path / "results")))
    assert {v.finding.id for v in verdicts} == set(range(1, 9))
    assert all(v.verdict == HOLDS for v in verdicts)
    only_speed = tmp_path / "speed-only"
    write_speed_run(only_speed / "speed" / "run1")
    verdicts = judge.judge_findings(load_results(only_speed))
    by_id = {v.finding.id: v for v in verdicts}
    assert {by_id[i].verdict for i in (1, 2, 3, 4, 8)} == {NOT_MEASURED}
    assert {by_id[i].verdict for i in (5, 6, 7)} == {HOLDS}


def test_per_instance_falls_back_to_the_ablation_times(tmp_path: Path) -> None:
    root = tmp_path / "results"
    write_suite(root / "ablate" / "quick")
    verdicts = [v for v in judge.judge_findings(load_results(root)) if v.finding.id == 7]
    assert len(verdicts) == 1 and verdicts[0].verdict == HOLDS and "merge times" in verdicts[0].scope
    merge_free = suite_frame()
    merge_free = merge_free.drop(columns=[c for c in merge_free.columns if c.startswith("merge_ms")])
    write_suite(root / "ablate" / "quick", merge_free)
    verdicts = [v for v in judge.judge_findings(load_results(root)) if v.finding.id == 7]
    assert verdicts[0].verdict == HOLDS and "total times" in verdicts[0].scope


def test_suite_cells_average_seeds(tmp_path: Path) -> None:
    base = suite_frame(seeds=(0,))
    twice = pd.concat([base, base.assign(seed=1, mask_AP=base["mask_AP"] + 0.02)], ignore_index=True)
    suite: AblationSuite = load_ablation(write_suite(tmp_path / "s", twice))
    cells = suite.cells()
    assert len(cells) == len(base) and (cells["seeds"] == 2).all()
    paper = cells[cells["spec"] == "blendmask:K=4,M=7,R=56"]
    assert paper["mask_AP"].iloc[0] == pytest.approx(36.0)


def test_correlated_bases_keep_the_verdict_and_say_so(base: pd.DataFrame, tmp_path: Path) -> None:
    """Bases r near 1 means one map up to a scale and an offset per basis, which K and M still combine per
    position: the verdict is judged as usual and the evidence notes the correlation (not 'not measured':
    the quick suite's K=4 bases reached r 0.96 while K=4 still gained 3 AP over K=1)."""
    checks = (
        accuracy_findings.check_single_base,
        accuracy_findings.check_four_bases,
        accuracy_findings.check_best_cell,
        accuracy_findings.check_attention_side,
    )
    collapsed = cells_of(base.assign(bases_corr=0.99), tmp_path)
    for check in checks:
        result = accuracy_findings.bases_note(check(collapsed), collapsed)
        assert result.verdict == check(cells_of(base, tmp_path)).verdict == HOLDS
        assert "bases r 0.99" in result.evidence
    distinct = cells_of(base.assign(bases_corr=0.4), tmp_path)  # bases that differ: no note
    for check in checks:
        assert "bases r" not in accuracy_findings.bases_note(check(distinct), distinct).evidence


# --- verdicts against the spread over seeds -----------------------------------------------------------------------


def spread_out(frame: pd.DataFrame, where: pd.Series, size: float, column: str = "mask_AP") -> pd.DataFrame:
    """Add +size, −size, 0 AP points to the rows of seeds 0, 1, 2 matching ``where``: the cells' means stay, their
    seed-to-seed spread grows past the differences between cells."""
    frame = frame.copy()
    offsets = frame["seed"].map({0: size, 1: -size, 2: 0.0}).fillna(0.0)
    frame.loc[where, column] = frame.loc[where, column] + offsets[where] / 100
    return frame


def blend_where(frame: pd.DataFrame, **spec: int) -> pd.Series:
    where = frame["family"].eq("blendmask")
    for key, value in spec.items():
        where &= frame[key].eq(value).fillna(False)
    return where.astype(bool)


@pytest.mark.parametrize(
    ("check", "noisy"),
    [
        (accuracy_findings.check_single_base, {"K": 1}),
        (lambda cells: accuracy_findings.check_four_bases(cells, "mask_ms_n100"), {"K": 4}),
        (accuracy_findings.check_best_cell, {"K": 4, "M": 7, "R": 56}),
        (accuracy_findings.check_attention_side, {"M": 7}),
    ],
)
def test_a_difference_inside_the_spread_is_not_significant(base: pd.DataFrame, tmp_path: Path, check, noisy) -> None:  # noqa: ANN001
    assert check(cells_of(base, tmp_path)).verdict == HOLDS  # seeds ±0.1..0.2 AP: the gaps are far outside
    result = check(cells_of(spread_out(base, blend_where(base, **noisy), 8.0), tmp_path))
    assert result.verdict == findings.NOT_SIGNIFICANT, result.evidence
    assert "(inside the spread)" in result.evidence and "3 seeds paired" in result.evidence


def test_one_seed_is_never_significant(tmp_path: Path) -> None:
    single = suite_frame(seeds=(0,))
    for check in (
        accuracy_findings.check_single_base,
        accuracy_findings.check_four_bases,
        accuracy_findings.check_best_cell,
        accuracy_findings.check_attention_side,
    ):
        result = check(cells_of(single, tmp_path))
        assert result.verdict == findings.NOT_SIGNIFICANT and "one seed: no interval" in result.evidence
    whole = load_speed_run(write_speed_run(tmp_path / "a")).own_rows()
    result = accuracy_findings.check_end_to_end(whole, cells_of(single, tmp_path))
    assert result.verdict == findings.NOT_SIGNIFICANT and "one seed" in result.evidence


def test_a_significant_contradiction_outweighs_an_unsure_part(base: pd.DataFrame, tmp_path: Path) -> None:
    eight_better = with_ap(base, blend_where(base, K=8), 40.0)  # K=8 gains ~5 AP over K=4: contradicts
    unsure_too = spread_out(eight_better, blend_where(eight_better, K=1), 8.0)  # K=4 vs K=1: inside the spread
    result = accuracy_findings.check_four_bases(cells_of(unsure_too, tmp_path))
    assert result.verdict == FAILS and "✗" in result.evidence and "(inside the spread)" in result.evidence


def test_end_to_end_ap_inside_the_spread_is_not_significant(base: pd.DataFrame, tmp_path: Path) -> None:
    whole = load_speed_run(write_speed_run(tmp_path / "a")).own_rows()
    noisy = spread_out(base, base["family"].eq("maskrcnn"), 6.0)
    result = accuracy_findings.check_end_to_end(whole, cells_of(noisy, tmp_path))
    assert result.verdict == findings.NOT_SIGNIFICANT and "inside the spread" in result.evidence
    slow = whole.copy()
    slow.loc[slow["family"].eq("blendmask") & slow["stage"].eq("end_to_end"), "median_ms"] = 500.0
    assert (
        accuracy_findings.check_end_to_end(slow, cells_of(noisy, tmp_path)).verdict == FAILS
    )  # slower: fails regardless


def test_touching_loss_is_judged_on_its_own_interval(base: pd.DataFrame, tmp_path: Path) -> None:
    m1 = base["family"].eq("blendmask") & base["M"].eq(1)
    touching = base.assign(mask_AP_touching=base["mask_AP"] - m1 * 0.05)  # 5 more points lost on touching
    noisy = spread_out(touching, m1 & base["K"].eq(4), 60.0, column="mask_AP_touching")
    result = accuracy_findings.check_attention_side(cells_of(noisy, tmp_path))
    assert result.verdict == findings.NOT_SIGNIFICANT and "mask_AP_touching" in result.evidence


def test_too_little_training_fires_only_while_the_best_cell_is_below_the_floor(
    base: pd.DataFrame, tmp_path: Path
) -> None:
    tiny = base.assign(mask_AP=base["mask_AP"] / 20)  # best cell 1.8 AP
    best = blend_where(tiny, K=8, M=7, R=56)
    usable = tiny.copy()
    usable.loc[best, "mask_AP"] = (accuracy_findings.MIN_TRAINED_AP + 0.5) / 100  # the best cell reaches a usable AP
    for check in (
        accuracy_findings.check_single_base,
        accuracy_findings.check_best_cell,
        accuracy_findings.check_attention_side,
    ):
        assert "too little" in check(cells_of(tiny, tmp_path)).evidence
        assert "too little" not in check(cells_of(usable, tmp_path)).evidence


def test_two_runs_that_disagree_on_a_finding_read_unstable_here(tmp_path: Path) -> None:
    from bmbench.report.render import build_report

    first = write_speed_run(tmp_path / "results" / "speed" / "run", r_exponent=2.0)
    write_speed_run(first / "run2", r_exponent=1.0)  # the same sweep again, judged otherwise
    (first / "run2" / "meta.json").unlink()  # a later run shares the first's meta.json
    run = load_speed_run(first)
    assert [repeat.name for repeat in run.repeats] == ["run2"]
    checks = speed_findings.stable_speed_checks(run)
    assert checks[5].verdict == findings.UNSTABLE and "run 1: holds; run 2: does not hold" in checks[5].evidence
    assert checks[6].verdict == HOLDS  # both runs agree on N
    build_report(tmp_path / "results", tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text()
    assert "Unstable here (runs disagree): 5." in text and "**unstable here**" in text
    # the later run is read with its first, not as a run of its own
    assert text.count("### Speed run `") == 1


def test_two_runs_that_agree_keep_their_verdict(tmp_path: Path) -> None:
    first = write_speed_run(tmp_path / "run", r_exponent=2.0)
    write_speed_run(first / "run2", r_exponent=2.0)
    checks = speed_findings.stable_speed_checks(load_speed_run(first))
    assert checks[5].verdict == HOLDS and checks[6].verdict == HOLDS


def test_findings_read_the_paired_exponent_where_present(tmp_path: Path) -> None:
    run = load_speed_run(write_speed_run(tmp_path / "a", r_exponent=2.0))
    scaling = run.scaling.copy()
    assert speed_findings.check_quadratic_in_r(scaling).verdict == HOLDS  # the pooled fit: 2
    paired = scaling.assign(p_paired=1.0, p_paired_low=0.9, p_paired_high=1.1, cycles_paired=30)
    check = speed_findings.check_quadratic_in_r(paired)
    assert check.verdict == FAILS and "paired p 1.00" in check.evidence and "30 cycles" in check.evidence
