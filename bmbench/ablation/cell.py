"""Cells: a suite's unit of work (variant x seed), its id (a hash of its resolved config), planning which cells
run, running one through a runner into a result record, and the summary table of finished cells."""

from __future__ import annotations

import hashlib
import json
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch

import bmbench
from bmbench.ablation.suite import DatasetSpec, EvalSpec, SuiteSpec, dataset_dict, eval_dict, speed_dict, train_dict
from bmbench.bench.options import SweepConfig
from bmbench.errors import BmbenchError, as_disk_error
from bmbench.results import write_table
from bmbench.schema import SPEC_KEYS, SUMMARY_METRICS
from bmbench.training.config import TrainConfig
from bmbench.variants import VariantSpec, family_origin

RESULT_FILE = "result.json"
DATA_ID_KEY = "data_id"  # result.json: the identity of the data the cell was measured on
PREVIOUS_SUFFIX = ".previous"  # .<cell-id>.previous/: a finished folder kept until its rerun has finished
DISK_ERROR = "disk-error"  # a record's status when the disk refused a write: never stored, the suite stops there


CELL_ID_LENGTH = 12  # hex digits of the config hash: 48 bits, no collision in any grid we would run


@dataclass(frozen=True)
class Cell:
    """One variant with one seed under a suite's settings: the unit that trains, evaluates and is timed."""

    suite: str  # the suite's name (not part of the id: the same cell in two suites has the same id)
    spec: VariantSpec  # the mask head
    seed: int  # seeds the model's initialisation and the data order
    dataset: DatasetSpec  # what it trains and evaluates on
    train: TrainConfig  # how it trains (the suite's; `seed` below replaces its seed)
    eval: EvalSpec  # how AP is measured
    speed: SweepConfig  # how its mask branch is timed (the suite's speed settings)

    def config(self) -> dict[str, Any]:
        """The resolved config that the id hashes: everything that changes the cell's results but the data's
        content, which the dataset's root path does not pin: its identity (bmbench.ablation.datacheck) is recorded
        in result.json and checked whenever the cell would be reused."""
        return {
            "bmbench": bmbench.__version__,
            "spec": str(self.spec),
            "seed": self.seed,
            "dataset": dataset_dict(self.dataset),
            "train": train_dict(self.train),
            "eval": eval_dict(self.eval),
            "speed": speed_dict(self.speed),
        } | _plugin_identity(self.spec)

    @property
    def cell_id(self) -> str:
        text = json.dumps(self.config(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:CELL_ID_LENGTH]


def _plugin_identity(spec: VariantSpec) -> dict[str, Any]:
    """A plugin family's package, version and source digest, for the cell's config (so its id): a changed plugin
    makes new cells instead of reusing old ones. Built-in families add nothing (their ids stay as they were)."""
    plugin = family_origin(spec.family).identity()
    return {"plugin": plugin} if plugin is not None else {}


def expand_cells(suite: SuiteSpec) -> list[Cell]:
    """Every variant of the suite (grid first, then fixed variants) with each of its seeds, in that order."""
    return [
        Cell(suite.name, spec, seed, suite.dataset, suite.train, suite.eval, suite.speed)
        for spec, seeds in zip(suite.specs, suite.spec_seeds, strict=True)
        for seed in seeds
    ]


@dataclass(frozen=True)
class PlannedCell:
    """A cell and what this run does with it."""

    cell: Cell  # the cell
    action: str  # "run" or "reuse"
    previous: dict[str, Any] | None  # its result.json when one exists
    stale: bool = False  # it runs again because its result was measured on other data than the dataset's now


def plan_suite(
    suite: SuiteSpec,
    out: Path,
    *,
    force: bool = False,
    retry_failed: bool = False,
    only: list[str] | None = None,
    data_id: str | None = None,
) -> list[PlannedCell]:
    """Which cells run and which are reused; reads only. ``only`` restricts to cell ids (or unique prefixes).
    ``data_id``: the dataset's identity now (None: unknown); a finished cell that recorded another one is stale
    and runs again (a result recorded without one, by an older bmbench, is reused)."""
    cells = expand_cells(suite)
    if only:
        cells = _select(cells, only)
    suite_dir = Path(out) / suite.name
    plan = []
    for cell in cells:
        previous = read_result(suite_dir / cell.cell_id)
        recorded = (previous or {}).get(DATA_ID_KEY)
        stale = data_id is not None and recorded is not None and recorded != data_id
        rerun = force or previous is None or stale or (retry_failed and previous.get("status") != "ok")
        plan.append(PlannedCell(cell, "run" if rerun else "reuse", previous, stale))
    return plan


def _select(cells: list[Cell], only: list[str]) -> list[Cell]:
    chosen: dict[str, Cell] = {}
    for wanted in only:
        matches = [cell for cell in cells if cell.cell_id.startswith(wanted)]
        if len(matches) != 1:
            what = "no cell" if not matches else f"{len(matches)} cells"
            raise BmbenchError(f"--only {wanted}: {what} of this suite match (see --dry-run for the ids)")
        chosen[matches[0].cell_id] = matches[0]
    return [cell for cell in cells if cell.cell_id in chosen]


def previous_dir(cell_dir: Path) -> Path:
    """Where a finished cell's folder waits while the cell runs again (bmbench.ablation.previous)."""
    return cell_dir.parent / f".{cell_dir.name}{PREVIOUS_SUFFIX}"


def read_result(cell_dir: Path) -> dict[str, Any] | None:
    """A cell's result.json, else the one of its finished folder set aside while it runs again (so that a rerun
    cut short keeps its old result), or None when neither is there (or readable, which atomic writes should make
    impossible)."""
    for folder in (cell_dir, previous_dir(cell_dir)):
        try:
            return json.loads((folder / RESULT_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
    return None


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


CellRunner = Callable[..., dict[str, Any]]  # runner(cell, *, cell_dir, device, data_dir) -> measured values


def _must_be_finite(key: str) -> bool:
    # NaN is legitimate for mask_APs/m/l (COCOeval has no object of that size), not for these.
    return "loss" in key or key in ("mask_AP", "box_AP") or key.startswith("mask_ms_n")


def _non_finite(values: dict[str, Any]) -> list[str]:
    return [
        key
        for key, value in values.items()
        if _must_be_finite(key) and isinstance(value, float) and not math.isfinite(value)
    ]


def execute_cell(
    runner: CellRunner, cell: Cell, *, cell_dir: Path, device: str, data_dir: Path | None
) -> dict[str, Any]:
    """Run one cell and return its result record; an exception, OOM or a NaN becomes status "failed", never a
    raise (KeyboardInterrupt and SystemExit still propagate); a write the disk refused becomes status DISK_ERROR
    (as a record, so that it crosses every executor alike). Writes nothing itself: the caller stores it."""
    started = datetime.now(timezone.utc)
    begin = time.perf_counter()
    record: dict[str, Any] = {"cell_id": cell.cell_id, "suite": cell.suite, "config": cell.config()}
    try:
        measured = runner(cell, cell_dir=cell_dir, device=device, data_dir=data_dir)
        env = measured.pop("env", {})
        curve = measured.pop("curve", [])
        bad = _non_finite(measured)
        status, error = ("failed", f"non-finite values: {', '.join(bad)}") if bad else ("ok", None)
        record |= {"status": status, "error": error, "measured": measured, "env": env, "curve": curve}
    except Exception as err:  # noqa: BLE001 - a failing cell is recorded and the suite goes on
        disk = as_disk_error(err)
        if disk is not None:  # not the cell's fault: the caller stops the suite, and the cell runs again later
            return record | {"status": DISK_ERROR, "error": str(disk), "disk_error": [disk.path, disk.code]}
        record |= {"status": "failed", "error": f"{type(err).__name__}: {err}".strip(), "measured": {}, "env": {}}
        record["traceback"] = traceback.format_exc()
        _free_accelerator_memory()
    record |= {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - begin, 3),
    }
    return record


def json_safe(value: Any) -> Any:
    """NaN and infinities -> None, recursively: result.json stays standard JSON (COCOeval's "no such object size"
    is NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def _free_accelerator_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
