"""The schedules on a fake clock with a known truth: stage costs ∝ R², and a machine that slows during the run.

Interleaved cycles must recover the exponent 2 in the paired fit whatever the drift; the sequential order, which
times R after R, turns the drift into slope. Also: the shuffle is deterministic per seed, the probe is in every
cycle, and failures leave the schedule.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import torch

from bmbench.bench.paired import cycle_exponents
from bmbench.bench.schedule import Slot, StopRule, run_interleaved, run_sequential, warm_up
from bmbench.bench.timer import Timer

R_VALUES = (14, 28, 42, 56, 84, 112)
COST_PER_R2_S = 2e-6  # seconds per R² at the start of the run
PROBE_S = 3e-3


class DriftingClock:
    """A clock whose work costs more as the run goes on: `slowdown(t)` multiplies every cost at time t."""

    def __init__(self, slowdown: Callable[[float], float]) -> None:
        self.now = 0.0
        self.slowdown = slowdown

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float) -> Callable[[], None]:
        def call() -> None:
            self.now += seconds * self.slowdown(self.now)

        return call


def _slots(clock: DriftingClock) -> tuple[list[Slot], Slot]:
    slots = [Slot(call=clock.work(COST_PER_R2_S * r * r), group=r) for r in R_VALUES]
    return slots, Slot(call=clock.work(PROBE_S), group="probe")


def _paired_p(slots: list[Slot]) -> float:
    samples = pd.DataFrame(
        [
            {"axis_value": r, "cycle": cycle, "ms": ms}
            for r, slot in zip(R_VALUES, slots, strict=True)
            for cycle, ms in zip(slot.cycles, slot.times_ms, strict=True)
        ]
    )
    return float(np.median(cycle_exponents(samples, "axis_value")))


def _run(schedule: str, slowdown: Callable[[float], float], total_s: float) -> tuple[list[Slot], Slot]:
    clock = DriftingClock(slowdown)
    timer = Timer(device=torch.device("cpu"), budget_s=1.0, warmup=0, clock=clock)
    rule = StopRule(precision=0.0, min_repeats=30, max_repeats=30, budget_s=1e9)  # 30 repeats each, always
    slots, probe = _slots(clock)
    warm_up(slots, timer, 0, seed=0, shuffle=schedule == "interleaved")
    if schedule == "interleaved":
        run_interleaved(slots, probe, timer, rule, seed=0)
    else:
        run_sequential(slots, probe, timer, rule, warmup=0)
    assert clock.now == pytest.approx(total_s, rel=0.6)  # the drift spans the whole run
    return slots, probe


def _linear(total_s: float) -> Callable[[float], float]:
    return lambda t: 1.0 + 0.3 * min(t / total_s, 1.0)  # 30 % slower by the end of the run


def _step(total_s: float) -> Callable[[float], float]:
    return lambda t: 1.0 if t < total_s / 2 else 1.2  # 20 % slower from the middle on


RUN_S = 30 * sum(COST_PER_R2_S * r * r for r in R_VALUES) * 1.15  # about the length of either schedule


@pytest.mark.parametrize("drift", [_linear, _step], ids=["linear-30%", "step-20%"])
def test_interleaved_paired_exponent_recovers_two_under_drift_and_sequential_does_not(drift) -> None:  # noqa: ANN001
    interleaved, probe = _run("interleaved", drift(RUN_S), RUN_S)
    assert _paired_p(interleaved) == pytest.approx(2.0, abs=0.05)
    sequential, _ = _run("sequential", drift(RUN_S), RUN_S)
    assert abs(_paired_p(sequential) - 2.0) > 0.05
    # the probe saw the drift: its times rise over the run
    assert max(probe.times_ms) / min(probe.times_ms) > 1.15


def test_without_drift_both_schedules_recover_two() -> None:
    for schedule in ("interleaved", "sequential"):
        slots, _ = _run(schedule, lambda t: 1.0, RUN_S)
        assert _paired_p(slots) == pytest.approx(2.0, abs=0.02)


def _order(seed: int) -> list[int]:
    seen: list[int] = []
    slots = [Slot(call=lambda i=i: seen.append(i), group=i) for i in range(8)]
    probe = Slot(call=lambda: seen.append(-1), group="probe")
    timer = Timer(device=torch.device("cpu"), budget_s=1.0, warmup=0)
    run_interleaved(slots, probe, timer, StopRule(0.0, 3, 3, 1e9), seed=seed)
    return seen


def test_the_shuffle_is_deterministic_per_seed_and_fresh_each_cycle() -> None:
    first, again, other = _order(0), _order(0), _order(1)
    assert first == again and first != other
    cycles = [first[i * 9 : (i + 1) * 9] for i in range(3)]
    assert all(sorted(cycle) == [-1, *range(8)] for cycle in cycles)  # every slot and the probe, once a cycle
    assert cycles[0] != cycles[1] or cycles[1] != cycles[2]


def test_a_failing_slot_leaves_the_schedule_and_the_rest_go_on() -> None:
    calls = {"bad": 0}

    def bad() -> None:
        calls["bad"] += 1
        if calls["bad"] > 2:
            raise RuntimeError("boom")

    slots = [Slot(call=lambda: None, group=0), Slot(call=bad, group=1)]
    timer = Timer(device=torch.device("cpu"), budget_s=1.0, warmup=1)
    warm_up(slots, timer, 1, seed=0, shuffle=True)
    cycles = run_interleaved(slots, Slot(call=lambda: None), timer, StopRule(0.0, 5, 5, 1e9), seed=0)
    assert cycles == 5 and len(slots[0].times_ms) == 5
    assert isinstance(slots[1].error, RuntimeError) and calls["bad"] == 3  # warm-up, one timed repeat, the failure
    assert len(slots[1].times_ms) == 1


def test_precision_stops_the_cycles_once_every_measurement_is_precise() -> None:
    clock = DriftingClock(lambda t: 1.0)
    timer = Timer(device=torch.device("cpu"), budget_s=1.0, warmup=0, clock=clock)
    slots, probe = _slots(clock)
    cycles = run_interleaved(slots, probe, timer, StopRule(0.03, 6, 400, 1e9), seed=0)
    assert cycles == 6 and all(slot.stop == "precision" for slot in slots)  # exact times: precise at the floor


def test_each_pairing_group_spends_its_own_budget_in_shared_cycles() -> None:
    clock = DriftingClock(lambda t: 1.0)  # costs in binary fractions of a second: the sums are exact
    timer = Timer(device=torch.device("cpu"), budget_s=1.0, warmup=0, min_block_s=0.0, clock=clock)
    cheap = [Slot(call=clock.work(1 / 512), group=i, pairs="merge") for i in range(3)]
    dear = [Slot(call=clock.work(1 / 32), group=i, pairs="total") for i in range(3)]
    probe = Slot(call=clock.work(1 / 256), group="probe")
    rule = StopRule(0.0, 3, 1000, 0.125)  # 3 slots x 0.125 s a group
    cycles = run_interleaved([*cheap, *dear], probe, timer, rule, seed=0)
    # the dear group spends its 0.375 s in 4 cycles (3/32 s a cycle), the cheap one in 64 (3/512 s a cycle)
    assert [len(slot.times_ms) for slot in dear] == [4, 4, 4] and all(slot.stop == "budget" for slot in dear)
    assert [len(slot.times_ms) for slot in cheap] == [64, 64, 64] and cycles == 64
    assert all(slot.cycles == list(range(4)) for slot in dear) and all(s.cycles == list(range(64)) for s in cheap)
    assert probe.cycles == list(range(64))  # the probe stays in every cycle
    # one shared budget (no pairing groups) stops every slot together: 0.75 s at 51/512 s a cycle
    shared = [Slot(call=clock.work(cost), group=i) for i, cost in enumerate((1 / 512,) * 3 + (1 / 32,) * 3)]
    assert run_interleaved(shared, probe, timer, rule, seed=0) == 8


def test_the_repeat_floor_holds_a_group_whose_budget_is_spent() -> None:
    clock = DriftingClock(lambda t: 1.0)
    timer = Timer(device=torch.device("cpu"), budget_s=1.0, warmup=0, min_block_s=0.0, clock=clock)
    slots = [Slot(call=clock.work(1 / 2), group=0, pairs="a"), Slot(call=clock.work(1 / 64), group=1, pairs="b")]
    run_interleaved(slots, Slot(call=lambda: None), timer, StopRule(0.0, 4, 1000, 1 / 128), seed=0)
    assert [len(slot.times_ms) for slot in slots] == [4, 4]  # both spent theirs in the first cycle


def test_the_sweep_budget_bounds_the_groups_when_the_repeat_floor_overspends_one() -> None:
    clock = DriftingClock(lambda t: 1.0)
    timer = Timer(device=torch.device("cpu"), budget_s=1.0, warmup=0, min_block_s=0.0, clock=clock)
    dear = Slot(call=clock.work(1 / 2), group=0, pairs="maskrcnn merge")
    cheap = [Slot(call=clock.work(1 / 512), group=i, pairs="merge") for i in range(1, 4)]
    # the sweep's budget: 4 x 1/8 s, which the dear slot alone overspends in its first call
    cycles = run_interleaved([dear, *cheap], Slot(call=lambda: None), timer, StopRule(0.0, 4, 1000, 1 / 8), seed=0)
    assert cycles == 4 and [len(slot.times_ms) for slot in (dear, *cheap)] == [4, 4, 4, 4]
    assert all(slot.stop == "budget" for slot in (dear, *cheap))


@pytest.mark.parametrize(("warmup", "primed", "calls"), [(1, True, 0), (2, True, 1), (1, False, 1), (0, True, 1)])
def test_a_first_call_made_while_building_counts_as_a_warm_up_call(warmup: int, primed: bool, calls: int) -> None:
    clock = DriftingClock(lambda t: 1.0)
    made: list[int] = []
    work = clock.work(0.01)
    slot = Slot(call=lambda: made.append(1) or work(), group=0, primed_s=0.25)
    timer = Timer(device=torch.device("cpu"), budget_s=1.0, warmup=warmup, clock=clock)
    seconds = warm_up([slot], timer, warmup, seed=0, shuffle=False, primed=primed)
    assert len(made) == calls  # warmup 0: one untimed call all the same, to size the block and the probe
    expected_first = 250.0 if primed and warmup else 10.0 if warmup else float("nan")
    assert slot.first_ms == pytest.approx(expected_first, nan_ok=True)
    assert seconds == [pytest.approx(0.25 if (primed and warmup == 1) else 0.01)]
