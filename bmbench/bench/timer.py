"""The one timer: warm-up, synchronisation, precision-driven repeats, and robust statistics.

``measure_fn`` times one callable (a stage on the inputs the previous stage produced, see bench/workload.py);
``measure`` times a run that wraps its stages in a ``section`` factory, each section and the whole (``total``) in
the same repeats. Repeats go on until the 95 % interval of the median is within ``precision`` of it (relative
half-width), or until the repeat cap or the time budget is reached; each Measurement says which stopped it.
On the CPU the timer reads ``time.perf_counter`` (or an injected clock); on CUDA it records events on the current
stream and synchronises once per repeat, after the region's stop event, so nothing inside a timed region
serialises the GPU; there it also records the peak allocated memory (``torch.cuda.max_memory_allocated``).
Statistics follow ``torch.utils.benchmark``: median and IQR, and a point is noisy when IQR / median exceeds 10 %.
The interval of the median is distribution-free: order statistics at binomial(n, 1/2) quantiles.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from bmbench.device import synchronize

NOISY_IQR_RATIO = 0.10  # IQR / median above this flags a point (torch.utils.benchmark's threshold)
DEFAULT_MAX_REPEATS = 50
DEFAULT_PRECISION = 0.03  # target: the 95 % interval of the median within ±3 % of it
CONFIDENCE = 0.95  # of the median's interval
# The fewest repeats with a distribution-free 95 % interval of the median: [min, max] of 6 covers it with
# probability 1 - 2 / 2^6 = 96.9 %; with 5 only 93.8 %. Fewer repeats never count as precise.
MIN_CI_REPEATS = 6

# With min_block_s > 0, a repeat of a run shorter than that times a block of back-to-back calls (as timeit's
# `number` and torch.utils.benchmark's blocked_autorange do) and records their mean per call. Off by default:
# measured on the 2-core VM (the default CPU sweep, two runs each way), 10-ms blocks gained nothing: 41 % and 51 %
# of rows within the precision target against 48 % and 46 %, two runs agreeing on 48 % of rows against 52 %. The
# spread there is not per-call jitter (and a block's mean takes in every interruption a median of calls sets aside).
DEFAULT_MIN_BLOCK_S = 0.0
MAX_BLOCK = 1000  # calls per repeat at most

Run = Callable[[Callable[[str], Any]], object]


def _binomial_cdf(k: int, n: int) -> float:
    """P(B <= k) for B ~ binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def median_interval(times: tuple[float, ...] | list[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The distribution-free interval of the median: sorted ``x[k]`` and ``x[n-1-k]`` with the largest k such that
    P(binomial(n, 1/2) <= k) <= (1 - confidence) / 2. With too few repeats for that (n < 6 at 95 %), ``[min, max]``,
    whose coverage is lower."""
    ordered = sorted(times)
    n, tail, k = len(ordered), (1 - confidence) / 2, 0
    while k + 1 < n - 1 - (k + 1) and _binomial_cdf(k + 1, n) <= tail:
        k += 1
    return ordered[k], ordered[n - 1 - k]


@dataclass(frozen=True)
class Measurement:
    """Timed repeats of one stage of one point, in milliseconds."""

    times_ms: tuple[float, ...]  # the timed repeats, after warm-up
    first_ms: float  # the first warm-up run (compilation, allocation, autotuning show here); nan without warm-up
    precision: float = DEFAULT_PRECISION  # the target relative half-width of the median's 95 % interval
    stop: str = ""  # what ended the repeats: precision, cap or budget
    peak_bytes: float = float("nan")  # CUDA: peak allocated memory over the repeats; nan on the CPU
    block: int = 1  # back-to-back calls per timed repeat (each time is their mean); of the latest round if pooled

    @property
    def n(self) -> int:
        return len(self.times_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.times_ms)

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)

    @property
    def iqr_ms(self) -> float:
        """Inter-quartile range (linear interpolation between order statistics); 0 for a single repeat."""
        if self.n < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.times_ms, n=4, method="inclusive")
        return q3 - q1

    @property
    def noisy(self) -> bool:
        median = self.median_ms
        return median > 0 and self.iqr_ms / median > NOISY_IQR_RATIO

    @property
    def ci_ms(self) -> tuple[float, float]:
        """The 95 % interval of the median (see median_interval)."""
        return median_interval(self.times_ms)

    @property
    def rel_ci(self) -> float:
        """The interval's larger half-width relative to the median (0.03: within ±3 %)."""
        low, high = self.ci_ms
        median = self.median_ms
        return max(median - low, high - median) / median if median > 0 else math.inf

    @property
    def precise(self) -> bool:
        """The median's 95 % interval exists (n >= MIN_CI_REPEATS) and lies within the precision target."""
        return self.n >= MIN_CI_REPEATS and self.rel_ci <= self.precision

    def interval_stats(self) -> dict[str, float | bool | str]:
        """The interval columns a results row carries beside stats()."""
        low, high = self.ci_ms
        return {
            "ci_low_ms": low,
            "ci_high_ms": high,
            "rel_ci": self.rel_ci,
            "precise": self.precise,
            "stop": self.stop,
            "block": self.block,
        }

    def stats(self) -> dict[str, float | int | bool]:
        """The columns a results row carries."""
        return {
            "median_ms": self.median_ms,
            "iqr_ms": self.iqr_ms,
            "mean_ms": self.mean_ms,
            "min_ms": self.min_ms,
            "n": self.n,
            "noisy": self.noisy,
            "first_ms": self.first_ms,
        }


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: as `timeit` does, so that no collector pause lands in a timed repeat
    (tensors are freed by reference counting all the same). Collecting before every measurement instead cost
    ~0.1-0.25 s a time with torch loaded, most of a sweep's wall time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _CpuLaps:
    """Section times from a host clock (CPU work is synchronous)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.spans: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = self.clock()
        try:
            yield
        finally:
            self.spans.setdefault(name, []).append(self.clock() - start)

    def begin(self) -> None:
        self.start = self.clock()

    def end(self) -> dict[str, float]:
        """Seconds per section (summed if a section repeats) and ``total``."""
        total = self.clock() - self.start
        return {name: sum(spans) for name, spans in self.spans.items()} | {"total": total}


class _CudaLaps:
    """Section times from CUDA events on the current stream; one synchronisation at the end of the run."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.spans: dict[str, list[tuple[torch.cuda.Event, torch.cuda.Event]]] = {}

    def _event(self) -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = self._event()
        try:
            yield
        finally:
            self.spans.setdefault(name, []).append((start, self._event()))

    def begin(self) -> None:
        synchronize(self.device)  # queued work from before must not count
        self.start = self._event()

    def end(self) -> dict[str, float]:
        stop = self._event()
        stop.synchronize()
        seconds = {name: sum(a.elapsed_time(b) for a, b in spans) / 1e3 for name, spans in self.spans.items()}
        return seconds | {"total": self.start.elapsed_time(stop) / 1e3}


class Timer:
    """Times runs on one device.

    Per measurement: up to ``warmup`` untimed runs (stopping early once they have used the budget), then timed
    repeats until the median's 95 % interval is within ``precision`` (after at least MIN_CI_REPEATS), or the next
    repeat would overrun ``budget_s`` (after at least ``min_repeats``), or ``max_repeats`` is reached. A run slower
    than the budget therefore runs twice in all: one warm-up, one timed. ``precision=0`` turns the target off.
    A run shorter than ``min_block_s`` (judged on the last untimed run) is timed in blocks of back-to-back calls
    that last about ``min_block_s``, each repeat the block's mean per call (0: one call per repeat).
    """

    def __init__(
        self,
        *,
        device: torch.device,
        budget_s: float,
        warmup: int = 1,
        min_repeats: int = 1,
        max_repeats: int = DEFAULT_MAX_REPEATS,
        precision: float = DEFAULT_PRECISION,
        min_block_s: float = DEFAULT_MIN_BLOCK_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if budget_s <= 0 or warmup < 0 or not 1 <= min_repeats <= max_repeats or precision < 0 or min_block_s < 0:
            raise ValueError(
                f"bad timer settings: budget_s={budget_s}, warmup={warmup}, repeats {min_repeats}..{max_repeats}, "
                f"precision={precision}, min_block_s={min_block_s}"
            )
        self.min_block_s = min_block_s
        self.device = device
        self.budget_s = budget_s
        self.warmup = warmup
        self.min_repeats = min_repeats
        self.max_repeats = max_repeats
        self.precision = precision
        self.clock = clock

    @property
    def kind(self) -> str:
        """Which clock: ``cuda-events`` or ``perf_counter``."""
        return "cuda-events" if self.device.type == "cuda" else "perf_counter"

    def once(self, fn: Callable[[], object], block: int = 1) -> float:
        """Seconds per call of `block` back-to-back calls of ``fn``: the one timed call a schedule makes (its
        synchronisation is the device's: CUDA events with one synchronisation, or the host clock)."""
        return self._once(lambda section: fn(), block)["total"]

    def _once(self, run: Run, block: int = 1) -> dict[str, float]:
        """Seconds per call of each section and of the whole, over `block` back-to-back calls."""
        laps = _CudaLaps(self.device) if self.device.type == "cuda" else _CpuLaps(self.clock)
        laps.begin()
        for _ in range(block):
            run(laps.section)
        return {name: seconds / block for name, seconds in laps.end().items()}

    def block_for(self, seconds: float) -> int:
        """Calls per timed repeat for a run that took `seconds`: enough to last ``min_block_s`` (1 when it does)."""
        if self.min_block_s <= 0 or seconds >= self.min_block_s:
            return 1
        return min(MAX_BLOCK, math.ceil(self.min_block_s / max(seconds, 1e-9)))

    def _stop(self, totals: list[float], *, before: int = 0, share: float = 1.0, block: int = 1) -> str:
        """Why to stop after these repeats (seconds per call), or '' to go on. `before`: repeats of earlier
        rounds, pooled with these ones (`totals` holds the pooled seconds, this round's last); `share`: this round's
        part of the budget and of the cap; `block`: this round's calls per repeat (the budget counts them all). A
        later round adds at least ceil(MIN_CI_REPEATS * share) repeats of its own before the precision target can
        stop it, so that every round weighs in the interval."""
        n, own = len(totals), len(totals) - before
        if n >= self.max_repeats or own >= max(1, math.ceil(self.max_repeats * share)):
            return "cap"
        if (
            self.precision > 0
            and n >= max(self.min_repeats, MIN_CI_REPEATS)
            and own >= math.ceil(MIN_CI_REPEATS * share)
        ):
            low, high = median_interval(totals)
            median = statistics.median(totals)
            if median > 0 and max(median - low, high - median) / median <= self.precision:
                return "precision"
        spent = sum(totals[before:]) * block
        if own >= self.min_repeats * share and spent + totals[-1] * block > self.budget_s * share:
            return "budget"
        return ""

    def measure(
        self,
        run: Run,
        *,
        warmup: int | None = None,
        before: dict[str, Measurement] | None = None,
        share: float = 1.0,
    ) -> dict[str, Measurement]:
        """Time ``run(section)``: a Measurement per section and for ``total``; the stopping rule reads ``total``.
        ``warmup`` overrides the timer's. With `before` (the same run's Measurements from earlier rounds) the
        repeats are pooled with those, and this round gets `share` of the budget and of the cap (see `_stop`)."""
        warmup = self.warmup if warmup is None else warmup
        with gc_paused():
            return self._measure(run, warmup, before, share)

    def _measure(
        self, run: Run, warmup: int, before: dict[str, Measurement] | None, share: float
    ) -> dict[str, Measurement]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        first, spent, last = float("nan"), 0.0, math.nan
        for index in range(warmup):
            last = self._once(run)["total"]
            first = last * 1e3 if index == 0 else first
            spent += last
            if spent >= self.budget_s:
                break
        if before:  # a later round keeps the block size of the first
            block = before["total"].block
        elif self.min_block_s > 0:
            if math.isnan(last):  # no warm-up: one untimed call to size the block
                last = self._once(run)["total"]
            block = self.block_for(last)
        else:
            block = 1
        earlier = [t / 1e3 for t in before["total"].times_ms] if before else []
        repeats: list[dict[str, float]] = []
        while True:
            repeats.append(self._once(run, block))
            stop = self._stop(earlier + [r["total"] for r in repeats], before=len(earlier), share=share, block=block)
            if stop:
                break
        peak = float(torch.cuda.max_memory_allocated(self.device)) if cuda else float("nan")
        measured = {}
        for name in repeats[0]:
            old = before.get(name) if before else None
            measured[name] = Measurement(
                (old.times_ms if old else ()) + tuple(r[name] * 1e3 for r in repeats),
                old.first_ms if old else (first if name == "total" else float("nan")),
                precision=self.precision,
                stop=stop,
                peak_bytes=peak if old is None else max(peak, old.peak_bytes),
                block=block,
            )
        return measured

    def measure_fn(
        self,
        fn: Callable[[], object],
        *,
        warmup: int | None = None,
        before: Measurement | None = None,
        share: float = 1.0,
    ) -> Measurement:
        """Time a plain callable as one section (`before`, `share`: as in `measure`)."""
        earlier = None if before is None else {"total": before}
        return self.measure(lambda section: fn(), warmup=warmup, before=earlier, share=share)["total"]
