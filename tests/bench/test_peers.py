"""The floors-and-peers table's timing: alternating passes with pooled repeats, errors and skipped rows kept."""

from __future__ import annotations

import pytest
import torch

from bmbench.bench.peers import _timed_rows
from bmbench.bench.timer import Timer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rows_are_timed_in_alternating_passes_and_pooled() -> None:
    clock, calls = FakeClock(), []

    def job(name: str, seconds: float):
        def fn() -> torch.Tensor:
            calls.append(name)
            clock.now += seconds
            return torch.ones(2)

        return ({"row": name}, fn, torch.ones(2))

    def broken() -> torch.Tensor:
        raise RuntimeError("no compiler")

    timer = Timer(device=torch.device("cpu"), budget_s=0.75, warmup=1, min_repeats=2, precision=0.0, clock=clock)
    jobs = [
        job("a", 0.1),
        job("b", 0.11),
        ({"row": "c"}, broken, None),
        ({"row": "d", "status": "skipped"}, None, None),
    ]
    rows = _timed_rows(timer, jobs, rounds=3)
    # each pass times a, then b: the rows alternate over the run instead of one row's repeats all at once
    order = [name for i, name in enumerate(calls) if i == 0 or calls[i - 1] != name]
    assert order == ["a", "b"] * 3
    # the first pass: the output call, one warm-up, two timed; later passes: two timed, no warm-up
    assert calls.count("a") == 1 + 1 + 2 * 3
    a, b, c, d = rows
    assert a["median_ms"] == pytest.approx(100.0) and b["median_ms"] == pytest.approx(110.0)
    assert a["n"] == 6 and b["n"] == 6  # two repeats a pass (a third of the budget, 0.25 s), pooled
    assert a["equivalent"] is True and b["equivalent"] is True
    assert c["status"] == "error" and c["error"] == "RuntimeError: no compiler" and "median_ms" not in c
    assert d == {"row": "d", "status": "skipped"}
