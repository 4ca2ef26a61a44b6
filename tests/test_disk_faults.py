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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from typer.testing import CliRunner

from bmbench.cli import app
from bmbench.data.synth import write_synthetic_dataset
from bmbench.errors import DiskError
from bmbench.results import atomic_path, check_writable, file_lock, write_json, write_table, write_torch
from bmbench.training.checkpoint import load_checkpoint

CAUSES = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system"}
CODES = list(CAUSES)
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
