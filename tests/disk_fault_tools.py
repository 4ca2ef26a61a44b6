"""Tools for the disk-fault tests: faults injected into the real writers (torch.save, pandas' csv and parquet,
text, matplotlib) before their first byte or part-way through, checks that a folder holds only whole files and that
a command failed in one line, a cell runner that writes through the real writers, and a tmpfs to fill or make
read-only."""

from __future__ import annotations

import errno
import json
import os
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
from bmbench.ablation.cell import RESULT_FILE, Cell
from bmbench.ablation.driver import run_suite
from bmbench.cli import app
from bmbench.results import write_table, write_torch

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


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def write_speed_results(root: Path) -> Path:
    """A results folder holding one tiny speed run, for the report to read."""
    args = [*TINY_SPEED, "--values", "8,16", "--instances", "1,2", "--out", str(root / "speed" / "tiny")]
    result = invoke(*args)  # two sides and two counts: enough points for the report to draw its figures
    assert result.exit_code == 0, result.output
    return root


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


def ablate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: Counting) -> tuple[Any, Path]:
    monkeypatch.setattr(bmbench.cli.ablate, "run_suite", partial(run_suite, runner=runner, prepare=lambda *a: None))
    suite = tmp_path / "disk.yaml"
    if not suite.exists():
        suite.write_text(SUITE)
    out = tmp_path / "out"
    return invoke("ablate", str(suite), "--out", str(out), "--device", "cpu"), out / "disk"


def finished(suite_dir: Path) -> list[str]:
    return sorted(path.parent.name for path in suite_dir.glob(f"*/{RESULT_FILE}"))


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


def refuses_report(results: Path, out: Path) -> None:
    result = invoke("report", "--results", str(results), "--out", str(out))
    assert result.exit_code == 2 and "Traceback" not in result.output
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith(f"error: --out {out}: ") and "read-only" in line, line
