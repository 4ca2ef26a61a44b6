"""The speed tables' rows, built from a schedule's slots: one row per (variant, axis value, N, stage) in
``speed.csv`` (schema.SPEED_COLUMNS), one per timed repeat in ``samples.csv`` (schema.SAMPLE_COLUMNS).

Letters: N instances, K bases, M attention side, R mask side. A point with a failed measurement gives rows of
status ``oom`` or ``error`` at that N (every N when a per-image stage failed), with the failure's message.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import pandas as pd
import torch

from bmbench.bench.drift import ratio_stats
from bmbench.bench.memory import merge_working_set_bytes
from bmbench.bench.options import SweepConfig
from bmbench.bench.plan import PER_IMAGE_STAGES, MeasurementKey, SweepPoint
from bmbench.bench.schedule import Slot
from bmbench.bench.timer import Measurement
from bmbench.schema import SAMPLE_COLUMNS, SPEED_COLUMNS, STAGES

NATIVE_ERROR_CHARS = 2000  # of a failure's native stderr (a C++ stack dump) kept in the row's error
_EMPTY_STATS: dict[str, Any] = {
    "median_ms": math.nan,
    "iqr_ms": math.nan,
    "mean_ms": math.nan,
    "min_ms": math.nan,
    "n": 0,
    "block": 0,
    "noisy": False,
    "first_ms": math.nan,
    "ci_low_ms": math.nan,
    "ci_high_ms": math.nan,
    "rel_ci": math.nan,
    "precise": False,
    "stop": "",
    "peak_alloc_mb": math.nan,
    "ratio_to_ref": math.nan,
    "ratio_ci_low": math.nan,
    "ratio_ci_high": math.nan,
}


def failure_status(err: BaseException) -> str:
    """``oom`` for out-of-memory (CUDA's error, or the CPU allocator's message), else ``error``."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return "oom"
    text = str(err).lower()
    return "oom" if "out of memory" in text or "can't allocate memory" in text else "error"


def error_text(failure: BaseException, native: str = "") -> str:
    """A failure as one line for the row's ``error``: its type and first line, then what native code printed."""
    text = f"{type(failure).__name__}: {failure}".splitlines()[0][:300]
    native = " ".join(native.split())
    return f"{text} [native stderr: {native[:NATIVE_ERROR_CHARS]}]" if native else text


def point_base(config: SweepConfig, point: SweepPoint, num: int) -> dict[str, Any]:
    """The columns every row of a point at N shares (what was measured, where, and the merge's working set)."""
    spec = point.spec
    element = torch.empty((), dtype=config.torch_dtype).element_size()
    working_set = merge_working_set_bytes(
        spec, num_instances=num, image_size=config.image_size, trunk=config.trunk, dtype_bytes=element
    )
    return {
        "variant": point.variant,
        "spec": str(spec),
        "family": spec.family,
        **{key: getattr(spec, key) for key in ("K", "M", "R", "S")},
        "axis": config.axis,
        "axis_value": point.axis_value,
        "axis_applies": point.axis_applies,
        "instances": num,
        "device": str(config.device),
        "dtype": config.dtype,
        "trunk": config.trunk,
        "image_size": config.image_text,
        "threads": config.threads,
        "compiled": config.compile,
        "merge_ws_mb": working_set / 2**20,
        "schedule": config.schedule,
    }


def measured_stats(measured: Measurement, ref_ms: list[float] | None = None) -> dict[str, Any]:
    """A Measurement's columns, with ``ratio_to_ref`` when the probe's times of the same cycles are given."""
    stats: dict[str, Any] = measured.stats() | measured.interval_stats() | {"status": "ok", "error": ""}
    stats["peak_alloc_mb"] = measured.peak_bytes / 2**20
    if ref_ms is None:
        return stats | {"ratio_to_ref": math.nan, "ratio_ci_low": math.nan, "ratio_ci_high": math.nan}
    return stats | ratio_stats(list(measured.times_ms), ref_ms)


def failed_stats(status: str, error: str) -> dict[str, Any]:
    return _EMPTY_STATS | {"status": status, "error": error}


def slot_measurement(slot: Slot, precision: float) -> Measurement:
    return Measurement(
        tuple(slot.times_ms), slot.first_ms, precision=precision, stop=slot.stop or "budget", block=slot.block
    )


def sweep_rows(
    config: SweepConfig, points: list[SweepPoint], keys: list[MeasurementKey], slots: list[Slot], natives: list[str]
) -> list[dict[str, Any]]:
    """One row per (point, N, stage), points in plan order and N ascending. A failure at a point's N fails every
    stage there; a per-image stage's failure fails the point at every N. `natives`: what native code printed during
    the schedule, attached to failures."""
    native = " ".join(natives)
    by_key = dict(zip(keys, slots, strict=True))
    rows: list[dict[str, Any]] = []
    for index, point in enumerate(points):
        mine = {key: slot for key, slot in by_key.items() if key.point == index}
        per_image = {key.stage: slot for key, slot in mine.items() if key.stage in PER_IMAGE_STAGES}
        for num in sorted(config.instances):
            at_n = {key.stage: slot for key, slot in mine.items() if key.instances == num} | per_image
            failure = next((slot.error for slot in at_n.values() if slot.error is not None), None)
            base = point_base(config, point, num)
            for stage in STAGES:
                if failure is not None:
                    stats = failed_stats(failure_status(failure), error_text(failure, native))
                else:
                    slot = at_n[stage]
                    stats = measured_stats(slot_measurement(slot, config.precision), slot.ref_ms)
                rows.append(base | {"stage": stage} | stats)
    if native.strip() and not any(slot.error for slot in slots):  # not a failure: shown where it would have been
        sys.stderr.write(native)
    return rows


def sample_rows(points: list[SweepPoint], keys: list[MeasurementKey], slots: list[Slot]) -> pd.DataFrame:
    """Every timed repeat (schema.SAMPLE_COLUMNS)."""
    rows = []
    for key, slot in zip(keys, slots, strict=True):
        point = points[key.point]
        base = {
            "variant": point.variant,
            "spec": str(point.spec),
            "axis_value": point.axis_value,
            "axis_applies": point.axis_applies,
            "instances": key.instances,
            "stage": key.stage,
        }
        rows += [
            base | {"cycle": cycle, "ms": ms, "ref_ms": ref, "at_s": at}
            for ms, cycle, ref, at in zip(slot.times_ms, slot.cycles, slot.ref_ms, slot.at_s, strict=True)
        ]
    frame = pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))
    frame["axis_value"] = frame["axis_value"].astype("Int64")
    return frame


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> a DataFrame with SPEED_COLUMNS in order and nullable integer columns."""
    frame = pd.DataFrame(rows, columns=list(SPEED_COLUMNS))
    for column in ("K", "M", "R", "S", "axis_value"):
        frame[column] = frame[column].astype("Int64")
    frame["precise"] = frame["precise"].astype(bool)
    return frame
