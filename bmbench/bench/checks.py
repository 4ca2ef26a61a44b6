"""Performance checks behind `bmbench speed --check`: the ratio table of floors and peers (bench.peers), blender
formulations, merge bandwidth against the machine's copy bandwidth, and the repeatability of a point's medians.

Letters: N instances, K bases, M attention side, R mask side. The blender check runs at the issue's point
K=4, M=7, R=56 (the ``blendmask`` preset) with N = the largest ``--instances`` value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from bmbench.bench.cost import merge_bytes, stage_costs
from bmbench.bench.formulations import FORMULATIONS
from bmbench.bench.options import SweepConfig
from bmbench.bench.peers import PEER_COLUMNS, peer_rows
from bmbench.bench.sweep import SweepPoint, build_point_workload, failure_status, make_timer, torch_settings
from bmbench.bench.timer import Measurement, Timer
from bmbench.bench.workload import MaskBranchWorkload, random_inputs, sample_instances
from bmbench.models.heads.blendmask import blend
from bmbench.variants import PRESETS, VariantSpec

COPY_MIB = 256  # the copied tensor's size: far beyond any cache
REPEATABILITY_TOLERANCE = 0.05  # medians of two rounds within 5 %
COMPILE_PEERS = True  # time torch.compile(blender) in the peers table (tests turn it off: it builds C++)
Progress = Callable[[str], None]


@dataclass
class CheckRun:
    peers: pd.DataFrame  # bench.peers.PEER_COLUMNS: floors and peers side by side, with ratios
    formulations: pd.DataFrame  # formulation, equivalent, max_abs_diff, timing stats, ratio_to_blender
    bandwidth: pd.DataFrame  # copy bandwidths and each variant's merge bandwidth
    repeatability: pd.DataFrame  # variant, stage, median_ms of two rounds, relative difference


def _stats(measured: Measurement) -> dict[str, Any]:
    return {key: measured.stats()[key] for key in ("median_ms", "iqr_ms", "n", "noisy")}


def _workload(
    config: SweepConfig, label: str, spec: VariantSpec, inputs: tuple[dict, list], num: int
) -> MaskBranchWorkload:
    instances = sample_instances(num, config.image_size, seed=config.seed, device=config.device)
    point = SweepPoint(label, spec, getattr(spec, config.axis), spec.applies(config.axis))
    return build_point_workload(config, point, inputs, instances)


def formulation_rows(workload: MaskBranchWorkload, timer: Timer, *, compile: bool = True) -> list[dict[str, Any]]:
    """Time every formulation of the blender (and ``torch.compile(blend)``) on the workload's bases, attentions
    and boxes; equivalence is checked against ours."""
    head = workload.head
    bottom, params = workload.merge_inputs()
    rois, M, R = workload.instances.rois, head.M, head.R
    candidates = dict(FORMULATIONS)
    if compile:
        candidates["compiled"] = torch.compile(blend)
    rows: list[dict[str, Any]] = []
    with torch.inference_mode():
        reference = blend(bottom, params, rois, M=M, R=R).float()
        tolerance = 1e-4 if bottom.dtype == torch.float32 else 5e-2
        for name, fn in candidates.items():
            row: dict[str, Any] = {"formulation": name, "K": head.K, "M": M, "R": R, "instances": len(rois)}
            try:
                out = fn(bottom, params, rois, M=M, R=R).float()
                diff = (out - reference).abs().max().item()
                scale = reference.abs().max().item() or 1.0
                measured = timer.measure_fn(lambda fn=fn: fn(bottom, params, rois, M=M, R=R))
                row |= {"equivalent": diff <= tolerance * scale, "max_abs_diff": diff, **_stats(measured)}
                row |= {"first_ms": measured.first_ms, "status": "ok", "error": ""}
            except Exception as err:  # noqa: BLE001 - e.g. torch.compile without a working compiler
                row |= {"equivalent": None, "status": failure_status(err), "error": f"{type(err).__name__}: {err}"}
                row["error"] = row["error"].splitlines()[0][:300]
            rows.append(row)
    frame = pd.DataFrame(rows)
    ours = frame.loc[frame["formulation"] == "blender", "median_ms"].iloc[0]
    return frame.assign(ratio_to_blender=frame["median_ms"] / ours).to_dict("records")


def copy_bandwidth_rows(timer: Timer, device: torch.device, dtype: torch.dtype) -> list[dict[str, Any]]:
    """The machine's copy bandwidth, bytes read + written per second: a fresh ``clone`` (allocates, as the merge
    does) and a ``copy_`` into a buffer that exists."""
    source = torch.randn(COPY_MIB * 2**20 // 4, device=device).to(dtype)
    target = torch.empty_like(source)
    moved = 2 * source.numel() * source.element_size()
    rows = []
    for kind, fn in (("clone", source.clone), ("copy_", lambda: target.copy_(source))):
        measured = timer.measure_fn(fn)
        rows.append({"what": f"copy ({kind}, {COPY_MIB} MiB)", "bytes": moved, **_stats(measured)})
        rows[-1]["gb_per_s"] = moved / (measured.median_ms / 1e3) / 1e9
    return rows


def merge_bandwidth_row(
    workload: MaskBranchWorkload, timer: Timer, *, label: str, spec: VariantSpec, config: SweepConfig
) -> dict[str, Any]:
    """The merge alone (params already gathered): bytes moved (cost.merge_bytes) per second, and FLOPs per second."""
    head, instances = workload.head, workload.instances
    bottom, params = workload.merge_inputs()
    num = len(instances)

    def merge() -> object:
        with torch.inference_mode():
            return head.merge(bottom, params, instances.rois, instances.labels)

    measured = timer.measure_fn(merge)
    element = torch.empty((), dtype=config.torch_dtype).element_size()
    moved = merge_bytes(spec, num_instances=num, image_size=config.image_size, trunk=config.trunk, dtype_bytes=element)
    flops = stage_costs(spec, image_size=config.image_size, num_instances=num, trunk=config.trunk)["merge"].total
    seconds = measured.median_ms / 1e3
    return {"what": f"{label} merge N={num}", "bytes": moved, **_stats(measured)} | {
        "gb_per_s": moved / seconds / 1e9,
        "gflop_per_s": flops / seconds / 1e9,
    }


def peers_table(config: SweepConfig, timer: Timer, inputs: tuple[dict, list], *, compile: bool = True) -> pd.DataFrame:
    """The ratio table of bench.peers at N = the largest ``config.instances``: the ``blendmask`` preset (K=4, M=7,
    R=56) and the ``maskrcnn`` preset on the config's image and trunk; ``compile`` adds torch.compile(blender)."""
    num = max(config.instances)
    blender = _workload(config, "blendmask", PRESETS["blendmask"], inputs, num)
    rcnn = _workload(config, "maskrcnn", PRESETS["maskrcnn"], inputs, num)
    return pd.DataFrame(peer_rows(blender, rcnn, timer, compile=compile and COMPILE_PEERS), columns=list(PEER_COLUMNS))


def count_check_steps(config: SweepConfig, *, rounds: int = 2) -> int:
    """Progress steps of run_checks: peers, formulations, copy bandwidth, then per variant its merge and rounds."""
    return 3 + (1 + rounds) * len(config.variants)


def run_checks(config: SweepConfig, *, progress: Progress | None = None, rounds: int = 2) -> CheckRun:
    """All three checks, at N = the largest of ``config.instances``."""
    step = progress or (lambda description: None)
    num = max(config.instances)
    with torch_settings(config):
        timer = make_timer(config)
        inputs = random_inputs(
            config.image_size, trunk=config.trunk, seed=config.seed, device=config.device, dtype=config.torch_dtype
        )
        step(f"floors and peers N={num}")
        peers = peers_table(config, timer, inputs)
        blender = _workload(config, "blendmask", PRESETS["blendmask"], inputs, num)
        step(f"blender formulations N={num}")
        formulations = pd.DataFrame(formulation_rows(blender, timer))
        step("copy bandwidth")
        bandwidth = copy_bandwidth_rows(timer, config.device, config.torch_dtype)
        workloads = {label: _workload(config, label, spec, inputs, num) for label, spec in config.variants}
        for label, spec in config.variants:
            step(f"{label} merge bandwidth")
            bandwidth.append(merge_bandwidth_row(workloads[label], timer, label=label, spec=spec, config=config))
        medians: dict[tuple[str, str], list[float]] = {}
        for index in range(rounds):  # round after round, so other points run in between
            for label, workload in workloads.items():
                step(f"{label} repeatability, round {index + 1}")
                for stage, measured in timer.measure(workload.run).items():
                    medians.setdefault((label, stage), []).append(measured.median_ms)
    repeat_rows = []
    for (label, stage), values in medians.items():
        spread = (max(values) - min(values)) / min(values)
        repeat_rows.append(
            {"variant": label, "stage": stage, "instances": num}
            | {f"round{i + 1}_ms": value for i, value in enumerate(values)}
            | {"relative_spread": spread, "within_5pct": spread <= REPEATABILITY_TOLERANCE}
        )
    return CheckRun(peers, formulations, pd.DataFrame(bandwidth), pd.DataFrame(repeat_rows))
