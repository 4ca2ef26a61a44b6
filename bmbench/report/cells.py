"""A suite's summary table checked against its cells' own results, so that a truncated, stale or edited summary is
never reported as if it were whole.

Each finished cell of a suite keeps its record in ``<cell-id>/result.json`` (written atomically, last); the summary
is a table rebuilt from those records after each cell. The cells the summary should hold are the suite's cells as
its ``meta.json`` lists them (``suite_cells``; older runs list the cells the run planned as ``cells``): every one
of them with a result.json must have a row there, with the same status and the same measured values. A row that is
missing or disagrees is rebuilt from the cell's result.json, and the report says so. Cell folders of an earlier
version of the suite (another id) are not the suite's cells and are left out, as the summary leaves them out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from bmbench.schema import SPEC_KEYS

RESULT_FILE = "result.json"  # a cell's record, as bmbench.ablation.driver writes it (the report imports no ablation)
SUITE_CELLS_KEY = "suite_cells"  # meta.json: the ids of every cell of the suite (bmbench.ablation.driver writes it)
PLANNED_CELLS_KEY = "cells"  # meta.json: id -> spec of the cells the last run planned (a subset with --only)
TRAIN_FIELDS = ("protocol", "iters", "batch_size", "lr", "trunk")  # the summary's columns from the train config
RELATIVE_TOLERANCE = 1e-6  # a CSV round trip keeps floats exactly; anything more is a different value


def read_cell_results(folder: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every ``<cell-id>/result.json`` under the suite folder `folder`, by cell id, and the ids of those that
    cannot be read (truncated or not JSON). Hidden folders (a finished cell set aside while it runs again) are
    skipped."""
    results: dict[str, dict[str, Any]] = {}
    unreadable: list[str] = []
    for path in sorted(Path(folder).glob(f"*/{RESULT_FILE}")):
        if path.parent.name.startswith("."):
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            unreadable.append(path.parent.name)
            continue
        if isinstance(record, dict):
            results[path.parent.name] = record
    return results, unreadable


def expected_cells(meta: dict[str, Any], frame: pd.DataFrame | None) -> list[str]:
    """The ids of the cells the summary should hold: meta.json's list of the suite's cells, else the cells the last
    run planned together with the summary's own (meta.json absent or unreadable: the summary's own)."""
    listed = meta.get(SUITE_CELLS_KEY)
    if isinstance(listed, list):
        return [str(cell_id) for cell_id in listed]
    own = [] if frame is None or "cell_id" not in frame else [str(c) for c in frame["cell_id"]]
    planned = meta.get(PLANNED_CELLS_KEY)
    return list(dict.fromkeys([*own, *(map(str, planned) if isinstance(planned, dict) else [])]))


def row_from_result(record: dict[str, Any], variants: dict[str, str]) -> dict[str, Any]:
    """The summary row of a cell, rebuilt from its result.json (the columns bmbench.ablation.summary.summary_row
    writes, read from the record's config, measured values and env). `variants`: spec -> the variant name the
    summary gives it (a preset's name), when another row of the summary has that spec."""
    config = record.get("config") or {}
    spec = str(config.get("spec") or "")
    family, _, body = spec.partition(":")
    keys = dict(item.split("=", 1) for item in body.split(",") if "=" in item)
    train, evaluation = config.get("train") or {}, config.get("eval") or {}
    row: dict[str, Any] = {
        "suite": record.get("suite"),
        "cell_id": record.get("cell_id"),
        "variant": variants.get(spec, spec),
        "spec": spec,
        "family": family,
        **{key: int(keys[key]) if key in keys else None for key in SPEC_KEYS},
        "seed": config.get("seed"),
        **{f"dataset_{key}": value for key, value in (config.get("dataset") or {}).items()},
        **{key: train.get(key) for key in TRAIN_FIELDS},
        "eval_boxes": evaluation.get("boxes"),
        "status": record.get("status"),
        "error": record.get("error"),
    }
    for block in (record.get("measured") or {}, record.get("env") or {}):
        row |= {key: value for key, value in block.items() if key not in row and not isinstance(value, (dict, list))}
    return row | {"wall_s": record.get("wall_s"), "finished": record.get("finished")}


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _same(summary_value: Any, result_value: Any) -> bool:
    missing = [
        value is None or (isinstance(value, float) and math.isnan(value)) for value in (summary_value, result_value)
    ]
    if all(missing) or any(missing):
        return all(missing)
    if isinstance(result_value, (int, float)) and not isinstance(result_value, bool):
        try:
            return math.isclose(float(summary_value), float(result_value), rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return str(summary_value) == str(result_value)


def disagreement(row: pd.Series, record: dict[str, Any]) -> str | None:
    """The first of status and the measured values on which a summary row and its cell's record differ, or None."""
    if not _same(row.get("status"), record.get("status")):
        return "status"
    for key, value in (record.get("measured") or {}).items():
        if key in row.index and not isinstance(value, (dict, list)) and not _same(row[key], value):
            return key
    return None


def check_summary(
    frame: pd.DataFrame | None, folder: Path, meta: dict[str, Any], problem: str | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """The summary `frame` (None: unreadable, `problem` says why) with every row that is missing or disagrees
    with its cell's result.json rebuilt from it, and the notes that say what was rebuilt and why (empty when the
    summary holds exactly the results)."""
    results, unreadable = read_cell_results(folder)
    notes: list[str] = []
    if problem is not None:
        notes.append(f"the summary table cannot be read ({problem}); every row is rebuilt from the cells' result.json")
    rows = [] if frame is None else [row for _, row in frame.iterrows()]
    has_ids = frame is None or "cell_id" in frame.columns
    if not has_ids:  # a summary from before cell ids: nothing to check it against
        return frame, notes  # type: ignore[return-value]
    variants = {} if frame is None else dict(zip(frame["spec"].astype(str), frame["variant"].astype(str), strict=True))
    by_id = {str(row["cell_id"]): index for index, row in enumerate(rows)}
    missing, differing = [], []
    for cell_id in expected_cells(meta, frame):
        record = results.get(cell_id)
        if record is None:
            continue
        rebuilt = pd.Series(row_from_result(record, variants))
        if cell_id not in by_id:
            missing.append(cell_id)
            by_id[cell_id] = len(rows)
            rows.append(rebuilt)
        elif (what := disagreement(rows[by_id[cell_id]], record)) is not None:
            differing.append(f"{cell_id} ({what})")
            rows[by_id[cell_id]] = rebuilt
    if missing and frame is not None:
        notes.append(
            f"the summary table lacks {len(missing)} finished cell(s) that have a result.json ({', '.join(missing)}): "
            "it is truncated or stale; their rows are rebuilt from result.json"
        )
    if differing:
        notes.append(
            f"the summary table disagrees with result.json for {len(differing)} cell(s) ({', '.join(differing)}); "
            "their rows are rebuilt from result.json"
        )
    if unreadable:
        notes.append(f"result.json of {len(unreadable)} cell(s) cannot be read ({', '.join(unreadable)}); not checked")
    columns = list(dict.fromkeys([*([] if frame is None else frame.columns), *(k for r in rows for k in r.index)]))
    checked = pd.DataFrame([row.to_dict() for row in rows], columns=columns) if rows else pd.DataFrame(columns=columns)
    if frame is not None and not missing and not differing:
        checked = frame  # untouched: the types the table was read with
    return checked, notes
