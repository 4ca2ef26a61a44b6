"""The suite's tables of finished cells: ``summary.csv`` (one tidy row per cell) and ``curves.csv`` (one row per cell
and evaluated step), each also as ``.parquet``, rebuilt by the driver after every cell from the cells' records.
The columns are declared in bmbench.schema; the report (bmbench.report.cells) rebuilds a row missing from the
summary from the cell's result.json in the same way."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from bmbench.ablation.cell import Cell, read_result
from bmbench.ablation.suite import speed_dict
from bmbench.results import write_table
from bmbench.schema import SPEC_KEYS, SUMMARY_METRICS
from bmbench.variants import family_origin


def summary_row(cell: Cell, result: dict[str, Any]) -> dict[str, Any]:
    """One tidy row: every config field, status and error, then whatever the runner measured, then the env."""
    spec, data, train = cell.spec, cell.dataset, cell.train
    row: dict[str, Any] = {
        "suite": cell.suite,
        "cell_id": cell.cell_id,
        "variant": spec.name,
        "spec": str(spec),
        "family": spec.family,
        "origin": str(family_origin(spec.family)),  # "built in", or the plugin's package and version
        **{key: getattr(spec, key) for key in SPEC_KEYS},
        "seed": cell.seed,
        **{f"dataset_{key}": value for key, value in asdict(data).items()},
        "protocol": train.protocol,
        "iters": train.iters,
        "batch_size": train.batch_size,
        "lr": train.lr,
        "trunk": train.trunk,
        "eval_boxes": cell.eval.boxes,
        "speed_image_size": speed_dict(cell.speed)["image_size"],
        "speed_trunk": cell.speed.trunk,
        "status": result.get("status"),
        "error": result.get("error"),
    }
    measured = result.get("measured") or {}
    row |= {key: measured.get(key) for key in SUMMARY_METRICS}
    row |= {f"mask_ms_n{n}": measured.get(f"mask_ms_n{n}") for n in cell.speed.instances}
    row |= {key: value for key, value in measured.items() if key not in row}
    row |= {key: value for key, value in (result.get("env") or {}).items() if key not in row}
    row |= {"wall_s": result.get("wall_s"), "finished": result.get("finished")}
    return row


def write_summary(suite_dir: Path, cells: list[Cell], results: dict[str, dict[str, Any]]) -> None:
    """Rebuild summary.csv and summary.parquet (atomically), in the order of `cells`, from every one of them that
    has finished: its record in `results` (this run's), else its result.json on disk (an earlier run's)."""
    rows = []
    for cell in cells:
        result = results.get(cell.cell_id) or read_result(suite_dir / cell.cell_id)
        if result is not None:
            rows.append(summary_row(cell, result))
    write_table(pd.DataFrame(rows), suite_dir / "summary")


def write_curves(suite_dir: Path, cells: list[Cell], results: dict[str, dict[str, Any]]) -> None:
    """Rebuild curves.csv and .parquet: one row per finished cell and evaluated step (cell_id, spec, family, K, M,
    R, S, seed, step, fraction, then the metrics at that step), from the same results as the summary."""
    rows = []
    for cell in cells:
        result = results.get(cell.cell_id) or read_result(suite_dir / cell.cell_id)
        for point in (result or {}).get("curve") or []:
            spec = cell.spec
            key = {"cell_id": cell.cell_id, "spec": str(spec), "family": spec.family, "seed": cell.seed}
            rows.append(key | {name: getattr(spec, name) for name in SPEC_KEYS} | point)
    if rows:
        write_table(pd.DataFrame(rows), suite_dir / "curves")
