"""The speed sweep: variants × axis values × instance counts, declared as data (bench/plan.py), timed in cycles or
one measurement after another (bench/schedule.py), one tidy row per (variant, axis value, N, stage) (bench/rows.py).

Letters: N instances, K bases, M attention side, R mask side. Each stage (bottom, top, merge with the parameter
gather, paste) is timed on its own, on the inputs the previous stage produced, and the whole branch as ``total``.
Every point at every N holds its own inputs, so that a cycle can visit them in any order. A drift probe
(bench/drift.py), sized to the sweep's median measurement, is timed in every cycle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from bmbench.bench.drift import build_probe, drift_summary
from bmbench.bench.options import SweepConfig
from bmbench.bench.plan import (
    PER_IMAGE_STAGES,
    MeasurementKey,
    Skipped,
    SweepPoint,
    plan_measurements,
    plan_points,
)
from bmbench.bench.rows import (
    error_text,
    failed_stats,
    failure_status,
    measured_stats,
    point_base,
    sample_rows,
    sweep_rows,
    to_frame,
)
from bmbench.bench.schedule import Progress, Slot, StopRule, run_interleaved, run_sequential, warm_up
from bmbench.bench.timer import Timer
from bmbench.bench.workload import (
    Instances,
    MaskBranchWorkload,
    build_end_to_end,
    build_mask_head,
    compile_stages,
    random_inputs,
    sample_instances,
)

END_TO_END_STAGES = ("detector", "end_to_end")
CHECKPOINT_EVERY_S = 30.0  # an interleaved sweep writes its rows so far at most this often


@dataclass
class SweepResult:
    frame: pd.DataFrame  # SPEED_COLUMNS, one row per (variant, axis value, N, stage)
    skipped: list[Skipped] = field(default_factory=list)
    wall_s: float = 0.0
    samples: pd.DataFrame | None = None  # SAMPLE_COLUMNS: every timed repeat, the probe's included
    drift: dict[str, Any] = field(default_factory=dict)  # bench.drift.drift_summary of the probe
    cycles: int = 0  # timed cycles (sequential: the most repeats of one measurement)


@contextlib.contextmanager
def torch_settings(config: SweepConfig) -> Iterator[None]:
    """Threads (and cudnn.benchmark on CUDA) for the sweep, restored afterwards."""
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    torch.set_num_threads(config.threads)
    torch.backends.cudnn.benchmark = config.device.type == "cuda"
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = benchmark


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """While inside, file descriptor 2 goes to a temporary file: C++ code writes there directly (torchvision's
    stable-ABI boundary prints a stack dump for every exception, an allocation failure included), and that must not
    reach the user's terminal. Python's ``sys.stderr`` keeps writing where it did. On exit the yielded list holds
    the captured text. Where fd 2 cannot be redirected (no such descriptor), nothing is captured."""
    captured: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield captured
        return
    python_stderr = sys.stderr
    swapped = False
    try:
        swapped = python_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a captured stream (pytest, CliRunner) has no descriptor
        pass
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        if swapped:
            sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=getattr(python_stderr, "encoding", None))
        try:
            yield captured
        finally:
            if swapped:
                sys.stderr.flush()
                sys.stderr.close()
                sys.stderr = python_stderr
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def build_point_workload(
    config: SweepConfig,
    point: SweepPoint,
    inputs: tuple[dict[str, torch.Tensor], list[torch.Tensor]],
    instances: Instances,
) -> MaskBranchWorkload:
    """The point's head (seeded weights) on the shared inputs; compiled stages when the config asks."""
    head = build_mask_head(
        point.spec, trunk=config.trunk, seed=config.seed, device=config.device, dtype=config.torch_dtype
    )
    features, box_tower = inputs
    stages = compile_stages(head) if config.compile else None
    return MaskBranchWorkload(head, features, box_tower, instances, config.image_size, stages)


def make_timer(config: SweepConfig) -> Timer:
    """The sweep's timer: budget, warm-up, repeat floor and cap, precision and block length from the config."""
    return Timer(
        device=config.device,
        budget_s=config.budget_s,
        warmup=config.warmup,
        min_repeats=config.min_repeats,
        max_repeats=config.max_repeats,
        precision=config.precision,
        min_block_s=config.min_block_ms / 1e3,
    )


def _failing(err: BaseException) -> Callable[[], object]:
    def call() -> object:
        raise err

    return call


def build_slots(
    config: SweepConfig,
    points: list[SweepPoint],
    keys: list[MeasurementKey],
    inputs: tuple[dict[str, torch.Tensor], list[torch.Tensor]],
    everyone: Instances,
    timer: Timer,
) -> tuple[list[Slot], dict[int, MaskBranchWorkload]]:
    """A slot per measurement key, each on inputs of its own point and N (the stages run once to produce them,
    timed: each slot's ``primed_s``, and the four together ``total``'s, which then has run once stage by stage);
    a point whose head or inputs cannot be built gives slots that fail at their first call. Also the largest-N
    workload of every point (the end-to-end pass reuses it)."""
    calls: dict[tuple[int, int], dict[str, Callable[[], object]]] = {}
    primed: dict[tuple[int, int], dict[str, float]] = {}
    workloads: dict[int, MaskBranchWorkload] = {}
    largest = max(config.instances)
    for index, point in enumerate(points):
        try:
            workloads[index] = build_point_workload(config, point, inputs, everyone.head(largest))
        except Exception as err:  # noqa: BLE001 - a point that cannot be built is a failed result
            for num in config.instances:
                calls[(index, num)] = dict.fromkeys((*PER_IMAGE_STAGES, "merge", "paste", "total"), _failing(err))
            continue
        for num in config.instances:
            workload = dataclasses.replace(workloads[index], instances=everyone.head(num))
            seconds = primed.setdefault((index, num), {})
            try:
                calls[(index, num)] = workload.stage_calls(_timed_first(timer, seconds)) | {"total": workload.run}
            except Exception as err:  # noqa: BLE001 - recorded on the point's slots
                calls[(index, num)] = dict.fromkeys((*PER_IMAGE_STAGES, "merge", "paste", "total"), _failing(err))
                seconds.clear()
            if seconds:
                seconds["total"] = sum(seconds.values())
    slots = [
        Slot(
            call=calls[(key.point, key.instances)][key.stage],
            group=key.point,
            pairs=(points[key.point].variant, key.stage),  # what one fit reads (bench/paired.py fit_groups)
            primed_s=primed.get((key.point, key.instances), {}).get(key.stage, math.nan),
        )
        for key in keys
    ]
    return slots, workloads


def _timed_first(timer: Timer, seconds: dict[str, float]) -> Callable[[str, Callable[[], Any]], Any]:
    """A stage's first call, made through the timer: its seconds go into `seconds` and its output comes back."""

    def first(stage: str, fn: Callable[[], Any]) -> Any:
        out: list[Any] = []
        seconds[stage] = timer.once(lambda: out.append(fn()))
        return out[0]

    return first


def stop_rule(config: SweepConfig) -> StopRule:
    return StopRule(
        precision=config.precision,
        min_repeats=config.min_repeats,
        max_repeats=config.max_repeats,
        budget_s=config.budget_s,
    )


def run_sweep(
    config: SweepConfig,
    *,
    progress: Progress | None = None,
    checkpoint: Callable[[pd.DataFrame], None] | None = None,
) -> SweepResult:
    """Measure every point on the config's schedule; ``progress(description, steps)`` reports the way,
    ``checkpoint(frame)`` receives the rows so far now and then. Out-of-memory and other failures of a point are
    recorded as rows and the sweep goes on."""
    started = time.perf_counter()
    points, skipped = plan_points(config)
    keys = plan_measurements(points, config.instances)
    step = progress or (lambda description, steps=1: None)
    natives: list[str] = []
    with torch_settings(config):
        timer = make_timer(config)
        inputs = random_inputs(
            config.image_size, trunk=config.trunk, seed=config.seed, device=config.device, dtype=config.torch_dtype
        )
        everyone = sample_instances(max(config.instances), config.image_size, seed=config.seed, device=config.device)
        step(f"building and warming up {len(keys)} measurements", 0)
        with native_stderr_captured() as native:
            slots, workloads = build_slots(config, points, keys, inputs, everyone, timer)
            interleaved = config.schedule == "interleaved"
            # Interleaved: the timed first calls made while building count as the warm-up (every stage, and the
            # whole branch stage by stage, has then run once on its own inputs).
            seconds = warm_up(slots, timer, config.warmup, seed=config.seed, shuffle=interleaved, primed=interleaved)
        natives += native
        measured = [s for s in seconds if s == s]  # not nan: the slots that ran
        probe_spec = build_probe(
            statistics.median(measured) if measured else 1e-3,
            timer,
            device=config.device,
            dtype=config.torch_dtype,
            seed=config.seed,
            side=config.probe_side,
        )
        probe = Slot(call=probe_spec.call, group="probe")
        warm_up([probe], timer, max(config.warmup, 1), seed=config.seed, shuffle=False)
        last = [time.perf_counter()]

        def after_cycle() -> None:
            if checkpoint is not None and time.perf_counter() - last[0] >= CHECKPOINT_EVERY_S:
                checkpoint(to_frame(sweep_rows(config, points, keys, slots, [])))
                last[0] = time.perf_counter()

        with native_stderr_captured() as native:
            if interleaved:
                cycles = run_interleaved(
                    slots,
                    probe,
                    timer,
                    stop_rule(config),
                    seed=config.seed,
                    prime=config.prime,
                    progress=step,
                    after_cycle=after_cycle,
                )
            else:
                cycles = run_sequential(
                    slots, probe, timer, stop_rule(config), warmup=config.warmup, prime=config.prime, progress=step
                )
        natives += native
        rows = sweep_rows(config, points, keys, slots, natives)
        samples = sample_rows(points, keys, slots)
        probe_rows = pd.DataFrame(
            {"stage": "probe", "cycle": probe.cycles, "ms": probe.times_ms, "ref_ms": probe.ref_ms, "at_s": probe.at_s}
        )
        samples = pd.concat([samples, probe_rows.reindex(columns=samples.columns)], ignore_index=True)
        drift = drift_summary(probe.times_ms, probe.at_s, probe_spec.description, probe_spec.side)
        branches = {
            point.variant: workloads[index]  # the variant's own spec: reused by the end-to-end pass
            for index, point in enumerate(points)
            if index in workloads and point.spec == dict(config.variants)[point.variant]
        }
        if config.end_to_end:
            rows += end_to_end_rows(config, timer, inputs, everyone, branches, step)
        del inputs, workloads, branches
        _release(config.device)
    return SweepResult(to_frame(rows), skipped, time.perf_counter() - started, samples, drift, cycles)


def end_to_end_rows(
    config: SweepConfig,
    timer: Timer,
    inputs: tuple[dict[str, torch.Tensor], list[torch.Tensor]],
    everyone: Instances,
    branches: dict[str, MaskBranchWorkload],
    step: Progress,
) -> list[dict[str, Any]]:
    """Each variant's whole model at its own spec and the largest N: rows ``detector`` (backbone + FPN + FCOS) and
    ``end_to_end`` (with the mask branch)."""
    rows: list[dict[str, Any]] = []
    num = max(config.instances)
    warmed = False
    for label, spec in config.variants:
        step(f"{label} end to end N={num}")
        point = SweepPoint(label, spec, getattr(spec, config.axis), spec.applies(config.axis))
        failure: BaseException | None = None
        with native_stderr_captured() as native:
            try:
                branch = branches.get(label)
                warm = warmed and branch is not None
                branch = branch or build_point_workload(config, point, inputs, everyone)
                branch.instances = everyone.head(num)
                whole = build_end_to_end(
                    spec, branch, trunk=config.trunk, seed=config.seed, device=config.device, dtype=config.torch_dtype
                )
                # The trunk is the same for every variant and a swept branch was warmed at this N by the sweep:
                # only the first whole model (and a branch the sweep did not run) needs a warm-up.
                measured = timer.measure(whole.run, warmup=0 if warm else config.warmup)
                warmed = True
                measured["end_to_end"] = measured.pop("total")
                del whole
            except Exception as err:  # noqa: BLE001 - recorded, the sweep goes on
                failure = err
        base = point_base(config, point, num)
        for stage in END_TO_END_STAGES:
            if failure is None:
                stats = measured_stats(measured[stage])
            else:
                stats = failed_stats(failure_status(failure), error_text(failure, native[0]))
            rows.append(base | {"stage": stage} | stats)
        _release(config.device)
    return rows
