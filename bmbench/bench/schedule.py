"""When each measurement is timed: interleaved cycles (the default) or one measurement after another.

``interleaved``: the unit of work is a cycle, one timed repeat of every measurement still timed and of the drift
probe (a fixed reference workload, bench/drift.py), in an order shuffled afresh each cycle by a seeded generator.
A machine that slows for tens of seconds then slows every point of a cycle alike, instead of the points timed
during the slow spell: the drift lands in each point's spread, not in the curve's slope, and a cycle's points can
be fitted together (bench/paired.py). This follows asv's interleaved rounds and Google Benchmark's random interleaving.

The measurements fitted together (one ``Slot.pairs``: a variant's stage over every point and N) share a budget, the
per-measurement budget times their number, and stay in the cycles together until that budget is spent (after the
repeat floor), every one of them reaches the precision target, or they reach the repeat cap; the probe stays to the
end. So a fast stage is not cut short when a slow one has spent the time: on the CPU demo sweep the whole branch
(``total``) took 77 % of a cycle and the merge 5 %, and under one shared budget the merge, which findings 5 and 6 are
judged on, got 30-31 calls a point, as many as ``total``. The sweep's budget (the per-measurement budget times the
number of measurements) still bounds the whole: a group the repeat floor keeps past its own budget (Mask R-CNN's
merge at N=100 in the default CPU sweep) spends the others', and when all of it is spent every group stops.

``sequential``: the order before cycles, kept to compare: each measurement's repeats back to back until its own
precision, cap or budget, the probe timed just before each measurement. Repeat k of every measurement counts as
cycle k, so the same paired fits apply (and show what drift does to them).

Warm-up runs once per measurement, before its first timed repeat. A stage shorter than the timer's block length is
timed as one block of back-to-back calls. With ``prime``, an untimed call precedes every timed one, so that a stage
never starts on caches another measurement left cold (see bench/options.py for what it was measured to change).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bmbench.bench.timer import MIN_CI_REPEATS, Timer, median_interval

SCHEDULES = ("interleaved", "sequential")
Progress = Callable[..., None]  # progress(description, steps=1): steps completed since the last call


@dataclass
class Slot:
    """One measurement in a schedule: a call without arguments and the repeats it got."""

    call: Callable[[], object]
    group: object = None  # what a progress step counts (a point)
    pairs: object = None  # the slots fitted together (a variant's stage): same cycles, one shared budget
    block: int = 1  # back-to-back calls per timed repeat (a stage shorter than the block length)
    first_ms: float = math.nan  # the first warm-up call; nan without warm-up
    primed_s: float = math.nan  # a first call made while the slot was built, timed (it counts as a warm-up call)
    times_ms: list[float] = field(default_factory=list)  # per call, one a timed repeat
    cycles: list[int] = field(default_factory=list)  # the cycle of each repeat
    ref_ms: list[float] = field(default_factory=list)  # the probe's time in that cycle
    at_s: list[float] = field(default_factory=list)  # when each repeat was timed, seconds since the start
    error: BaseException | None = None  # the failure that removed it from the schedule
    stop: str = ""  # precision, cap or budget

    @property
    def active(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class StopRule:
    """When a measurement has enough repeats."""

    precision: float  # target relative half-width of the median's 95 % interval (0: off)
    min_repeats: int  # repeats whatever the budget
    max_repeats: int  # cap
    budget_s: float  # seconds of timed repeats per measurement

    def finished(self, times_ms: list[float]) -> str:
        """``precision`` or ``cap`` when these repeats suffice, else ''."""
        n = len(times_ms)
        if n >= self.max_repeats:
            return "cap"
        if self.precision > 0 and n >= max(self.min_repeats, MIN_CI_REPEATS):
            low, high = median_interval(times_ms)
            median = statistics.median(times_ms)
            if median > 0 and max(median - low, high - median) / median <= self.precision:
                return "precision"
        return ""


def _warm(slot: Slot, timer: Timer, warmup: int, *, primed: bool = False) -> float:
    """Untimed calls before the first timed one, and the block size; returns the last call's seconds. With
    `primed`, the slot's call made while it was built (``primed_s``) is the first of its `warmup` calls."""
    last = math.nan
    done = 0
    if primed and warmup > 0 and not math.isnan(slot.primed_s):
        last, done = slot.primed_s, 1
        if math.isnan(slot.first_ms):
            slot.first_ms = last * 1e3
    while done < warmup and not (done and last * done >= timer.budget_s):
        last = timer.once(slot.call)
        if done == 0 and math.isnan(slot.first_ms):
            slot.first_ms = last * 1e3
        done += 1
    if math.isnan(last):  # no warm-up: one untimed call all the same, to size the block and the probe
        last = timer.once(slot.call)
    slot.block = timer.block_for(last)
    return last


def warm_up(
    slots: list[Slot], timer: Timer, warmup: int, *, seed: int, shuffle: bool, primed: bool = False
) -> list[float]:
    """Warm every slot up once (in a seeded shuffled order, or in order); returns each slot's last untimed
    seconds (nan for a slot that failed, which leaves the schedule). With `primed`, a slot's call made while it was
    built counts as its first warm-up call."""
    order = np.random.default_rng(seed).permutation(len(slots)) if shuffle else range(len(slots))
    seconds = [math.nan] * len(slots)
    for index in order:
        slot = slots[index]
        seconds[index] = _guarded(slot, lambda slot=slot: _warm(slot, timer, warmup, primed=primed)) or math.nan
    return seconds


def _timed(slot: Slot, timer: Timer, prime: bool) -> float:
    if prime:
        slot.call()
    return timer.once(slot.call, slot.block)


def _record(slot: Slot, seconds: float, cycle: int, ref_s: float, at_s: float) -> None:
    slot.times_ms.append(seconds * 1e3)
    slot.cycles.append(cycle)
    slot.ref_ms.append(ref_s * 1e3)
    slot.at_s.append(at_s)


def _guarded(slot: Slot, action: Callable[[], float]) -> float | None:
    """Run `action`; a failure removes the slot from the schedule (it is a result, not a crash)."""
    try:
        return action()
    except Exception as err:  # noqa: BLE001 - recorded on the slot, the sweep goes on
        slot.error = err
        return None


def _finished_groups(slots: list[Slot], done: set[object]) -> int:
    """Groups newly finished (every slot stopped or failed), added to `done`; their count."""
    groups: dict[object, bool] = {}
    for slot in slots:
        groups[slot.group] = groups.get(slot.group, True) and (bool(slot.stop) or not slot.active)
    new = {group for group, finished in groups.items() if finished and group not in done}
    done |= new
    return len(new)


def _stopped_pairs(running: list[Slot], rule: StopRule, spent: dict[object, float], cycle: int, out: bool) -> int:
    """Stop each pairing group whose slots all have enough repeats, or whose budget is spent (after the repeat
    floor), or every group when the sweep's budget is spent (`out`, after the repeat floor): the stopped slots'
    ``stop`` is set and they leave the cycles. Returns how many slots are precise or capped."""
    groups: dict[object, list[Slot]] = {}
    for slot in running:
        groups.setdefault(slot.pairs, []).append(slot)
    enough = 0
    for pairs, members in groups.items():
        reasons = [rule.finished(slot.times_ms) for slot in members]
        enough += sum(1 for reason in reasons if reason)
        over_budget = (out or spent.get(pairs, 0.0) >= rule.budget_s * len(members)) and cycle >= rule.min_repeats
        if all(reasons) or over_budget:
            for slot, reason in zip(members, reasons, strict=True):
                slot.stop = reason or "budget"
    return enough


def run_interleaved(
    slots: list[Slot],
    probe: Slot,
    timer: Timer,
    rule: StopRule,
    *,
    seed: int,
    prime: bool = False,
    progress: Progress | None = None,
    after_cycle: Callable[[], None] | None = None,
) -> int:
    """Time `slots` (warmed up: see warm_up) in shuffled cycles with `probe` in each; returns the number of timed
    cycles. The slots of one pairing group (``Slot.pairs``) stay in the same cycles until the group stops, so that
    any two points fitted together were timed in the same cycles (paired); the probe is timed in every cycle."""
    step = progress or (lambda description, steps=1: None)
    rng = np.random.default_rng(seed + 1)  # not the warm-up's order
    started = time.perf_counter()
    step(f"timing {len(slots)} measurements in cycles", 1)
    spent: dict[object, float] = {}
    done: set[object] = set()
    cycle = 0
    while True:
        running = [slot for slot in slots if slot.active and not slot.stop]
        if not running:
            break
        order = rng.permutation(len(running) + 1)  # the last index is the probe
        timed: list[tuple[Slot, float, float]] = []
        for index in order:
            slot = probe if index == len(running) else running[index]
            seconds = _guarded(slot, lambda slot=slot: _timed(slot, timer, prime))
            if seconds is not None:
                timed.append((slot, seconds, time.perf_counter() - started))
                if slot is not probe:
                    spent[slot.pairs] = spent.get(slot.pairs, 0.0) + seconds * slot.block
        if not probe.active:  # the probe itself failed: nothing to pair with, stop
            raise RuntimeError(f"the drift probe failed: {probe.error}")
        probe_s = next(seconds for slot, seconds, _ in timed if slot is probe)
        for slot, seconds, at_s in timed:
            _record(slot, seconds, cycle, probe_s, at_s)
        cycle += 1
        running = [slot for slot in running if slot.active]
        out = sum(spent.values()) >= rule.budget_s * len(slots)  # a group the repeat floor kept past its own
        enough = _stopped_pairs(running, rule, spent, cycle, out)
        left = [slot for slot in running if not slot.stop]
        newly = _finished_groups(slots, done)  # points whose every measurement has stopped (or failed)
        if not left:
            step(f"cycle {cycle}: {enough}/{len(running)} precise or capped", newly)
            break
        budget = rule.budget_s * len(left)
        used = sum(spent.get(pairs, 0.0) for pairs in {slot.pairs for slot in left})
        step(f"cycle {cycle}: {len(left)}/{len(slots)} measurements timed, {used:.0f}/{budget:.0f} s of theirs", newly)
        if after_cycle is not None:
            after_cycle()
    return cycle


def run_sequential(
    slots: list[Slot],
    probe: Slot,
    timer: Timer,
    rule: StopRule,
    *,
    warmup: int,
    prime: bool = False,
    progress: Progress | None = None,
) -> int:
    """Time each slot's repeats back to back, in the given order, each slot warmed up again just before its
    repeats and the probe timed then; returns the largest number of repeats a slot got (repeat k is cycle k)."""
    step = progress or (lambda description, steps=1: None)
    started = time.perf_counter()
    step(f"timing {len(slots)} measurements one after another", 1)
    done: set[object] = set()
    for slot in slots:
        if _guarded(slot, lambda slot=slot: _warm(slot, timer, warmup)) is None and not slot.active:
            step(f"{len(done)} points timed", _finished_groups(slots, done))
            continue
        probe_s = statistics.median(timer.once(probe.call, probe.block) for _ in range(3))
        spent = 0.0
        while slot.active:
            seconds = _guarded(slot, lambda slot=slot: _timed(slot, timer, prime))
            if seconds is None:
                break
            _record(slot, seconds, len(slot.times_ms), probe_s, time.perf_counter() - started)
            _record(probe, probe_s, len(probe.times_ms), probe_s, time.perf_counter() - started)
            spent += seconds * slot.block
            slot.stop = rule.finished(slot.times_ms)
            if not slot.stop and len(slot.times_ms) >= rule.min_repeats and spent + seconds > rule.budget_s:
                slot.stop = "budget"
            if slot.stop:
                break
        newly = _finished_groups(slots, done)  # a slot not yet timed keeps its group unfinished
        if newly:
            step(f"{len(done)} points timed", newly)
    return max((len(slot.times_ms) for slot in slots), default=0)
