"""One ablation cell measured for real: train (reusing the suite's shared trunk), evaluate AP (at the end of the
schedule and at each curve step), time the mask branch, and count its analytic cost.

An executor runs `measure_cell` through bmbench.ablation.executors.execute_cell, which turns what it returns (or
raises) into the cell's record. A cell's folder ends up holding ``train/`` (checkpoint, log), ``eval/`` (detections,
metrics), ``speed.csv`` and ``.parquet`` (one row per N and stage), then ``result.json``, which the driver writes.
The shared trunks of a suite are cached in ``<out>/<suite>/trunks/``, keyed by everything that changes them.
"""

from __future__ import annotations

import platform
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bmbench.ablation.cell import Cell
from bmbench.ablation.dataset import val_split
from bmbench.bench.cost import describe
from bmbench.bench.sweep import run_sweep
from bmbench.bench.workload import MASK_STAGES, NUM_CLASSES
from bmbench.device import resolve_device
from bmbench.evaluation.evaluate import evaluate
from bmbench.evaluation.scoring import SCORE_PREFIXES
from bmbench.results import device_name, git_commit, write_table
from bmbench.schema import CURVE_PREFIXES
from bmbench.training.checkpoint import snapshot_path
from bmbench.training.train import train

SPEED_SEED = 0  # one box sample and feature draw for every cell, so that cells are timed on the same workload
TRUNKS_DIR = "trunks"


def _speed(cell: Cell, device: torch.device) -> tuple[dict[str, float], Any]:
    """Median ms of the whole mask branch and of each stage at each N, on the suite's timing workload."""
    spec, speed = cell.spec, cell.speed
    config = replace(
        speed,
        variants=((spec.name, spec),),
        axis="R",
        values=(spec.R or 28,),  # the spec's own R: one point (an R-less spec is measured once as it is)
        device=device,
        threads=torch.get_num_threads(),
        seed=SPEED_SEED,
        end_to_end=False,
    )
    result = run_sweep(config)
    failed = result.frame[result.frame["status"] != "ok"]
    if len(failed):
        first = failed.iloc[0]
        raise RuntimeError(f"speed at N={first['instances']} ({first['status']}): {first['error']}")
    measured = {}
    for row in result.frame.itertuples():
        name = "mask" if row.stage == "total" else row.stage
        measured[f"{name}_ms_n{row.instances}"] = float(row.median_ms)
    return measured, result.frame


def _cost(cell: Cell) -> dict[str, Any]:
    """Analytic GFLOPs at each N and mask-branch parameters, for the head as timed (speed trunk, COCO classes)."""
    cost: dict[str, Any] = {}
    for num in cell.speed.instances:
        (row,) = describe(
            [cell.spec],
            image_size=cell.speed.image_size,
            num_instances=num,
            trunk=cell.speed.trunk,
            num_classes=NUM_CLASSES,
        )
        cost["mask_params"] = row["mask_params"]
        cost[f"mask_gflops_n{num}"] = row["total_gflops"]
        cost |= {f"{stage}_gflops_n{num}": row[f"{stage}_gflops"] for stage in MASK_STAGES}
    return cost


def curve_steps(iters: int, percents: tuple[int, ...]) -> tuple[int, ...]:
    """The steps of a schedule of `iters` at which a cell is evaluated: each percentage's step (at least 1), and
    always the last."""
    steps = {max(1, round(iters * pct / 100)) for pct in percents if pct <= 100} | {iters}
    return tuple(sorted(steps))


def measure_cell(cell: Cell, *, cell_dir: Path, device: str, data_dir: Path | None) -> dict[str, Any]:
    """Train → evaluate → time one cell; returns its flat measurements and an ``env`` block. Raises on failure
    (the caller records it)."""
    torch_device = resolve_device(device)
    steps = curve_steps(cell.train.iters, cell.eval.curve)
    trained = train(
        cell.spec,
        replace(cell.train, seed=cell.seed),
        data_dir=data_dir,
        out=cell_dir / "train",
        device=str(torch_device),
        trunk_cache=cell_dir.parent / TRUNKS_DIR,
        snapshots=steps,
    )
    split = val_split(cell.dataset)
    scoring = {
        "boxes": cell.eval.boxes,
        "split": split,
        "device": str(torch_device),
        "evaluator": cell.eval.evaluator,
        "max_dets": cell.eval.max_dets,
    }
    metrics = evaluate(trained.checkpoint, data_dir, out=cell_dir / "eval", **scoring)
    curve = []
    for step in steps:
        at = metrics if step == cell.train.iters else None
        if at is None:
            at = evaluate(snapshot_path(cell_dir / "train", step), data_dir, out=cell_dir / f"eval-{step}", **scoring)
        row = {"step": step, "fraction": step / cell.train.iters}
        curve.append(row | {key: value for key, value in at.items() if key.startswith(CURVE_PREFIXES)})
    speed, frame = _speed(cell, torch_device)
    write_table(frame, cell_dir / "speed")
    measured: dict[str, Any] = {key: value for key, value in metrics.items() if key.startswith(SCORE_PREFIXES)}
    measured |= speed
    measured |= {key: value for key, value in trained.metrics.items() if key != "trunk_key" and key != "init"}
    if "init" in trained.metrics:
        measured["init_loaded"] = trained.metrics["init"]["loaded"]
    measured |= {
        "infer_images_per_s": metrics.get("inference_images_per_s"),
        "eval_s": metrics.get("eval_s"),
        "num_detections": metrics.get("num_detections"),
        "bases_corr": metrics.get("bases_corr"),
    }
    measured |= _cost(cell)
    measured["curve"] = curve
    measured["env"] = {
        "device": str(torch_device),
        "device_name": device_name(torch_device),
        "dtype": cell.speed.dtype,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "hostname": platform.node(),
    }
    return measured
