"""Where a suite's cells are executed: in this process, in N local processes, or as Ray tasks; and
`execute_cell`, which every executor calls to run one cell (through a runner: bmbench.ablation.measure.measure_cell
for real, a fake in tests) into its result record.

An executor takes the cells to run and yields ``(cell, result record)`` as each finishes, in completion order; the
caller (``bmbench.ablation.driver.run_suite``) stores every record, so only this process writes result files and
the summary. A cell's own failure is a "failed" record (see ``execute_cell``); a worker process that dies (killed by
the kernel for memory, a crash) is one too, for that cell alone.
"""

from __future__ import annotations

import math
import multiprocessing
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from bmbench.ablation.cell import Cell
from bmbench.bench.options import default_threads
from bmbench.errors import BmbenchError, as_disk_error

DISK_ERROR = "disk-error"  # a record's status when the disk refused a write: never stored, the suite stops there

Finished = Iterator[tuple[Cell, dict[str, Any]]]
Starting = Callable[[Cell], None]  # called in this process just before a cell is run or submitted
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


def _free_accelerator_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _failed(cell: Cell, error: str) -> dict[str, Any]:
    return {"cell_id": cell.cell_id, "suite": cell.suite, "config": cell.config(), "status": "failed", "error": error}


def _init_worker(threads: int) -> None:
    """Runs first in every worker process: split the cores between the workers (no oversubscription)."""
    torch.set_num_threads(threads)


def _slot_device(device: str, slot: int) -> str:
    """Spread CUDA workers over the GPUs present: worker slot i gets cuda:(i mod count)."""
    if device in ("cuda", "auto") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return f"cuda:{slot % torch.cuda.device_count()}"
    return device


def execute_local(
    todo: list[Cell],
    *,
    runner: CellRunner,
    suite_dir: Path,
    device: str,
    data_dir: Path | None,
    workers: int = 1,
    address: str | None = None,
    starting: Starting,
) -> Finished:
    """``workers == 1``: one cell after another in this process. ``workers > 1``: N spawned processes, each with
    cores/N torch threads; one single-worker pool per slot, so a worker that dies takes down only its own cell."""
    if address is not None:
        raise BmbenchError("--address is for --executor ray")
    if workers == 1:
        for cell in todo:
            starting(cell)
            yield cell, execute_cell(runner, cell, cell_dir=suite_dir / cell.cell_id, device=device, data_dir=data_dir)
        return

    threads = max(1, default_threads() // workers)
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools and CUDA state

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_init_worker, initargs=(threads,))

    pools = [new_pool() for _ in range(min(workers, len(todo)))]
    queue = deque(todo)
    running: dict[Future, tuple[Cell, int]] = {}
    finished = False
    try:
        while queue or running:
            busy = {slot for _, slot in running.values()}
            for slot in (s for s in range(len(pools)) if s not in busy):
                if not queue:
                    break
                cell = queue.popleft()
                starting(cell)
                future = pools[slot].submit(
                    execute_cell,
                    runner,
                    cell,
                    cell_dir=suite_dir / cell.cell_id,
                    device=_slot_device(device, slot),
                    data_dir=data_dir,
                )
                running[future] = (cell, slot)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                cell, slot = running.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    result = _failed(cell, "worker process died (killed, e.g. out of memory, or crashed)")
                    pools[slot].shutdown(wait=False)
                    pools[slot] = new_pool()
                except Exception as err:  # noqa: BLE001 - e.g. a result that does not pickle: that cell fails
                    result = _failed(cell, f"worker error: {type(err).__name__}: {err}")
                yield cell, result
        finished = True
    finally:
        for pool in pools:
            if not finished:  # interrupted: stop the cells in flight now rather than wait for them
                _terminate_workers(pool)
            pool.shutdown(wait=finished, cancel_futures=True)


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    if hasattr(pool, "terminate_workers"):  # Python >= 3.14
        pool.terminate_workers()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()


def execute_ray(
    todo: list[Cell],
    *,
    runner: CellRunner,
    suite_dir: Path,
    device: str,
    data_dir: Path | None,
    workers: int = 1,
    address: str | None = None,
    starting: Starting,
) -> Finished:
    """Each cell a Ray task (1 CPU, plus 1 GPU when the cell runs on CUDA). Joins the cluster at ``address``, or
    the one already initialised in this process, or starts a local instance. On a multi-node cluster, ``--out``
    and the dataset must lie on a filesystem every node sees."""
    try:
        import ray
    except ImportError:
        raise BmbenchError("--executor ray needs Ray: pip install 'bmbench[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        wants_gpu = device.startswith("cuda") or (device == "auto" and gpus >= 1)
        if wants_gpu and gpus < 1:
            raise BmbenchError(f"--device {device}: the Ray cluster has no GPU")
        task = ray.remote(num_cpus=1, num_gpus=1 if wants_gpu else 0, max_retries=0)(execute_cell)
        pending = {}
        for cell in todo:
            starting(cell)
            ref = task.remote(runner, cell, cell_dir=suite_dir / cell.cell_id, device=device, data_dir=data_dir)
            pending[ref] = cell
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                cell = pending.pop(done[0])
                try:
                    result = ray.get(done[0])
                except ray.exceptions.RayError as err:  # the worker died, or Ray could not run the task
                    result = _failed(cell, f"Ray task failed: {type(err).__name__}: {str(err).splitlines()[0]}")
                yield cell, result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
    finally:
        if started_here:
            ray.shutdown()


EXECUTORS: dict[str, Callable[..., Finished]] = {"local": execute_local, "ray": execute_ray}
