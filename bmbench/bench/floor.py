"""Floor fits: the cost model ``t = a + b·x^p`` fitted to each point's fastest time over the cycles, with an
m-out-of-n bootstrap interval (draws of m < n cycles); which speed verdicts read first (schema.judged_exponent).

Letters: N instances, R mask side (or the swept K or M). Another process on the machine only ever adds time to a
call, and a longer call spans more of the scheduler's time slices, so it collects more of that delay: under load the
median of a large-R point rises more than a small one's, and an exponent fitted to medians steepens. Pairing within
a cycle cancels a slowdown that lasts the whole cycle, not one that hits single calls. The fastest call of many is
the estimate such delay leaves alone (BenchmarkTools.jl reads the minimum for the same reason: Chen and Revels,
"Robust benchmarking in noisy environments", 2016). Measured on the 2-core CPU VM, the demo sweep's merge against R
at N=100, five runs each: quiet, the floor p read 2.03-2.10 and the paired p 2.07-2.17; beside a training process
on both cores (the drift probe 96-163 % of its median), the floor p 2.02-2.29 and the paired p 2.18-2.43. Each
point's fastest call was 2-12 % slower under that load, its median 15-75 % slower. docs/speed.md has the tables.

A floor hides how often a machine is slow; the medians, their intervals and the drift probe in speed.csv keep that.

The interval resamples m = n^FLOOR_DRAW_POWER of the n cycles, not n. The plain bootstrap is inconsistent for a
minimum (Bickel and Freedman, 1981): a resample of n keeps the fastest call in about 63 % of draws, so the interval
comes out narrower than the spread between runs. Drawing m cycles with m/n -> 0 is the standard repair (the
m-out-of-n bootstrap: Bickel, Götze and van Zwet, 1997); left unscaled, as here, the interval is what a run of m
cycles would read, so it errs wide. Measured on five quiet back-to-back runs of the demo sweep (about 200 cycles
each for the merge), the merge's floor p against N at R=56: with m = n, 7 of the 10 pairs of runs' intervals
overlapped (widths ~0.02, estimates within 0.04); with m = n^0.8, 10 of 10.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bmbench.bench.paired import FIT_KEYS, MIN_PAIRED_CYCLES, cycle_table, fit_groups, with_fits, with_paired
from bmbench.bench.scaling import fit_cost, fit_powers

FLOOR_BOOTSTRAP = 1000  # resamples of the cycles behind the floor p's interval
FLOOR_SEED = 0
FLOOR_DRAW_POWER = 0.8  # cycles drawn per resample: n^0.8 of n (at least 3)
FLOOR_VALUES = ("p_floor", "p_floor_low", "p_floor_high")
FLOOR_COLUMNS = (*FIT_KEYS, *FLOOR_VALUES)


def draw_size(cycles: int) -> int:
    """How many of `cycles` one resample of the floor's interval draws: cycles^FLOOR_DRAW_POWER, rounded up, at
    least MIN_PAIRED_CYCLES (and at most all of them)."""
    return min(cycles, max(MIN_PAIRED_CYCLES, math.ceil(cycles**FLOOR_DRAW_POWER)))


def floor_fit(x: np.ndarray, times: np.ndarray, *, samples: int = FLOOR_BOOTSTRAP) -> tuple[float, float, float]:
    """p of the cost model fitted to the per-point minimum of ``times: [C, n]`` (C cycles, n points at ``x: [n]``),
    and the 95 % percentile interval of p over resamples of ``draw_size(C)`` of the C cycles. A fit whose times do
    not grow reads 0, as bench.scaling.bootstrap_p counts it."""
    x, times = np.asarray(x, dtype=float), np.asarray(times, dtype=float)
    p = fit_cost(x, times.min(0)).p
    rng = np.random.default_rng(FLOOR_SEED)
    drawn = rng.integers(0, len(times), size=(samples, draw_size(len(times))))  # [B, m]: cycles of each resample
    powers = np.nan_to_num(fit_powers(x, times[drawn].min(1)), nan=0.0)  # [B]
    low, high = np.percentile(powers, [2.5, 97.5])
    return float(np.nan_to_num(p, nan=0.0)), float(low), float(high)


def floor_fits(samples: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Floor fits per variant and stage, the same fits as bench.scaling.scaling_table, on the cycles holding every
    point of a fit (at least MIN_PAIRED_CYCLES). ``samples``: schema.SAMPLE_COLUMNS."""
    rows = []
    for variant, stage, column, at, group in fit_groups(samples, axis):
        table = cycle_table(group, column)
        if table.shape[1] < 3 or len(table) < MIN_PAIRED_CYCLES:
            continue
        p, low, high = floor_fit(table.columns.to_numpy(dtype=float), table.to_numpy(dtype=float))
        x = axis if column == "axis_value" else "N"
        rows.append(dict(zip(FLOOR_COLUMNS, (variant, stage, x, at, p, low, high), strict=True)))
    return pd.DataFrame(rows, columns=list(FLOOR_COLUMNS))


def with_cycle_fits(scaling: pd.DataFrame, samples: pd.DataFrame | None, axis: str) -> pd.DataFrame:
    """The scaling table with its paired and floor columns filled from `samples` (nan where a fit does not exist)."""
    paired = with_paired(scaling, samples, axis)
    fits = floor_fits(samples, axis) if samples is not None and not samples.empty else pd.DataFrame()
    return with_fits(paired, fits, FLOOR_VALUES)
