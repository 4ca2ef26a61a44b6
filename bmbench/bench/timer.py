"""The one timer: warm-up, synchronisation, repeats within a time budget, and robust statistics.

A run is a callable that takes a ``section`` factory (see bench/workload.py) and wraps its stages in it; the timer
times the whole call (``total``) and each section in the same run, so one repeat of a point gives every stage.
On the CPU it reads ``time.perf_counter`` (or an injected clock); on CUDA it records events on the current stream
and synchronises once per repeat, so sections do not serialise the GPU. Statistics follow ``torch.utils.benchmark``:
median and IQR, and a point is noisy when IQR / median exceeds 10 %.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from bmbench.device import synchronize

NOISY_IQR_RATIO = 0.10  # IQR / median above this flags a point (torch.utils.benchmark's threshold)
DEFAULT_MAX_REPEATS = 50

Run = Callable[[Callable[[str], Any]], object]


@dataclass(frozen=True)
class Measurement:
    """Timed repeats of one stage of one point, in milliseconds."""

    times_ms: tuple[float, ...]  # the timed repeats, after warm-up
    first_ms: float  # the first warm-up run (compilation, allocation, autotuning show here); nan without warm-up

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

    Per point: up to ``warmup`` untimed runs (stopping early once they have used the budget), then timed repeats
    until the next one would overrun ``budget_s`` (at least ``min_repeats``, at most ``max_repeats``). A run slower
    than the budget therefore runs twice in all: one warm-up, one timed.
    """

    def __init__(
        self,
        *,
        device: torch.device,
        budget_s: float,
        warmup: int = 1,
        min_repeats: int = 1,
        max_repeats: int = DEFAULT_MAX_REPEATS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if budget_s <= 0 or warmup < 0 or not 1 <= min_repeats <= max_repeats:
            raise ValueError(f"bad timer settings: budget_s={budget_s}, warmup={warmup}, repeats {min_repeats}..")
        self.device = device
        self.budget_s = budget_s
        self.warmup = warmup
        self.min_repeats = min_repeats
        self.max_repeats = max_repeats
        self.clock = clock

    @property
    def kind(self) -> str:
        """Which clock: ``cuda-events`` or ``perf_counter``."""
        return "cuda-events" if self.device.type == "cuda" else "perf_counter"

    def _once(self, run: Run) -> dict[str, float]:
        laps = _CudaLaps(self.device) if self.device.type == "cuda" else _CpuLaps(self.clock)
        laps.begin()
        run(laps.section)
        return laps.end()

    def measure(self, run: Run, *, warmup: int | None = None) -> dict[str, Measurement]:
        """Time ``run(section)``: a Measurement per section and for ``total``. ``warmup`` overrides the timer's."""
        warmup = self.warmup if warmup is None else warmup
        gc.collect()
        first, spent = float("nan"), 0.0
        for index in range(warmup):
            seconds = self._once(run)["total"]
            first = seconds * 1e3 if index == 0 else first
            spent += seconds
            if spent >= self.budget_s:
                break
        repeats: list[dict[str, float]] = []
        while True:
            repeats.append(self._once(run))
            timed = [r["total"] for r in repeats]
            if len(repeats) >= self.max_repeats:
                break
            if len(repeats) >= self.min_repeats and sum(timed) + timed[-1] > self.budget_s:
                break
        return {
            name: Measurement(tuple(r[name] * 1e3 for r in repeats), first if name == "total" else float("nan"))
            for name in repeats[0]
        }

    def measure_fn(self, fn: Callable[[], object], *, warmup: int | None = None) -> Measurement:
        """Time a plain callable as one section."""
        return self.measure(lambda section: fn(), warmup=warmup)["total"]
