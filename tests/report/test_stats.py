"""The statistics over seeds: aggregation, bootstrap intervals, paired and unpaired differences, Kendall's tau-b."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bmbench.report import stats
from bmbench.report.stats import ABOVE, BELOW, INSIDE, aggregate, bootstrap_ci, contrast, kendall_tau_b


def by_seed(*values: float) -> pd.Series:
    return pd.Series(values, index=range(len(values)), dtype=float)


def test_aggregate_gives_mean_std_n_and_an_interval_inside_the_values() -> None:
    frame = pd.DataFrame({"spec": ["a", "a", "a", "b"], "ap": [30.0, 31.0, 35.0, 20.0], "ms": [1.0, 1.0, 1.0, 2.0]})
    cells = aggregate(frame, ["spec"], ["ap", "ms"], interval=["ap"]).set_index("spec")
    assert cells.loc["a", "ap"] == pytest.approx(32.0)
    assert cells.loc["a", "ap_std"] == pytest.approx(math.sqrt(((30 - 32) ** 2 + 1 + 9) / 2))  # sample std, ddof 1
    assert cells.loc["a", "ap_n"] == 3 and cells.loc["b", "ap_n"] == 1
    assert 30.0 <= cells.loc["a", "ap_lo"] < 32.0 < cells.loc["a", "ap_hi"] <= 35.0
    assert math.isnan(cells.loc["b", "ap_std"]) and math.isnan(cells.loc["b", "ap_lo"])  # one seed: no spread
    assert "ms_lo" not in cells and cells.loc["a", "ms_std"] == 0.0


def test_bootstrap_is_deterministic_and_shrinks_with_more_seeds() -> None:
    values = np.array([1.0, 2.0, 4.0, 3.0])
    assert bootstrap_ci(values) == bootstrap_ci(values.copy())
    low, high = bootstrap_ci(values)
    assert 1.0 <= low < values.mean() < high <= 4.0
    wide = np.subtract(*reversed(bootstrap_ci(np.tile(values, 1))))
    narrow = np.subtract(*reversed(bootstrap_ci(np.tile(values, 25))))
    assert narrow < wide / 3
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([5.0])))


def test_a_paired_contrast_removes_the_shared_seed_effect() -> None:
    a, b = by_seed(30.0, 34.0, 38.0), by_seed(29.0, 33.0, 37.0)  # the seeds move both cells alike
    paired = contrast([(a, 1.0), (b, -1.0)])
    assert paired.paired and paired.seeds == 3
    assert (paired.estimate, paired.low, paired.high) == pytest.approx((1.0, 1.0, 1.0))
    assert paired.side(0.0) == ABOVE and paired.side(2.0) == BELOW and paired.side(1.0) == INSIDE
    assert "+1.0 AP [+1.0, +1.0], 3 seeds paired" == paired.text()
    unpaired = contrast([(a, 1.0), (by_seed(29.0, 33.0, 37.0).set_axis([10, 11, 12]), -1.0)])
    assert not unpaired.paired and unpaired.estimate == pytest.approx(1.0)
    assert unpaired.side(0.0) == INSIDE  # without the pairing, the seed-to-seed spread swamps the 1 AP


@pytest.mark.parametrize("count", [1, 2])
def test_too_few_seeds_give_no_interval(count: int) -> None:
    gap = contrast([(by_seed(*[31.0] * count), 1.0), (by_seed(*[30.0] * count), -1.0)])
    assert not gap.measured and gap.side(0.0) == INSIDE and gap.estimate == pytest.approx(1.0)
    assert ("one seed" if count == 1 else f"2 seeds (< {stats.MIN_SEEDS})") in gap.text()


def test_a_weighted_contrast_is_a_linear_combination() -> None:
    one, best = by_seed(28.0, 29.0, 30.0), by_seed(30.0, 30.0, 30.0)
    floor = contrast([(one, 1.0), (best, -0.8)])
    assert floor.estimate == pytest.approx(29.0 - 24.0)
    assert floor.low == pytest.approx(4.0, abs=0.34) and floor.high == pytest.approx(6.0, abs=0.34)


def test_kendall_tau_b_on_hand_computed_cases() -> None:
    # 6 pairs, one discordant (2 vs 3): (5 - 1) / 6
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ties: x ties pair (2,3), y ties pair (3,4); concordant 4, discordant 0; untied 5 and 5 -> 4 / sqrt(5 * 5)
    assert kendall_tau_b([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    # ties on one side only: x = [1, 1, 2], y = [1, 2, 3]: concordant 2, untied in x 2, in y 3 -> 2 / sqrt(6)
    assert kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau_b([1.0], [2.0])) and math.isnan(kendall_tau_b([1, 1], [1, 2]))


def test_matched_contrast_uses_the_groups_that_have_seeds() -> None:
    """K=4 − K=1 at two (R, M): one group with 3 seeds each, one with a single seed. The contrast rests on the
    seeded group alone (so it has an interval), and says it matched one group."""
    rows = []
    for seed, noise in zip((0, 1, 2), (0.0, 0.2, -0.2), strict=True):
        rows += [
            {"spec": "k4-r56", "K": 4, "M": 7, "R": 56, "seed": seed, "mask_AP": 20.0 + noise},
            {"spec": "k1-r56", "K": 1, "M": 7, "R": 56, "seed": seed, "mask_AP": 17.0 + noise},
        ]
    rows += [
        {"spec": "k4-r28", "K": 4, "M": 7, "R": 28, "seed": 0, "mask_AP": 10.0},
        {"spec": "k1-r28", "K": 1, "M": 7, "R": 28, "seed": 0, "mask_AP": 30.0},
    ]
    difference, matched = stats.matched_contrast(pd.DataFrame(rows), "K", 4, 1, "mask_AP")
    assert matched == 1 and difference.seeds == 3 and difference.measured
    assert difference.estimate == pytest.approx(3.0) and difference.side() == ABOVE
    only_one = pd.DataFrame([row for row in rows if row["seed"] == 0])  # no group has seeds: all groups, no interval
    difference, matched = stats.matched_contrast(only_one, "K", 4, 1, "mask_AP")
    assert matched == 2 and not difference.measured and difference.estimate == pytest.approx((3.0 - 20.0) / 2)
