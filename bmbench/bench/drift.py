"""The drift probe: a fixed reference workload timed in every cycle, and what it says about the run.

The probe is a 3×3 convolution (64 channels in and out, one image of side S), the kind of work a mask head does,
sized once so that it lasts about the sweep's median measurement. Its time in a cycle is the machine's state in
that cycle: a stage's time divided by the probe's time in the same cycle (``ratio_to_ref``) cancels whatever slowed
both, which is what two runs of the same sweep on a shared machine mostly differ by. The probe's own times over the
run give its drift: min, median, max, and the trend (least-squares slope against time).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bmbench.bench.timer import Timer, median_interval

PROBE_CHANNELS = 64
PROBE_BASE_SIDE = 32  # the side the probe is first timed at, to size it
PROBE_SIDES = (8, 1024)  # the probe's side is clamped to this range
PROBE_CALIBRATION_CALLS = 3


@dataclass(frozen=True)
class Probe:
    """The reference workload: ``call()`` runs it once."""

    call: Callable[[], object]
    side: int  # S: the probe's image side
    description: str  # what it is, for meta.json and the console


def _probe_call(side: int, *, device: torch.device, dtype: torch.dtype, seed: int) -> Callable[[], object]:
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(1, PROBE_CHANNELS, side, side, generator=generator).to(device=device, dtype=dtype)
    weight = torch.randn(PROBE_CHANNELS, PROBE_CHANNELS, 3, 3, generator=generator).to(device=device, dtype=dtype)

    def call() -> object:
        with torch.inference_mode():
            return F.conv2d(image, weight, padding=1)

    return call


def build_probe(
    target_s: float,
    timer: Timer,
    *,
    device: torch.device,
    dtype: torch.dtype,
    seed: int = 0,
    side: int | None = None,
) -> Probe:
    """A probe whose one call lasts about `target_s` on this device: timed at PROBE_BASE_SIDE, then its side
    scaled by the square root of the time ratio (a convolution's work grows with the image's area). A given `side`
    skips the sizing: runs whose ratios are to be compared must share one probe (`bmbench speed --runs` sizes it in
    the first run; `--probe-side` pins it across commands)."""
    if side is None:
        base = _probe_call(PROBE_BASE_SIDE, device=device, dtype=dtype, seed=seed)
        base()  # first-call costs (kernel selection, allocation) stay out of the sizing
        seconds = statistics.median(timer.once(base) for _ in range(PROBE_CALIBRATION_CALLS))
        scale = math.sqrt(max(target_s, 1e-7) / max(seconds, 1e-9))
        side = round(PROBE_BASE_SIDE * scale)
    side = int(min(max(side, PROBE_SIDES[0]), PROBE_SIDES[1]))
    text = f"conv2d 3x3 {PROBE_CHANNELS}->{PROBE_CHANNELS} on 1x{PROBE_CHANNELS}x{side}x{side}"
    return Probe(_probe_call(side, device=device, dtype=dtype, seed=seed), side, text)


def ratio_stats(times_ms: list[float], ref_ms: list[float]) -> dict[str, float]:
    """``ratio_to_ref``: the median over cycles of a measurement's time divided by the probe's time in the same
    cycle, with the distribution-free 95 % interval of that median (bench.timer.median_interval)."""
    ratios = [t / r for t, r in zip(times_ms, ref_ms, strict=True) if r > 0]
    if not ratios:
        return {"ratio_to_ref": math.nan, "ratio_ci_low": math.nan, "ratio_ci_high": math.nan}
    low, high = median_interval(ratios)
    return {"ratio_to_ref": statistics.median(ratios), "ratio_ci_low": low, "ratio_ci_high": high}


def drift_summary(
    ref_ms: list[float], at_s: list[float], description: str, side: int = 0
) -> dict[str, float | int | str]:
    """The probe's times over the run: min, median and max (ms), their range relative to the median, and the trend:
    the least-squares slope of time/median against minutes since the start (% per minute) and over the run (%)."""
    if not ref_ms:
        return {"probe": description, "probe_side": side, "cycles": 0}
    times, minutes = np.asarray(ref_ms, dtype=float), np.asarray(at_s, dtype=float) / 60
    median = float(np.median(times))
    span = float(minutes.max() - minutes.min())
    slope = float(np.polyfit(minutes, times / median, 1)[0]) if len(times) >= 3 and span > 0 else math.nan
    return {
        "probe": description,
        "probe_side": side,
        "cycles": len(times),
        "ref_ms_min": round(float(times.min()), 4),
        "ref_ms_median": round(median, 4),
        "ref_ms_max": round(float(times.max()), 4),
        "range_pct": round(100 * float(times.max() - times.min()) / median, 1),
        "trend_pct_per_min": round(100 * slope, 2),
        "trend_pct_over_run": round(100 * slope * span, 1),
        "minutes": round(span, 2),
    }


def drift_text(drift: dict[str, float | int | str]) -> str:
    """One line for the console."""
    if not drift.get("cycles"):
        return "drift probe: no cycles timed"
    return (
        f"drift probe ({drift['probe']}): {drift['ref_ms_median']:.3g} ms median over {drift['cycles']} cycles "
        f"(min {drift['ref_ms_min']:.3g}, max {drift['ref_ms_max']:.3g}: a {drift['range_pct']:.0f} % range), "
        f"trend {drift['trend_pct_per_min']:+.1f} % per minute ({drift['trend_pct_over_run']:+.0f} % over "
        f"{drift['minutes']:.1f} min)"
    )
