"""Profiler traces of the mask branch, in a pass of its own after timing so that it never perturbs the timings.

Each stage runs inside a ``record_function`` range named ``<variant>/<stage>`` (and the whole branch inside
``<variant>/total``). Traces go through ``tensorboard_trace_handler``: open them in TensorBoard with the
torch-tb-profiler plugin, or drop the ``.pt.trace.json`` file on https://ui.perfetto.dev.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile, record_function, schedule, tensorboard_trace_handler

from bmbench.bench.timer import Run
from bmbench.device import synchronize

# One skipped step, one warm-up step (profiler running, events dropped), one recorded step.
PROFILE_SCHEDULE = {"wait": 1, "warmup": 1, "active": 1}
OPERATOR_COLUMNS = ("operator", "calls", "self_cpu_ms", "self_device_ms", "cpu_total_ms", "device_total_ms")


def trace_name(text: str) -> str:
    """A file-name-safe worker name for a trace."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def profile_run(run: Run, *, label: str, trace_dir: Path, device: torch.device, worker: str) -> pd.DataFrame:
    """Profile ``run(section)`` over the schedule, write its trace into ``trace_dir`` and return the per-operator
    table of the active step (OPERATOR_COLUMNS, milliseconds, by self CPU time)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    Path(trace_dir).mkdir(parents=True, exist_ok=True)
    steps = sum(PROFILE_SCHEDULE.values())
    with profile(
        activities=activities,
        schedule=schedule(**PROFILE_SCHEDULE, repeat=1),
        on_trace_ready=tensorboard_trace_handler(str(trace_dir), worker_name=trace_name(worker)),
    ) as profiler:
        for _ in range(steps):
            with record_function(f"{label}/total"):
                run(lambda stage: record_function(f"{label}/{stage}"))
            synchronize(device)
            profiler.step()
    return operator_table(profiler)


def operator_table(profiler: profile) -> pd.DataFrame:
    """``key_averages()`` as a DataFrame: per operator (and per named range), calls and self / total times."""
    rows = [
        {
            "operator": event.key,
            "calls": event.count,
            "self_cpu_ms": event.self_cpu_time_total / 1e3,
            "self_device_ms": getattr(event, "self_device_time_total", 0.0) / 1e3,
            "cpu_total_ms": event.cpu_time_total / 1e3,
            "device_total_ms": getattr(event, "device_time_total", 0.0) / 1e3,
        }
        for event in profiler.key_averages()
    ]
    frame = pd.DataFrame(rows, columns=list(OPERATOR_COLUMNS))
    return frame.sort_values("self_cpu_ms", ascending=False, ignore_index=True)
