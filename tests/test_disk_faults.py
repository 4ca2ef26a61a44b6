"""A full, read-only or forbidden disk: every command that writes says so in one line (the file, the cause, what was
kept) with exit code 2, leaves no partial file, and a later run with room goes on as if the failed write had never
started.

Faults are injected into the writers themselves (torch.save, pandas' csv and parquet, text, matplotlib), either
before their first byte or part-way through; then, where the machine allows it, the same on a real read-only folder
(chmod, or a tmpfs remounted read-only) and a real full tmpfs.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from typer.testing import CliRunner

import bmbench.cli.ablate
from bmbench.ablation.cell import DISK_ERROR, RESULT_FILE, Cell, execute_cell, expand_cells
from bmbench.ablation.run import run_suite
from bmbench.ablation.suite import load_suite
from bmbench.cli import app
from bmbench.data.synth import write_synthetic_dataset
from bmbench.errors import DiskError
from bmbench.results import atomic_path, check_writable, file_lock, write_json, write_table, write_torch
from bmbench.training.checkpoint import load_checkpoint

CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
}
CODES = [errno.ENOSPC, errno.EROFS]
TINY_TRAIN = ["blendmask:K=2,M=2,R=8", "--iters", "2", "--batch-size", "2", "--protocol", "joint"]
TINY_TRAIN += ["--image-size", "64", "--device", "cpu"]
TINY_SPEED = ["speed", "--variants", "blendmask:K=2,M=2,R=8", "--vary", "R", "--values", "8", "--instances", "1"]
TINY_SPEED += ["--image-size", "64x64", "--trunk", "small", "--budget-s", "0.005", "--threads", "1", "--device", "cpu"]
TINY_SPEED += ["--no-end-to-end"]
SUITE = """name: disk
dataset: {kind: synthetic, images: 8, size: 64, seed: 0}
train: {iters: 2, batch_size: 2}
seeds: [0]
grid:
  - family: blendmask
    K: [1, 2, 3]
    M: [2]
    R: [8]
speed: {instances: [1], image_size: 64x64}
"""


# --- fault injection ------------------------------------------------------------------------------------------


def _final_name(path: Any) -> str:
    """The file an atomic write is making: ``.summary.csv.abc123.tmp`` -> ``summary.csv``."""
    name = Path(getattr(path, "name", None) or str(path)).name
    return name[1:].rsplit(".", 2)[0] if name.startswith(".") and name.endswith(".tmp") else name


class _FillsUp:
    """A binary file that takes `room` bytes, then raises OSError(code) as a full (or read-only) disk would."""

    def __init__(self, handle: Any, room: int, code: int) -> None:
        self.handle, self.room, self.code = handle, room, code

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self.handle.write(bytes(data[: self.room]))
            self.handle.flush()
            self.room = 0
            raise OSError(self.code, os.strerror(self.code))
        self.room -= len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


@contextmanager
def disk_fault(code: int, when: Callable[[str], bool], *, room: int = 0) -> Iterator[list[str]]:
    """Every write whose final file name passes `when` writes `room` bytes (a partial file) and raises
    OSError(code); yields the names that failed."""
    failed: list[str] = []
    real_save, real_csv = torch.save, pd.DataFrame.to_csv
    real_parquet, real_text, real_png = pd.DataFrame.to_parquet, Path.write_text, Figure.savefig

    def hit(path: Any) -> bool:
        if when(_final_name(path)):
            failed.append(_final_name(path))
            return True
        return False

    def partial_then_fail(path: Any) -> None:
        Path(path).write_bytes(b"x" * room)
        raise OSError(code, os.strerror(code))

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        handle = getattr(f, "handle", None)  # the open file under bmbench's writer: it is the disk that fills
        if handle is not None and hit(handle.name):
            f.handle = _FillsUp(handle, room, code)
        return real_save(obj, f, *args, **kwargs)

    def wrap(real: Callable) -> Callable:
        def writer(self: Any, path: Any = None, *args: Any, **kwargs: Any) -> Any:
            if path is not None and not callable(getattr(path, "write", None)) and hit(path):
                partial_then_fail(path)
            return real(self, path, *args, **kwargs)

        return writer

    def write_text(self: Path, *args: Any, **kwargs: Any) -> int:
        if hit(self):
            partial_then_fail(self)
        return real_text(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "save", save)
        patch.setattr(pd.DataFrame, "to_csv", wrap(real_csv))
        patch.setattr(pd.DataFrame, "to_parquet", wrap(real_parquet))
        patch.setattr(Figure, "savefig", wrap(real_png))
        patch.setattr(Path, "write_text", write_text)
        yield failed


def assert_complete(root: Path) -> None:
    """No temporary file is left, and every file under `root` reads back whole."""
    for path in root.rglob("*"):
        assert not path.name.endswith(".tmp"), f"temporary file left: {path}"
        if path.suffix == ".pt":
            torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".csv":
            pd.read_csv(path)
        elif path.suffix == ".parquet":
            pd.read_parquet(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".png":
            Image.open(path).verify()


def assert_one_line(result: Any, code: int, name: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()  # progress bars may come first: the error is the last line, alone
    assert [line for line in lines if "error" in line.lower()] == lines[-1:], result.stderr
    line = lines[-1]
    assert line.startswith("error: cannot write ") and name in line and CAUSES[code] in line, line
    assert "Traceback" not in result.output
    return line


# --- the writers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("room", [0, 3000], ids=["before", "midway"])
def test_every_writer_raises_disk_error_and_leaves_nothing(tmp_path: Path, code: int, room: int) -> None:
    frame = pd.DataFrame({"a": range(1000)})
    figure = Figure()
    figure.subplots().plot([1, 2])
    writers: dict[str, Callable[[], None]] = {
        "w.pt": lambda: write_torch(tmp_path / "w.pt", {"w": torch.zeros(10_000)}),
        "t.csv": lambda: write_table(frame, tmp_path / "t"),
        "t.parquet": lambda: write_table(frame, tmp_path / "t"),
        "m.json": lambda: write_json(tmp_path / "m.json", {"a": list(range(1000))}),
    }
    for name, write in writers.items():
        with disk_fault(code, lambda n, name=name: n == name, room=room), pytest.raises(DiskError) as caught:
            write()
        assert caught.value.path == str(tmp_path / name) and caught.value.code == code
        assert str(caught.value).startswith(f"cannot write {tmp_path / name}: {CAUSES[code]}; ")
        assert not (tmp_path / name).exists()
        assert_complete(tmp_path)
    with disk_fault(code, lambda n: n == "f.png", room=room), pytest.raises(DiskError):
        with atomic_path(tmp_path / "f.png") as tmp:
            figure.savefig(tmp, format="png")
    assert not (tmp_path / "f.png").exists()
    assert_complete(tmp_path)
    for write in writers.values():  # with room again: as if the failed writes had never started
        write()
    assert torch.load(tmp_path / "w.pt", weights_only=True)["w"].shape == (10_000,)
    assert len(pd.read_parquet(tmp_path / "t.parquet")) == 1000
    assert_complete(tmp_path)


def test_a_disk_error_pickles_whole() -> None:
    import pickle

    err = DiskError("/x/y.pt", errno.ENOSPC, "3 finished cells kept")
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.code, str(again)) == (err.path, err.code, str(err))


def test_lock_and_probe_name_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(DiskError, match=f"cannot write {tmp_path / '.lock'}: read-only file system"):
        with file_lock(tmp_path / ".lock"):
            pass
    monkeypatch.undo()
    monkeypatch.setattr("tempfile.mkstemp", refuse)
    with pytest.raises(DiskError, match=f"cannot write {tmp_path}: read-only file system; nothing was written"):
        check_writable(tmp_path / "not" / "yet")
    monkeypatch.undo()
    check_writable(tmp_path / "not" / "yet")
    assert list(tmp_path.iterdir()) == []  # the probe is gone and nothing was created


# --- every command, through the CLI ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "synth", num_images=4, size=64)


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize(
    ("name", "room"),
    [("checkpoint.pt", 0), ("checkpoint.pt", 20_000), ("train_log.parquet", 100), ("meta.json", 10)],
    ids=["before-any-write", "mid-checkpoint", "log", "last-file"],
)
def test_train(tiny_data: Path, tmp_path: Path, code: int, name: str, room: int) -> None:
    out = tmp_path / "run"
    args = ["train", *TINY_TRAIN, "--data", str(tiny_data), "--out", str(out)]
    with disk_fault(code, lambda n: n == name, room=room) as failed:
        result = _invoke(*args)
    assert failed == [name]
    assert_one_line(result, code, str(out / name))
    assert not (out / name).exists()
    assert_complete(tmp_path)
    again = _invoke(*args)  # room again: the same command completes
    assert again.exit_code == 0, again.output
    assert load_checkpoint(out / "checkpoint.pt")["format"] and (out / "meta.json").is_file()
    assert_complete(tmp_path)


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize(("name", "room"), [("metrics.csv", 0), ("metrics.parquet", 50)])
def test_evaluate(tiny_data: Path, tmp_path: Path, code: int, name: str, room: int) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", "--reference", "box", "--data", str(tiny_data), "--out", str(out)]
    with disk_fault(code, lambda n: n == name, room=room):
        result = _invoke(*args)
    assert_one_line(result, code, str(out / name))
    assert_complete(tmp_path)
    assert _invoke(*args).exit_code == 0 and len(pd.read_parquet(out / "metrics.parquet")) > 1
    assert_complete(tmp_path)


@pytest.fixture(scope="module")
def speed_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder holding one tiny speed run, for the report to read."""
    root = tmp_path_factory.mktemp("results")
    args = [*TINY_SPEED, "--values", "8,16", "--instances", "1,2", "--out", str(root / "speed" / "tiny")]
    result = _invoke(*args)  # two sides and two counts: enough points for the report to draw its figures
    assert result.exit_code == 0, result.output
    return root


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize(("name", "room"), [("meta.json", 0), ("speed.parquet", 100)], ids=["first", "midway"])
def test_speed(tmp_path: Path, code: int, name: str, room: int) -> None:
    out = tmp_path / "run"
    with disk_fault(code, lambda n: n == name, room=room):
        result = _invoke(*TINY_SPEED, "--out", str(out))
    assert_one_line(result, code, str(out / name))
    assert not (out / name).exists()
    assert_complete(tmp_path)
    # room again: a new run completes (a speed run never overwrites one, so a folder it began goes to a new --out)
    again = out if name == "meta.json" else tmp_path / "again"
    rerun = _invoke(*TINY_SPEED, "--out", str(again))
    assert rerun.exit_code == 0, rerun.output
    assert len(pd.read_parquet(again / "speed.parquet")) and json.loads((again / "meta.json").read_text())
    assert_complete(tmp_path)


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("kind", ["figure", "report"])
def test_report(speed_results: Path, tmp_path: Path, code: int, kind: str) -> None:
    out = tmp_path / "report.md"
    args = ["report", "--results", str(speed_results), "--out", str(out)]
    with disk_fault(code, (lambda n: n.endswith(".png")) if kind == "figure" else (lambda n: n == out.name), room=50):
        result = _invoke(*args)
    assert_one_line(result, code, ".png" if kind == "figure" else str(out))
    assert not out.exists()
    assert_complete(tmp_path)
    again = _invoke(*args)
    assert again.exit_code == 0, again.output
    assert out.read_text().startswith("# ") and list((tmp_path / "report_figures").glob("*.png"))
    assert_complete(tmp_path)


# --- ablate: the first disk error stops the suite ---------------------------------------------------------------


def saving_runner(
    cell: Cell, *, cell_dir: Path, device: str, data_dir: Path | None, floats: int = 50_000
) -> dict[str, Any]:
    """Stands in for training and timing, but writes through the real writers: a checkpoint and a table."""
    write_torch(cell_dir / "checkpoint.pt", {"w": torch.zeros(floats)})
    write_table(pd.DataFrame({"instances": [1], "median_ms": [0.5]}), cell_dir / "speed")
    return {"mask_AP": 0.1 * cell.spec.K, "box_AP": 0.3, "mask_ms_n1": 0.5, "env": {"device": device}}


class Counting:
    """A runner that counts its calls (and optionally fails the n-th with OSError(code), as a bare write would)."""

    def __init__(self, fail_on: int | None = None, code: int = errno.ENOSPC, floats: int = 50_000) -> None:
        self.calls, self.fail_on, self.code, self.floats = 0, fail_on, code, floats

    def __call__(self, cell: Cell, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        if self.calls == self.fail_on:
            raise OSError(self.code, os.strerror(self.code), str(kwargs["cell_dir"] / "speed.csv"))
        return saving_runner(cell, floats=self.floats, **kwargs)


def nth(name: str, n: int) -> Callable[[str], bool]:
    """A fault predicate: the n-th write (from 1) of a file called `name`."""
    seen = [0]

    def when(final: str) -> bool:
        seen[0] += final == name
        return final == name and seen[0] == n

    return when


def _ablate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: Counting) -> tuple[Any, Path]:
    monkeypatch.setattr(bmbench.cli.ablate, "run_suite", partial(run_suite, runner=runner, prepare=lambda *a: None))
    suite = tmp_path / "disk.yaml"
    if not suite.exists():
        suite.write_text(SUITE)
    out = tmp_path / "out"
    return _invoke("ablate", str(suite), "--out", str(out), "--device", "cpu"), out / "disk"


def _finished(suite_dir: Path) -> list[str]:
    return sorted(path.parent.name for path in suite_dir.glob(f"*/{RESULT_FILE}"))


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize(
    ("name", "room"), [("checkpoint.pt", 5000), (RESULT_FILE, 0)], ids=["mid-checkpoint", "between-cells"]
)
def test_ablate_stops_at_the_first_disk_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, name: str, room: int
) -> None:
    runner = Counting()
    with disk_fault(code, nth(name, 2), room=room):
        result, suite_dir = _ablate(tmp_path, monkeypatch, runner)
    line = assert_one_line(result, code, name)
    remedy = "free space" if code == errno.ENOSPC else "make the folder writable"
    assert line.endswith(f"; 1 finished cells kept; {remedy} and rerun to resume")
    assert runner.calls == 2  # the third cell never started
    cells = expand_cells(load_suite(tmp_path / "disk.yaml"))
    assert _finished(suite_dir) == [cells[0].cell_id]  # the second is not recorded as failed: it runs again
    assert pd.read_csv(suite_dir / "summary.csv")["cell_id"].tolist() == [cells[0].cell_id]
    assert_complete(tmp_path)
    rerun = Counting()
    again, _ = _ablate(tmp_path, monkeypatch, rerun)
    assert again.exit_code == 0, again.output
    assert rerun.calls == 2 and _finished(suite_dir) == sorted(c.cell_id for c in cells)
    statuses = [json.loads((suite_dir / c.cell_id / RESULT_FILE).read_text())["status"] for c in cells]
    assert statuses == ["ok"] * 3
    assert_complete(tmp_path)


def test_ablate_refuses_an_unwritable_folder_before_any_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_mkstemp = tempfile_mkstemp = __import__("tempfile").mkstemp

    def mkstemp(*args: Any, prefix: str = "", **kwargs: Any) -> Any:
        if prefix.startswith(".write-probe"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_mkstemp(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr("tempfile.mkstemp", mkstemp)
    runner = Counting()
    result, suite_dir = _ablate(tmp_path, monkeypatch, runner)
    assert_one_line(result, errno.EROFS, str(tmp_path))
    assert runner.calls == 0 and not (tmp_path / "out").exists()
    monkeypatch.setattr("tempfile.mkstemp", tempfile_mkstemp)
    again, _ = _ablate(tmp_path, monkeypatch, runner)
    assert again.exit_code == 0 and runner.calls == 3


def test_a_bare_oserror_in_a_cell_stops_the_suite_too(tmp_path: Path) -> None:
    suite = tmp_path / "disk.yaml"
    suite.write_text(SUITE)
    cells = expand_cells(load_suite(suite))
    record = execute_cell(Counting(fail_on=1, code=errno.EACCES), cells[0], cell_dir=tmp_path, device="cpu",
                          data_dir=None)  # fmt: skip
    assert record["status"] == DISK_ERROR and record["disk_error"] == [str(tmp_path / "speed.csv"), errno.EACCES]
    runner = Counting(fail_on=2, code=errno.EACCES)
    with pytest.raises(DiskError, match="speed.csv: permission denied; 1 finished cells kept; make the folder"):
        run_suite(load_suite(suite), out=tmp_path / "out", device="cpu", runner=runner, prepare=lambda *a: None)
    assert runner.calls == 2 and len(_finished(tmp_path / "out" / "disk")) == 1


# --- real folders: chmod, a read-only tmpfs, a full tmpfs ----------------------------------------------------------


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` (skips the test where mounting is not allowed: not root, a container)."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip() or mounted.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True, capture_output=True)


def _refuses_report(results: Path, out: Path) -> None:
    result = _invoke("report", "--results", str(results), "--out", str(out))
    assert result.exit_code == 2 and "Traceback" not in result.output
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith(f"error: --out {out}: ") and "read-only" in line, line


def test_a_read_only_folder_by_chmod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, speed_results: Path) -> None:
    runner = Counting()
    first, suite_dir = _ablate(tmp_path, monkeypatch, runner)
    assert first.exit_code == 0, first.output
    shutil.copytree(speed_results / "speed", tmp_path / "out" / "speed")
    folders = [suite_dir, *[p for p in suite_dir.rglob("*") if p.is_dir()]]  # a suite copied from a colleague
    for folder in folders:
        folder.chmod(0o555)
    try:
        if os.access(suite_dir, os.W_OK):
            pytest.skip("permissions do not bind here (root, or a process with CAP_DAC_OVERRIDE)")
        result, _ = _ablate(tmp_path, monkeypatch, runner)
        line = assert_one_line(result, errno.EACCES, str(suite_dir))
        assert line.endswith("3 finished cells kept; make the folder writable and rerun to resume")
        result = _invoke("report", "--results", str(tmp_path / "out"), "--out", str(suite_dir / "r.md"))
        assert result.exit_code == 2 and result.stderr.strip().endswith("is not writable (permission denied)")
        elsewhere = _invoke("report", "--results", str(tmp_path / "out"), "--out", str(tmp_path / "mine" / "r.md"))
        assert elsewhere.exit_code == 0, elsewhere.output  # reading a read-only folder is fine
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert runner.calls == 3  # the refused run trained nothing


def test_a_read_only_file_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, speed_results: Path) -> None:
    with tmpfs(tmp_path / "out" / "disk", "64m") as mount:  # the suite's own folder is the mount
        runner = Counting()
        first, suite_dir = _ablate(tmp_path, monkeypatch, runner)
        assert first.exit_code == 0 and suite_dir == mount, first.output
        shutil.copytree(speed_results / "speed", tmp_path / "out" / "speed")
        remount(mount, "ro")
        forced = partial(run_suite, runner=runner, prepare=lambda *a: None, force=True)
        monkeypatch.setattr(bmbench.cli.ablate, "run_suite", forced)
        result = _invoke("ablate", str(tmp_path / "disk.yaml"), "--out", str(tmp_path / "out"), "--device", "cpu")
        line = assert_one_line(result, errno.EROFS, str(suite_dir))
        assert line.endswith("3 finished cells kept; make the folder writable and rerun to resume")
        assert runner.calls == 3  # refused by the probe before any cell, even with --force
        result = _invoke("ablate", str(tmp_path / "disk.yaml"), "--out", str(mount), "--device", "cpu")
        assert (
            result.exit_code == 2
            and result.stderr.strip() == f"error: --out {mount}: {mount} is on a read-only file system"
        )
        _refuses_report(tmp_path / "out", mount / "report.md")
        elsewhere = _invoke("report", "--results", str(tmp_path / "out"), "--out", str(tmp_path / "mine" / "r.md"))
        assert elsewhere.exit_code == 0, elsewhere.output  # reading a read-only folder is fine


def test_a_full_disk(tmp_path: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with tmpfs(tmp_path / "disk", "2m") as mount:
        args = ["train", *TINY_TRAIN, "--data", str(tiny_data), "--out", str(mount / "run")]
        result = _invoke(*args)  # the checkpoint is larger than the disk: torch's writer fails part-way
        assert_one_line(result, errno.ENOSPC, str(mount / "run" / "checkpoint.pt"))
        assert_complete(mount)
        runner = Counting(floats=300_000)  # a 1.2 MB checkpoint a cell: the second cell fills the disk
        (tmp_path / "disk.yaml").write_text(SUITE)
        monkeypatch.setattr(bmbench.cli.ablate, "run_suite", partial(run_suite, runner=runner, prepare=lambda *a: None))
        result = _invoke("ablate", str(tmp_path / "disk.yaml"), "--out", str(mount), "--device", "cpu")
        line = assert_one_line(result, errno.ENOSPC, str(mount / "disk"))
        assert line.endswith(
            "checkpoint.pt: no space left on device; 1 finished cells kept; free space and rerun to resume"
        )
        assert runner.calls == 2 and len(_finished(mount / "disk")) == 1
        assert_complete(mount)
        remount(mount, "size=64m")  # room again
        again = _invoke(*args)
        assert again.exit_code == 0, again.output
        assert load_checkpoint(mount / "run" / "checkpoint.pt")["format"]
        resumed = _invoke("ablate", str(tmp_path / "disk.yaml"), "--out", str(mount), "--device", "cpu")
        assert resumed.exit_code == 0 and len(_finished(mount / "disk")) == 3
        assert runner.calls == 4  # the cell that met the full disk runs again, then the last; the first is kept
        assert_complete(mount)
