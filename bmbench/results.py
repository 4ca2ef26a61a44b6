"""The results store: atomic writes of tidy tables and JSON, the metadata block every run records, the one file
lock (a suite, a cached trunk), and the progress events long runs report.

Every file is written to a temporary sibling and renamed into place, so a reader (or a resumed run) never sees a
half-written file, whatever interrupts the writer.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Literal

import pandas as pd
import torch
import torchvision

from bmbench.errors import KEPT_FILES, BmbenchError, DiskError, is_disk_error
from bmbench.plugins import loaded_plugins


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def disk_errors(path: Path, kept: str = KEPT_FILES) -> Iterator[None]:
    """Turn an OSError the disk raises for a write (no space, read-only, no permission) into a DiskError naming
    `path`; any other error passes unchanged."""
    try:
        yield
    except OSError as err:
        if is_disk_error(err):
            raise DiskError(path, err.errno, kept) from err
        raise


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on failure remove it. A write the
    disk refuses raises DiskError naming ``path`` (the temporary file is removed first)."""
    path = Path(path)
    with disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.close(fd)
            os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; results are ordinary files
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        with suppress(OSError):
            Path(tmp).unlink(missing_ok=True)
        if is_disk_error(err):
            raise DiskError(path, err.errno) from err  # type: ignore[attr-defined]
        raise


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_table(frame: pd.DataFrame, stem: Path) -> None:
    """Write ``stem.csv`` and ``stem.parquet``, each atomically."""
    stem = Path(stem)
    with atomic_path(stem.with_suffix(".csv")) as tmp:
        frame.to_csv(tmp, index=False)
    with atomic_path(stem.with_suffix(".parquet")) as tmp:
        frame.to_parquet(tmp, index=False)


class _WriteRecorder:
    """A binary file that remembers the OSError its last write raised: torch's zip writer replaces that error by
    its own (``RuntimeError: ... unexpected pos``), which names neither the file nor the cause."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.error = handle, None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.handle.flush()


def write_torch(path: Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically; a write the disk refuses raises DiskError, as for tables."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        recorder = _WriteRecorder(handle)
        try:
            torch.save(obj, recorder)  # type: ignore[arg-type]
        except RuntimeError as err:
            if recorder.error is not None:
                raise recorder.error from err
            raise


def git_commit(cwd: Path | None = None) -> str | None:
    """The current commit (with ``-dirty`` when the tree has changes), or None outside a git checkout."""
    try:
        where = cwd or Path(__file__).resolve().parent
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=where, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True
        ).stdout.strip()
        return f"{commit}-dirty" if dirty else commit
    except (OSError, subprocess.CalledProcessError):
        return None


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """A human name for the device: the GPU's name, or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def run_metadata(*, device: torch.device, dtype: str = "fp32", **extra: Any) -> dict[str, Any]:
    """What every run records beside its tables: command line, commit, versions, device, threads, time."""
    meta: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": str(device),
        "device_name": device_name(device),
        "cpu_model": cpu_model(),
        "threads": torch.get_num_threads(),
        "dtype": dtype,
        "hostname": platform.node(),
    }
    if device.type == "cuda":
        meta["cuda"] = torch.version.cuda
        meta["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    if plugins := loaded_plugins():  # the head plugins' packages and versions, so that a changed one shows
        meta["plugins"] = plugins
    return meta | extra


@contextmanager
def file_lock(path: Path, *, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created if absent); the kernel releases it even on kill -9.
    With ``wait=False`` a lock held elsewhere raises BlockingIOError at once."""
    path = Path(path)
    with disk_errors(path, "nothing was written"):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")  # noqa: SIM115 - closed below; "a" keeps another run's lock file as it is
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- progress events: how the library reports what it is doing (only the CLI draws them) -------------------------


@dataclass(frozen=True)
class Event:
    """One thing a long run reports: a stage starting (with its total), advancing, logging a row, ending, or a
    note for the user (what a one-time stage is, its size and estimated time)."""

    stage: str  # what runs: trunk | pretrain | mask | joint | finetune | evaluate | suite | cell
    kind: Literal["note", "start", "advance", "log", "end"]
    completed: int = 0  # units done so far (steps, images, cells)
    total: int | None = None  # units in the stage, when known
    message: str = ""  # note: the sentence to show
    data: dict[str, Any] = field(default_factory=dict, compare=False)  # advance/log/end: values (loss, row, ...)


EventHook = Callable[[Event], None]


def emit(events: EventHook | None, stage: str, kind: str, **values: Any) -> None:
    """Send an Event to `events` when there is a hook (a library call without one reports nothing)."""
    if events is not None:
        events(Event(stage, kind, **values))  # type: ignore[arg-type]


def check_out_dir(path: Path, option: str = "--out", *, file: bool = False) -> Path:
    """Refuse, before any work, an output folder (with `file`: an output file's folder) that cannot be made: the
    path or one of its ancestors is a file, or the nearest existing ancestor is not writable. Returns the path;
    creates nothing."""
    path = Path(path)
    if path.exists() and (path.is_dir() if file else not path.is_dir()):
        raise BmbenchError(f"{option} {path}: exists and is {'a folder' if file else 'not a folder'}")
    ancestor = path.parent if file else path
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise BmbenchError(f"{option} {path}: {ancestor} is a file, not a folder")
    if ancestor.exists() and not os.access(ancestor, os.W_OK | os.X_OK):
        why = "is on a read-only file system" if _read_only(ancestor) else "is not writable (permission denied)"
        raise BmbenchError(f"{option} {path}: {ancestor} {why}; nothing was written")
    return path


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


PROBE_BYTES = 64 * 1024  # a probe this size fails on a full disk, where an empty file would still be created


def check_writable(folder: Path) -> None:
    """Write and remove a probe file in `folder` (else in its nearest existing ancestor, which the run would create
    it in), so that a read-only, forbidden or full folder is refused before any work; raises DiskError naming it.
    The probe is a ``.*.tmp`` file, which a run clears if a kill left one."""
    folder = Path(folder)
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    with disk_errors(folder, "nothing was written"):
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(bytes(PROBE_BYTES))
                handle.flush()
                os.fsync(handle.fileno())  # a filesystem that allocates late says it is full here, not later
        finally:
            Path(probe).unlink(missing_ok=True)
