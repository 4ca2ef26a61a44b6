"""The timer on a fake clock: budget logic, warm-up, statistics and sections, deterministically."""

from __future__ import annotations

import time

import pytest
import torch

from bmbench.bench.timer import Measurement, Timer, median_interval


class FakeClock:
    """A clock that only moves when a fake workload says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float) -> None:
        self.calls += 1
        self.now += seconds


def _timer(clock: FakeClock, **options: float) -> Timer:
    """One call per repeat unless a test asks for blocks (min_block_s)."""
    return Timer(
        device=torch.device("cpu"), clock=clock, **({"budget_s": 1.0, "warmup": 1, "min_block_s": 0} | options)
    )


def test_a_short_run_is_timed_in_blocks_and_each_repeat_is_the_mean_per_call() -> None:
    clock = FakeClock()
    durations = iter([0.002] + [0.001, 0.003] * 1000)  # warm-up 2 ms, then calls alternating 1 and 3 ms
    measured = _timer(clock, min_block_s=0.01, budget_s=100.0, max_repeats=8).measure_fn(
        lambda: clock.work(next(durations))
    )
    assert measured.block == 5  # 10 ms / the 2 ms warm-up
    assert clock.calls == 1 + 8 * 5 and measured.n == 8
    # blocks of 5 alternate 1,3,1,3,1 (9 ms) and 3,1,3,1,3 (11 ms): per call 1.8 and 2.2 ms
    assert sorted(set(round(t, 6) for t in measured.times_ms)) == [1.8, 2.2]
    assert measured.interval_stats()["block"] == 5


def test_blocks_count_against_the_budget_and_long_runs_are_not_blocked() -> None:
    clock = FakeClock()
    measured = _timer(clock, min_block_s=0.01, budget_s=0.105, precision=0.0).measure_fn(lambda: clock.work(0.001))
    assert measured.block == 10 and measured.n == 10  # ten 10-ms blocks fill the 0.105 s budget, not 100 repeats
    clock = FakeClock()
    long = _timer(clock, min_block_s=0.01, warmup=0).measure_fn(lambda: clock.work(0.3))
    assert long.block == 1 and clock.calls == 1 + long.n  # one untimed call sized the block


def test_repeats_fill_the_budget_without_overrunning_it() -> None:
    clock = FakeClock()
    measured = _timer(clock).measure_fn(lambda: clock.work(0.3))
    # warm-up 0.3, then 0.3, 0.6, 0.9: a fourth would end at 1.2 > 1.0.
    assert measured.n == 3 and clock.calls == 4
    assert measured.median_ms == pytest.approx(300.0)
    assert measured.first_ms == pytest.approx(300.0)


def test_a_run_slower_than_the_budget_runs_once_more_not_ten_times() -> None:
    clock = FakeClock()
    measured = _timer(clock, warmup=10).measure_fn(lambda: clock.work(5.0))
    assert clock.calls == 2  # one warm-up (it used the budget: no more warm-up), one timed
    assert measured.n == 1 and measured.median_ms == pytest.approx(5000.0) and measured.iqr_ms == 0.0


def test_warmup_zero_and_the_repeat_cap() -> None:
    clock = FakeClock()
    measured = _timer(clock, warmup=0, max_repeats=5).measure_fn(lambda: clock.work(0.001))
    assert clock.calls == 5 and measured.n == 5
    assert measured.first_ms != measured.first_ms  # nan: no warm-up ran


def test_statistics() -> None:
    steady = Measurement((10.0, 10.0, 11.0, 10.0, 10.0), first_ms=50.0)
    assert steady.median_ms == 10.0 and steady.mean_ms == pytest.approx(10.2) and steady.min_ms == 10.0
    assert steady.iqr_ms == pytest.approx(0.0) and not steady.noisy
    spread = Measurement((8.0, 10.0, 12.0, 14.0, 20.0), first_ms=float("nan"))
    assert spread.median_ms == 12.0 and spread.iqr_ms == pytest.approx(4.0)  # quartiles 10 and 14
    assert spread.noisy  # 4 / 12 > 10 %
    assert Measurement((3.0,), 3.0).iqr_ms == 0.0
    assert set(spread.stats()) == {"median_ms", "iqr_ms", "mean_ms", "min_ms", "n", "noisy", "first_ms"}


def test_sections_are_timed_inside_the_same_run() -> None:
    clock = FakeClock()

    def run(section) -> None:
        with section("a"):
            clock.work(0.1)
        clock.work(0.05)  # outside any section: only in the total
        with section("b"):
            clock.work(0.2)

    measured = _timer(clock, budget_s=2.0).measure(run)
    assert set(measured) == {"a", "b", "total"}
    assert measured["a"].median_ms == pytest.approx(100.0)
    assert measured["b"].median_ms == pytest.approx(200.0)
    assert measured["total"].median_ms == pytest.approx(350.0)
    assert measured["a"].n == measured["total"].n


def test_real_clock_times_a_sleep() -> None:
    timer = Timer(device=torch.device("cpu"), budget_s=0.05, warmup=1)
    measured = timer.measure_fn(lambda: time.sleep(0.01))
    assert 2 <= measured.n <= 5
    assert 9.0 <= measured.median_ms <= 30.0
    assert timer.kind == "perf_counter"


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        Timer(device=torch.device("cpu"), budget_s=0)
    with pytest.raises(ValueError):
        Timer(device=torch.device("cpu"), budget_s=1, min_repeats=5, max_repeats=2)


class ScheduledWork:
    """A fake stage whose successive runs take the given seconds, cycling."""

    def __init__(self, clock: FakeClock, seconds: list[float]) -> None:
        self.clock, self.seconds, self.index = clock, seconds, 0

    def __call__(self) -> None:
        self.clock.work(self.seconds[self.index % len(self.seconds)])
        self.index += 1


def test_repeats_stop_once_the_median_interval_reaches_the_precision_target() -> None:
    clock = FakeClock()
    steady = ScheduledWork(clock, [0.100, 0.101, 0.099])  # within ±1 %: precise at the first n with a 95 % interval
    measured = _timer(clock, budget_s=100.0, warmup=0, max_repeats=200).measure_fn(steady)
    assert measured.n == 6 and measured.stop == "precision" and measured.precise
    assert measured.ci_ms == (pytest.approx(99.0), pytest.approx(101.0)) and measured.rel_ci == pytest.approx(0.01)
    columns = measured.interval_stats()
    assert (
        set(columns) == {"ci_low_ms", "ci_high_ms", "rel_ci", "precise", "stop", "block"} and columns["precise"] is True
    )


def test_repeats_stop_at_the_cap_when_the_target_is_out_of_reach() -> None:
    clock = FakeClock()
    jumpy = ScheduledWork(clock, [0.100, 0.150])  # half the runs 50 % slower: the interval never narrows to ±3 %
    measured = _timer(clock, budget_s=100.0, warmup=0, max_repeats=20).measure_fn(jumpy)
    assert measured.n == 20 and measured.stop == "cap" and not measured.precise
    assert clock.calls == 20


def test_the_budget_stops_repeats_short_of_the_target() -> None:
    clock = FakeClock()
    jumpy = ScheduledWork(clock, [0.100, 0.150])
    measured = _timer(clock, budget_s=1.0, warmup=0, max_repeats=200).measure_fn(jumpy)
    assert measured.stop == "budget" and measured.n == 8 and not measured.precise  # 8 runs: 1.0 s: a 9th would overrun


def test_a_looser_target_stops_sooner_and_zero_turns_it_off() -> None:
    clock = FakeClock()
    jumpy = ScheduledWork(clock, [0.100, 0.104])
    assert _timer(clock, budget_s=100.0, warmup=0, precision=0.05).measure_fn(jumpy).n == 6
    off = _timer(clock, budget_s=100.0, warmup=0, max_repeats=30, precision=0.0).measure_fn(jumpy)
    assert off.n == 30 and off.stop == "cap"


def test_median_interval_uses_binomial_order_statistics() -> None:
    times = [float(i) for i in range(20)]
    assert median_interval(times) == (5.0, 14.0)  # P(B <= 5) = 2.1 % <= 2.5 % < P(B <= 6) for B ~ Bin(20, 1/2)
    assert median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)  # too few for 95 %: min and max
    assert not Measurement((1.0, 1.0, 1.0, 1.0, 1.0), 1.0).precise  # five repeats never count as precise


def test_rounds_pool_their_repeats_and_each_round_adds_its_share() -> None:
    clock = FakeClock()
    timer = _timer(clock, budget_s=100.0, warmup=0, max_repeats=30)
    steady = ScheduledWork(clock, [0.100, 0.101, 0.099])
    first = timer.measure_fn(steady, share=1 / 3)
    assert first.n == 6 and first.stop == "precision"  # the interval needs 6 repeats, whatever the share
    second = timer.measure_fn(steady, before=first, share=1 / 3)
    assert second.n == 8 and second.times_ms[:6] == first.times_ms  # pooled: 2 more of its own (6 / 3), then precise
    # a later round on a slower machine: its repeats widen the pooled interval, which the round then works to narrow
    slower = ScheduledWork(clock, [0.110])
    third = timer.measure_fn(slower, before=second, share=1 / 3)
    assert third.n == 18 and third.stop == "cap"  # 10 own = ceil(30 / 3), the round's share of the cap
    assert (
        third.ci_ms[0] < 102.0 < 110.0 == pytest.approx(third.ci_ms[1]) and not third.precise
    )  # drift: a wide interval


def test_a_round_gets_its_share_of_the_budget() -> None:
    clock = FakeClock()
    timer = _timer(clock, budget_s=1.0, warmup=0, max_repeats=200)
    jumpy = ScheduledWork(clock, [0.100, 0.150])
    first = timer.measure_fn(jumpy, share=0.5)  # 0.5 s of its own: 0.1 + 0.15 + 0.1 + 0.15 = 0.5, a fifth overruns
    assert first.n == 4 and first.stop == "budget"
    pooled = timer.measure_fn(jumpy, before=first, share=0.5)
    assert pooled.n == 8 and pooled.stop == "budget" and pooled.first_ms != pooled.first_ms  # nan: no warm-up


def test_the_collector_is_paused_inside_a_measurement_and_restored_after() -> None:
    import gc

    clock = FakeClock()
    seen: list[bool] = []

    def work() -> None:
        seen.append(gc.isenabled())
        clock.work(0.1)

    assert gc.isenabled()
    _timer(clock, budget_s=0.5).measure_fn(work)
    assert seen and not any(seen) and gc.isenabled()
