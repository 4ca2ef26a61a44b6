"""A speed run on disk: the sweep, the end-to-end points, profiler traces and scaling fits under one folder.

``<out>/speed.csv`` + ``.parquet`` (schema.SPEED_COLUMNS), ``<out>/scaling.csv`` + ``.parquet``
(schema.SCALING_COLUMNS: pooled, paired and floor fits), ``<out>/samples.csv`` + ``.parquet`` (every timed repeat
and the drift probe's), ``<out>/meta.json`` (with the probe's drift), and with profiling ``<out>/traces/`` and
``<out>/profile_ops.csv``. With ``runs`` > 1 the sweep runs again into ``<out>/run2/`` (and on), and
``<out>/stability.csv`` compares each later run with the first. The table is checkpointed as the sweep goes, so an
interrupted run keeps what it measured.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bmbench import results
from bmbench.bench.checks import CheckRun, peers_table, run_checks
from bmbench.bench.floor import with_cycle_fits
from bmbench.bench.memory import check_fits, gib
from bmbench.bench.options import SweepConfig
from bmbench.bench.plan import Skipped, SweepPoint, plan_points
from bmbench.bench.profile import OPERATOR_COLUMNS, profile_run
from bmbench.bench.scaling import scaling_table
from bmbench.bench.schedule import Progress
from bmbench.bench.stability import stability_table
from bmbench.bench.sweep import SweepResult, build_point_workload, make_timer, run_sweep, torch_settings
from bmbench.bench.workload import random_inputs, sample_instances
from bmbench.device import allocator_mode
from bmbench.errors import BmbenchError
from bmbench.results import atomic_path, run_metadata, write_json, write_table
from bmbench.schema import STABILITY_COLUMNS

RESULTS_ROOT = Path("results") / "speed"


@dataclass
class SpeedRun:
    out_dir: Path
    frame: pd.DataFrame  # the speed table
    scaling: pd.DataFrame  # the scaling fits
    skipped: list[Skipped] = field(default_factory=list)
    operators: pd.DataFrame | None = None  # the profiler's per-operator table, when profiled
    wall_s: float = 0.0
    peers: pd.DataFrame | None = None  # the floors-and-peers ratio table (bench.peers), with --peers
    drift: dict[str, Any] = field(default_factory=dict)  # the drift probe over the first run (bench.drift)
    repeats: list[SpeedRepeat] = field(default_factory=list)  # the later runs of `runs`
    stability: pd.DataFrame | None = None  # each later run against the first (schema.STABILITY_COLUMNS)


@dataclass
class SpeedRepeat:
    """A later run of the same sweep (``runs`` > 1), written to ``<out>/run<k>/``."""

    out_dir: Path
    frame: pd.DataFrame
    scaling: pd.DataFrame
    drift: dict[str, Any]


def default_out_dir(
    config: SweepConfig, *, check: bool = False, root: Path = RESULTS_ROOT, now: datetime | None = None
) -> Path:
    """``<root>/<YYYYmmdd-HHMMSS>-vary<axis>`` (``-check`` for the checks), with ``-2``, ``-3``… when that run
    exists already."""
    base = f"{(now or datetime.now()):%Y%m%d-%H%M%S}-{'check' if check else f'vary{config.axis}'}"
    candidate, index = Path(root) / base, 1
    while candidate.exists():
        index += 1
        candidate = Path(root) / f"{base}-{index}"
    return candidate


def check_out_dir(out_dir: Path) -> None:
    """Refuse a folder that cannot be created (a regular file on its path) or that already holds a finished speed run
    (runs are never overwritten); before any work starts. A run that stopped part-way (its meta.json still says
    ``running``: interrupted, or a write failed) is measured again into the same folder."""
    out_dir = results.check_out_dir(Path(out_dir))  # the check every command makes, then a speed run's own
    try:
        unfinished = json.loads((out_dir / "meta.json").read_text(encoding="utf-8")).get("status") == "running"
    except (OSError, ValueError, AttributeError):
        unfinished = False
    if unfinished:
        return
    for name in ("speed.csv", "peers.csv", "formulations.csv", "meta.json"):
        if (out_dir / name).exists():
            raise BmbenchError(f"--out {out_dir}: it already holds a run ({name}); choose another folder")


def check_sweep_fits(config: SweepConfig) -> int:
    """Refuse up front (BmbenchError) a sweep whose largest point cannot fit in the device's memory at all; returns
    the estimate in bytes (bench.memory.check_fits)."""
    points, _ = plan_points(config)
    return check_fits(
        [point.spec for point in points],
        instances=max(config.instances),
        image_size=config.image_size,
        trunk=config.trunk,
        device=config.device,
        dtype_bytes=torch.empty((), dtype=config.torch_dtype).element_size(),
        end_to_end=config.end_to_end,
    )


def machine_load() -> float | None:
    """The 1-minute load average (None where the OS has none): other work on the machine slows every timing, and
    oversubscribed threads stall at every parallel region."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def speed_metadata(config: SweepConfig, **extra: Any) -> dict[str, Any]:
    """run_metadata plus everything that defines the sweep, and the machine's load when it starts."""
    return run_metadata(
        device=config.device,
        dtype=config.dtype,
        threads=config.threads,
        image_size=config.image_text,
        seed=config.seed,
        trunk=config.trunk,
        axis=config.axis,
        values=list(config.values),
        instances=list(config.instances),
        variants=[{"variant": label, "spec": str(spec)} for label, spec in config.variants],
        budget_s=config.budget_s,
        warmup=config.warmup,
        max_repeats=config.max_repeats,
        precision=config.precision,
        compile=config.compile,
        profile=config.profile,
        end_to_end=config.end_to_end,
        peers=config.peers,
        schedule=config.schedule,
        prime=config.prime,
        runs=config.runs,
        probe_side=config.probe_side,
        timer="cuda-events" if config.device.type == "cuda" else "perf_counter",
        cudnn_benchmark=config.device.type == "cuda",
        cpu_count=os.cpu_count(),
        load_average_start=machine_load(),
        host_allocator=allocator_mode(),
        **extra,
    )


def profile_points(
    config: SweepConfig, points: list[SweepPoint], trace_dir: Path, progress: Progress | None = None
) -> pd.DataFrame:
    """Profile every point at the largest N; the per-operator tables of all points, stacked."""
    num = max(config.instances)
    tables = []
    with torch_settings(config):
        inputs = random_inputs(
            config.image_size, trunk=config.trunk, seed=config.seed, device=config.device, dtype=config.torch_dtype
        )
        instances = sample_instances(num, config.image_size, seed=config.seed, device=config.device)
        for point in points:
            if progress is not None:
                progress(f"profile {point.spec} N={num}")
            workload = build_point_workload(config, point, inputs, instances)
            label = point.spec.name
            table = profile_run(
                workload.run, label=label, trace_dir=trace_dir, device=config.device, worker=f"{label}_N{num}"
            )
            tables.append(table.assign(variant=point.variant, spec=str(point.spec), instances=num))
    return pd.concat(tables, ignore_index=True)[["variant", "spec", "instances", *OPERATOR_COLUMNS]]


def run_speed(config: SweepConfig, out_dir: Path, *, progress: Progress | None = None) -> SpeedRun:
    """Run the sweep (and the end-to-end and profiling passes the config asks for) and write the run folder."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    points, skipped = plan_points(config)
    estimate = check_sweep_fits(config)
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = speed_metadata(config, status="running", skipped=[vars(s) for s in skipped], memory_estimate=gib(estimate))
    write_json(out_dir / "meta.json", meta)
    result, scaling = _run_once(config, out_dir, progress)
    operators = None
    if config.profile:
        operators = profile_points(config, points, out_dir / "traces", progress)
        with atomic_path(out_dir / "profile_ops.csv") as tmp:
            operators.to_csv(tmp, index=False)
    peers = None
    if config.peers:
        if progress is not None:
            progress(f"floors and peers N={max(config.instances)}")
        peers = sweep_peers(config)
        write_table(peers, out_dir / "peers")
    repeats: list[SpeedRepeat] = []
    # later runs share the first run's probe: ratios to two different probes cannot be compared
    again_config = replace(config, probe_side=config.probe_side or result.drift.get("probe_side") or None)
    for index in range(2, config.runs + 1):
        if progress is not None:
            progress(f"run {index} of {config.runs}", 0)
        again, again_scaling = _run_once(again_config, out_dir / f"run{index}", progress)
        repeats.append(SpeedRepeat(out_dir / f"run{index}", again.frame, again_scaling, again.drift))
        own = {"status": "done", "run": index, "drift": again.drift, "cycles": again.cycles}
        write_json(out_dir / f"run{index}" / "meta.json", meta | own | {"load_average_end": machine_load()})
    stability = None
    if repeats:
        tables = [
            stability_table(result.frame, repeat.frame, scaling, repeat.scaling).assign(run=index)
            for index, repeat in enumerate(repeats, start=2)
        ]
        stability = pd.concat(tables, ignore_index=True).reindex(columns=list(STABILITY_COLUMNS))
        write_table(stability, out_dir / "stability")
    wall_s = time.perf_counter() - started
    statuses = result.frame.drop_duplicates(["spec", "instances", "stage"])["status"].value_counts().to_dict()
    done = {"status": "done", "wall_s": round(wall_s, 2), "statuses": statuses, "load_average_end": machine_load()}
    done |= {"precise_fraction": precise_fraction(result.frame), "drift": result.drift, "cycles": result.cycles}
    done["run_drifts"] = [repeat.drift for repeat in repeats]
    write_json(out_dir / "meta.json", meta | done)
    return SpeedRun(out_dir, result.frame, scaling, skipped, operators, wall_s, peers, result.drift, repeats, stability)


def _run_once(config: SweepConfig, out_dir: Path, progress: Progress | None) -> tuple[SweepResult, pd.DataFrame]:
    """One pass of the sweep into `out_dir`: speed, samples and scaling tables (paired and floor fits included)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = run_sweep(config, progress=progress, checkpoint=lambda frame: write_table(frame, out_dir / "speed"))
    write_table(result.frame, out_dir / "speed")
    if result.samples is not None:
        write_table(result.samples, out_dir / "samples")
    scaling = with_cycle_fits(scaling_table(result.frame), result.samples, config.axis)
    write_table(scaling, out_dir / "scaling")
    return result, scaling


def sweep_peers(config: SweepConfig) -> pd.DataFrame:
    """The floors-and-peers table for a sweep run (``--peers``), with the sweep's settings; torch.compile(blender)
    only with ``--compile`` (its first call builds C++ for a minute on a small CPU)."""
    with torch_settings(config):
        inputs = random_inputs(
            config.image_size, trunk=config.trunk, seed=config.seed, device=config.device, dtype=config.torch_dtype
        )
        return peers_table(config, make_timer(config), inputs, compile=config.compile)


def precise_fraction(frame: pd.DataFrame) -> float:
    """The share of measured rows whose median reached the precision target (failed points count as not)."""
    return round(float(frame["precise"].astype(bool).mean()), 4) if len(frame) else 0.0


def run_checks_to(config: SweepConfig, out_dir: Path, *, progress: Progress | None = None) -> CheckRun:
    """`--check`: the performance checks, written as ``peers``, ``formulations``, ``bandwidth`` and
    ``repeatability`` tables (csv + parquet) and ``meta.json`` in ``out_dir``."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    check_sweep_fits(config)
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = speed_metadata(config, status="running", check=True)
    write_json(out_dir / "meta.json", meta)
    run = run_checks(config, progress=progress)
    for name in ("peers", "formulations", "bandwidth", "repeatability"):
        write_table(getattr(run, name), out_dir / name)
    done = {"status": "done", "wall_s": round(time.perf_counter() - started, 2), "load_average_end": machine_load()}
    write_json(out_dir / "meta.json", meta | done)
    return run
