"""The driver of ``bmbench ablate``: run a suite's unfinished cells and keep its tables, resumably.

`run_suite` plans the suite (bmbench.ablation.plan: which cells run, which are reused), prepares its dataset once
(bmbench.ablation.dataset), hands the cells to an executor (bmbench.ablation.executors: this process, local
processes or Ray), which runs each through ``execute_cell`` and the runner (bmbench.ablation.measure.measure_cell),
and stores every record that comes back as ``result.json``, then rebuilds the tables (bmbench.ablation.summary).
Only this process writes result files and tables.

Store layout, under ``<out>/<suite-name>/``::

    meta.json                  run metadata and the resolved suite (rewritten at each run)
    summary.csv, .parquet      one row per finished cell of the suite, rebuilt after each cell
    curves.csv, .parquet       one row per finished cell and evaluated step (the learning curves)
    references.csv, .parquet   reference masks (built from the ground truth) scored on the val split, before the cells
    <cell-id>/result.json      written last and atomically: its presence means the cell is done (ok or failed)
    <cell-id>/...              whatever the cell's runner writes (checkpoint, metrics, speed table)
    .<cell-id>.previous/       a finished cell's folder while the cell runs again (bmbench.ablation.previous)

A cell id is a short hash of the cell's resolved config, so editing the suite makes new cells and never reuses a
stale result; the data's content, which the config names only by its path, is checked apart: each result.json
records the data's identity, and a cell whose data changed since runs again (bmbench.ablation.dataset). Every
file is written atomically; ``kill -9`` loses at most the work of the cells in flight, never a finished result.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bmbench.ablation.cell import DATA_ID_KEY, RESULT_FILE, Cell, expand_cells
from bmbench.ablation.dataset import (
    current_data_id,
    data_folder,
    prepare_data,
    suite_data_id,
    val_split,
    write_references,
)
from bmbench.ablation.executors import DISK_ERROR, EXECUTORS, CellRunner
from bmbench.ablation.measure import measure_cell
from bmbench.ablation.plan import PlannedCell, plan_suite
from bmbench.ablation.previous import drop_previous, fresh_cell_dir, settle_previous
from bmbench.ablation.suite import SuiteSpec
from bmbench.ablation.summary import write_curves, write_summary
from bmbench.device import resolve_device, resolve_dtype
from bmbench.errors import BmbenchError, DiskError, as_disk_error
from bmbench.evaluation.reference_masks import REFERENCES
from bmbench.results import EventHook, check_out_dir, check_writable, emit, file_lock, run_metadata, write_json


@dataclass
class SuiteOutcome:
    """What a run did."""

    suite_dir: Path  # <out>/<suite-name>
    total: int = 0  # cells in the (filtered) suite
    ran: int = 0  # cells run now
    reused: int = 0  # cells whose result.json was reused
    failed: list[str] = field(default_factory=list)  # ids of cells whose result says failed (run now or reused)

    @property
    def ok(self) -> bool:
        return not self.failed


Preparer = Callable[[SuiteSpec, str], Path | None]  # prepare(suite, device) -> data_dir, once, before any cell


@contextmanager
def suite_lock(suite_dir: Path) -> Iterator[None]:
    """Hold ``<suite_dir>/.lock`` so that two runs never write the same suite; released even by kill -9."""
    try:
        with file_lock(suite_dir / ".lock", wait=False):
            yield
    except BlockingIOError:
        raise BmbenchError(f"{suite_dir}: another `bmbench ablate` is running on this suite") from None


def remove_stale_temporaries(suite_dir: Path) -> list[Path]:
    """Delete ``.*.tmp`` files a killed run left (atomic writes remove their own otherwise); return them."""
    stale = [path for path in suite_dir.rglob(".*.tmp") if path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def run_suite(
    suite: SuiteSpec,
    *,
    out: Path,
    device: str = "auto",
    force: bool = False,
    retry_failed: bool = False,
    only: list[str] | None = None,
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    runner: CellRunner | None = None,
    prepare: Preparer | None = None,
    events: EventHook | None = None,
) -> SuiteOutcome:
    """Run the suite's unfinished cells and keep ``summary.csv``/``.parquet`` and ``meta.json`` up to date.

    ``runner`` and ``prepare`` default to the real ones (measure_cell: train → evaluate → time; prepare_data); tests
    inject fakes. ``device`` is resolved per cell by the runner's process (``auto``, ``cpu``, ``cuda``).
    `events` receives: suite start (total cells, completed = reused, data: plan), cell start and cell end (data:
    cell, and result at the end). The summary is rebuilt from every finished cell of the suite, not only the
    ones this run selected.
    """
    if executor not in EXECUTORS:
        raise BmbenchError(f"unknown executor {executor!r} (use {', '.join(EXECUTORS)})")
    if workers < 1:
        raise BmbenchError(f"--workers must be >= 1, got {workers}")
    if executor == "local":  # asking for CUDA (or fp16 on the CPU) where it cannot run fails before any write
        resolve_dtype(suite.speed.dtype, resolve_device(device))
    runner = runner or measure_cell
    prepare = prepare or prepare_data
    check_out_dir(Path(out))
    suite_dir = Path(out).resolve() / suite.name  # absolute: Ray workers may start elsewhere
    data_id = current_data_id(suite)  # a finished cell measured on other data runs again
    plan = plan_suite(suite, out, force=force, retry_failed=retry_failed, only=only, data_id=data_id)
    _note_stale(plan, suite, events)
    outcome = SuiteOutcome(suite_dir=suite_dir, total=len(plan))
    results = {p.cell.cell_id: p.previous for p in plan if p.action == "reuse" and p.previous is not None}
    outcome.reused = len(results)
    todo = [p.cell for p in plan if p.action == "run"]
    everything = expand_cells(suite)  # the summary holds every finished cell, whatever --only or --force chose
    try:
        check_writable(suite_dir)  # a read-only, forbidden or full folder is refused here, before any training
        data_dir = prepare(suite, device) if todo else None  # a missing dataset fails here, before any write
        if data_id is None and data_dir is not None:  # generated just now
            data_id = suite_data_id(suite, data_dir)
        with suite_lock(suite_dir):
            remove_stale_temporaries(suite_dir)
            settle_previous(suite_dir)  # a rerun killed outright: its cell's old result goes back in place
            meta = run_metadata(
                device=_driver_device(device), dtype=suite.speed.dtype, suite=suite.resolved(), executor=executor
            )
            meta |= {"requested_device": device, "workers": workers}
            meta["cells"] = {p.cell.cell_id: str(p.cell.spec) for p in plan}
            meta["suite_cells"] = [cell.cell_id for cell in everything]  # the summary's rows (the report checks them)
            write_json(suite_dir / "meta.json", meta)
            if data_dir is not None:  # rescored whenever cells run (None: nothing to run, or a test's fake preparer)
                kinds, split = ", ".join(REFERENCES), val_split(suite.dataset)
                emit(
                    events, "references", "note", message=f"scoring the reference masks ({kinds}) on the {split} split"
                )
                write_references(suite, suite_dir, data_dir)
            emit(events, "suite", "start", total=len(plan), completed=outcome.reused, data={"plan": plan})

            def starting(cell: Cell) -> None:
                # Just before a cell runs: an empty folder (with --force, the old result goes only now, so that an
                # interrupted forced run keeps the results it has not redone yet).
                fresh_cell_dir(suite_dir / cell.cell_id)  # a finished folder waits aside until the rerun finishes
                emit(events, "cell", "start", data={"cell": cell})

            stopped = False  # by a disk error: the tables are then rewritten only where the disk still lets them
            try:
                for cell, result in (
                    EXECUTORS[executor](
                        todo,
                        runner=runner,
                        suite_dir=suite_dir,
                        device=device,
                        data_dir=data_dir,
                        workers=workers,
                        address=address,
                        starting=starting,
                    )
                    if todo
                    else ()
                ):
                    if result.get("status") == DISK_ERROR:  # a cell's write refused: stop before the next cell
                        raise DiskError(*result["disk_error"])
                    result = json_safe(result) | ({DATA_ID_KEY: data_id} if data_id is not None else {})
                    write_json(suite_dir / cell.cell_id / RESULT_FILE, result)  # last: the cell is now done
                    drop_previous(suite_dir / cell.cell_id)
                    results[cell.cell_id] = result
                    outcome.ran += 1
                    write_summary(suite_dir, everything, results)
                    write_curves(suite_dir, everything, results)
                    emit(events, "cell", "end", data={"cell": cell, "result": result})
            except (DiskError, OSError):
                stopped = True
                raise
            finally:  # also on Ctrl-C or an executor's failure: the tables list exactly the cells finished on disk
                with suppress(OSError):  # a cell cut short while it ran again gets its old folder back (else: next run)
                    settle_previous(suite_dir)
                with suppress(DiskError) if stopped else nullcontext():
                    write_summary(suite_dir, everything, results)
                    write_curves(suite_dir, everything, results)
    except (DiskError, OSError) as err:  # the first write the disk refuses stops the suite; finished cells stay
        disk = as_disk_error(err)
        if disk is None:
            raise
        raise disk.keeping(_kept(suite_dir, disk.code)) from err
    outcome.failed = [p.cell.cell_id for p in plan if (results.get(p.cell.cell_id) or {}).get("status") != "ok"]
    return outcome


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


def _note_stale(plan: list[PlannedCell], suite: SuiteSpec, events: EventHook | None) -> None:
    """Say which finished cells run again because their data changed since they ran."""
    stale = [p.cell.cell_id for p in plan if p.stale]
    if stale:
        where = data_folder(suite)
        message = (
            f"{len(stale)} finished cell(s) were measured on other data than {where} holds now (its annotations or "
            f"images changed since): running them again: {', '.join(stale)}"
        )
        emit(events, "data", "note", message=message)


def _kept(suite_dir: Path, code: int) -> str:
    """What a suite stopped by a disk error keeps, and how to resume it."""
    finished = sum(1 for _ in suite_dir.glob(f"*/{RESULT_FILE}"))
    remedy = "free space" if code in (errno.ENOSPC, errno.EDQUOT) else "make the folder writable"
    return f"{finished} finished cells kept; {remedy} and rerun to resume"


def _driver_device(device: str) -> torch.device:
    """The device meta.json describes: this machine's (a Ray driver may lack the GPU its cells run on)."""
    try:
        return resolve_device(device)
    except BmbenchError:
        return torch.device("cpu")
