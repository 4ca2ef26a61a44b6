"""The speed sweep: variants × axis values × instance counts, declared as data and expanded as a product; one tidy
row per (variant, axis value, N, stage).

Letters: N instances, K bases, M attention side, R mask side. A point is a variant at one axis value with N
instances. Each stage (bottom, top, merge with the parameter gather, paste) is timed on its own, on the inputs the
previous stage produced, with its own repeats until its median's 95 % interval reaches the precision target (or
the cap or budget); the whole branch is timed the same way as ``total``. Bottom and top read no per-instance input:
they are timed once per spec (per round), at its first N, and that measurement is the row at every N.

Rounds: the sweep passes over every point `rounds` times, each pass with a 1/rounds share of every measurement's
budget and cap, and each point's repeats are pooled over the passes. A machine's state drifts over minutes (load,
clocks, caches), more than between back-to-back repeats; spreading a point's repeats over the whole sweep puts that
drift inside its interval, so that a second run's median falls within it.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from bmbench.bench.memory import merge_working_set_bytes
from bmbench.bench.options import SweepConfig
from bmbench.bench.timer import Measurement, Timer
from bmbench.bench.workload import (
    MASK_STAGES,
    Instances,
    MaskBranchWorkload,
    build_end_to_end,
    build_mask_head,
    compile_stages,
    random_inputs,
    sample_instances,
)
from bmbench.errors import BmbenchError
from bmbench.schema import SPEED_COLUMNS
from bmbench.variants import VariantSpec

TOTAL_STAGES = (*MASK_STAGES, "total")
END_TO_END_STAGES = ("detector", "end_to_end")
PER_IMAGE_STAGES = ("bottom", "top")  # no per-instance input: timed once per spec
NATIVE_ERROR_CHARS = 2000  # of a failure's native stderr (a C++ stack dump) kept in the row's error

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SweepPoint:
    """One variant at one axis value."""

    variant: str  # label as given
    spec: VariantSpec
    axis_value: int | None  # None when the variant has no such field (YOLACT and R)
    axis_applies: bool


@dataclass(frozen=True)
class Skipped:
    """A requested point that is not a valid spec (e.g. M > R)."""

    variant: str
    axis_value: int
    reason: str


@dataclass
class SweepResult:
    frame: pd.DataFrame  # SPEED_COLUMNS, one row per (variant, axis value, N, stage)
    skipped: list[Skipped] = field(default_factory=list)
    wall_s: float = 0.0


def plan_points(config: SweepConfig) -> tuple[list[SweepPoint], list[Skipped]]:
    """Expand variants × axis values. A variant the axis does not apply to gives one point at its own value; an
    invalid combination is skipped and listed. Raises BmbenchError when nothing is left to measure."""
    points: list[SweepPoint] = []
    skipped: list[Skipped] = []
    for label, spec in config.variants:
        if not spec.applies(config.axis):
            points.append(SweepPoint(label, spec, getattr(spec, config.axis), False))
            continue
        for value in config.values:
            try:
                points.append(SweepPoint(label, spec.with_params(**{config.axis: value}), value, True))
            except BmbenchError as err:
                skipped.append(Skipped(label, value, str(err)))
    if not points:
        reasons = "; ".join(f"{s.variant} {config.axis}={s.axis_value}: {s.reason}" for s in skipped)
        raise BmbenchError(f"nothing to measure: every point is invalid ({reasons})")
    return points, skipped


def count_steps(config: SweepConfig, points: list[SweepPoint]) -> int:
    """Progress steps: every (point, N), one end-to-end point per variant, one profiled point per point."""
    steps = len(points) * len(config.instances) * config.rounds
    steps += len(config.variants) if config.end_to_end else 0
    return steps + (len(points) if config.profile else 0)


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


def failure_status(err: BaseException) -> str:
    """``oom`` for out-of-memory (CUDA's error, or the CPU allocator's message), else ``error``."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return "oom"
    text = str(err).lower()
    return "oom" if "out of memory" in text or "can't allocate memory" in text else "error"


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


def error_text(failure: BaseException, native: str = "") -> str:
    """A failure as one line for the row's ``error``: its type and first line, then what native code printed."""
    text = f"{type(failure).__name__}: {failure}".splitlines()[0][:300]
    native = " ".join(native.split())
    return f"{text} [native stderr: {native[:NATIVE_ERROR_CHARS]}]" if native else text


def point_warmup(config: SweepConfig, *, first: bool, round_index: int = 0) -> int:
    """Warm-up runs before timing a point.

    On CUDA, and with compiled stages, every point warms up: a new N brings new shapes, hence cudnn autotuning,
    caching-allocator growth or a recompilation. On the CPU, eager, only a head's first (largest) N does: what a
    first run pays there (lazy initialisation, oneDNN primitive creation) is milliseconds, within the noise of a
    later N's first run, and large tensors are allocated afresh on every run anyway; warming each N would double
    the time of every point slower than the budget. For the same reason a later round does not warm up again on the
    CPU (the head ran in the first)."""
    if config.compile or config.device.type == "cuda":
        return config.warmup
    return config.warmup if first and round_index == 0 else 0


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _rows(
    config: SweepConfig,
    point: SweepPoint,
    num: int,
    stages: tuple[str, ...],
    measured: dict[str, Measurement] | None,
    error: str = "",
    status: str = "ok",
) -> list[dict[str, Any]]:
    spec = point.spec
    element = torch.empty((), dtype=config.torch_dtype).element_size()
    working_set = merge_working_set_bytes(
        spec, num_instances=num, image_size=config.image_size, trunk=config.trunk, dtype_bytes=element
    )
    base: dict[str, Any] = {
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
    }
    nan = float("nan")
    rows = []
    for stage in stages:
        if measured is not None and stage in measured:
            one = measured[stage]
            stats: dict[str, Any] = one.stats() | one.interval_stats() | {"status": "ok", "error": ""}
            stats["peak_alloc_mb"] = one.peak_bytes / 2**20
        else:
            stats = {"median_ms": nan, "iqr_ms": nan, "mean_ms": nan, "min_ms": nan, "n": 0, "block": 0}
            stats |= {
                "noisy": False,
                "first_ms": nan,
                "ci_low_ms": nan,
                "ci_high_ms": nan,
                "rel_ci": nan,
                "precise": False,
            }
            stats |= {"stop": "", "peak_alloc_mb": nan, "status": status, "error": error}
        rows.append(base | {"stage": stage} | stats)
    return rows


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> a DataFrame with SPEED_COLUMNS in order and nullable integer columns."""
    frame = pd.DataFrame(rows, columns=list(SPEED_COLUMNS))
    for column in ("K", "M", "R", "S", "axis_value"):
        frame[column] = frame[column].astype("Int64")
    frame["precise"] = frame["precise"].astype(bool)
    return frame


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


def measure_point(
    timer: Timer,
    workload: MaskBranchWorkload,
    warmup: int,
    per_image: dict[str, Measurement],
    before: dict[str, Measurement] | None = None,
    share: float = 1.0,
) -> dict[str, Measurement]:
    """Each stage alone on its inputs, then the whole branch as ``total``. ``per_image`` holds the bottom and top
    measurements of the spec once taken in this round (they do not depend on N) and is filled at the first call.
    `before`: this point's measurements from earlier rounds, pooled with this round's (which gets `share` of the
    budget and the cap, see Timer.measure)."""
    before = before or {}
    calls = workload.stage_calls()
    measured: dict[str, Measurement] = {}
    for stage, call in calls.items():
        if stage in PER_IMAGE_STAGES and stage in per_image:
            measured[stage] = per_image[stage]
            continue
        measured[stage] = timer.measure_fn(call, warmup=warmup, before=before.get(stage), share=share)
        if stage in PER_IMAGE_STAGES:
            per_image[stage] = measured[stage]
    del calls
    measured["total"] = timer.measure_fn(workload.run, warmup=warmup, before=before.get("total"), share=share)
    return measured


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


def run_sweep(
    config: SweepConfig,
    *,
    progress: Progress | None = None,
    checkpoint: Callable[[pd.DataFrame], None] | None = None,
) -> SweepResult:
    """Measure every point; ``progress(description)`` is called before each step, ``checkpoint(frame)`` after each
    point with the rows so far. Out-of-memory and other failures of a point are recorded as rows and the sweep
    goes on."""
    started = time.perf_counter()
    points, skipped = plan_points(config)
    step = progress or (lambda description: None)
    counts = sorted(config.instances, reverse=True)  # largest N first: it warms up
    measured: dict[tuple[int, int], dict[str, Measurement]] = {}  # (point index, N) -> stage -> pooled repeats
    failed: dict[tuple[int, int], tuple[str, str]] = {}  # (point index, N) -> (error, status)

    def rows_so_far() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for index, point in enumerate(points):
            for num in sorted(config.instances):
                key = (index, num)
                if key in failed:
                    rows += _rows(config, point, num, TOTAL_STAGES, None, *failed[key])
                elif key in measured:
                    rows += _rows(config, point, num, TOTAL_STAGES, measured[key])
        return rows

    with torch_settings(config):
        timer = make_timer(config)
        inputs = random_inputs(
            config.image_size, trunk=config.trunk, seed=config.seed, device=config.device, dtype=config.torch_dtype
        )
        everyone = sample_instances(max(config.instances), config.image_size, seed=config.seed, device=config.device)
        workloads: dict[int, MaskBranchWorkload] = {}
        share = 1 / config.rounds
        for round_index in range(config.rounds):  # every point once per round: drift shows in each interval
            for index, point in enumerate(points):
                workload = workloads.get(index) or build_point_workload(config, point, inputs, everyone)
                workloads[index] = workload
                per_image: dict[str, Measurement] = {}
                for order, num in enumerate(counts):
                    key = (index, num)
                    if key in failed:
                        continue
                    step(f"{point.spec} N={num}" + (f" (round {round_index + 1}/{config.rounds})" * (share < 1)))
                    workload.instances = everyone.head(num)
                    warmup = point_warmup(config, first=order == 0, round_index=round_index)
                    failure: BaseException | None = None
                    with native_stderr_captured() as native:
                        try:
                            measured[key] = measure_point(timer, workload, warmup, per_image, measured.get(key), share)
                        except Exception as err:  # noqa: BLE001 - a failing point is a result, not a crash
                            failure = err
                    if failure is None:
                        if native[0].strip():  # not a failure: what native code printed goes where it would have
                            sys.stderr.write(native[0])
                    else:
                        measured.pop(key, None)
                        failed[key] = (error_text(failure, native[0]), failure_status(failure))
                        _release(config.device)
                if checkpoint is not None:
                    checkpoint(to_frame(rows_so_far()))
        rows = rows_so_far()
        branches = {
            point.variant: workloads[index]  # the variant's own spec: reused by the end-to-end pass
            for index, point in enumerate(points)
            if point.spec == dict(config.variants)[point.variant]
        }
        if config.end_to_end:
            rows += end_to_end_rows(config, timer, inputs, everyone, branches, step)
        del inputs, workloads, branches
        _release(config.device)
    return SweepResult(to_frame(rows), skipped, time.perf_counter() - started)


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
        if failure is None:
            rows += _rows(config, point, num, END_TO_END_STAGES, measured)
        else:
            rows += _rows(
                config, point, num, END_TO_END_STAGES, None, error_text(failure, native[0]), failure_status(failure)
            )
        _release(config.device)
    return rows
