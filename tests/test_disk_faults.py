"""A full, read-only or forbidden disk: every writer raises DiskError and leaves no partial file, and every command
that writes says so in one line (the file, the cause, what was kept) with exit code 2; a later run with room goes on
as if the failed write had never started. Faults are injected into the writers (disk_fault_tools)."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from disk_fault_tools import (
    CAUSES,
    CODES,
    TINY_SPEED,
    TINY_TRAIN,
    assert_complete,
    assert_one_line,
    disk_fault,
    invoke,
    write_speed_results,
)
from matplotlib.figure import Figure

from bmbench.data.synth import write_synthetic_dataset
from bmbench.errors import DiskError
from bmbench.results import atomic_path, check_writable, file_lock, write_json, write_table, write_torch
from bmbench.training.checkpoint import load_checkpoint

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


@pytest.fixture(scope="module")
def speed_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_speed_results(tmp_path_factory.mktemp("results"))


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
        result = invoke(*args)
    assert failed == [name]
    assert_one_line(result, code, str(out / name))
    assert not (out / name).exists()
    assert_complete(tmp_path)
    # room again: the same command completes (with --force where a file it wrote whole before the fault is kept:
    # train never mixes a new run into a folder that holds part of another)
    kept = any(out.iterdir())
    assert kept == (name != "checkpoint.pt")
    again = invoke(*args, *(["--force"] if kept else []))
    assert again.exit_code == 0, again.output
    assert load_checkpoint(out / "checkpoint.pt")["format"] and (out / "meta.json").is_file()
    assert_complete(tmp_path)


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize(("name", "room"), [("metrics.csv", 0), ("metrics.parquet", 50)])
def test_evaluate(tiny_data: Path, tmp_path: Path, code: int, name: str, room: int) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", "--reference", "box", "--data", str(tiny_data), "--out", str(out)]
    with disk_fault(code, lambda n: n == name, room=room):
        result = invoke(*args)
    assert_one_line(result, code, str(out / name))
    assert_complete(tmp_path)
    again = invoke(*args, *(["--force"] if any(out.iterdir()) else []))
    assert again.exit_code == 0 and len(pd.read_parquet(out / "metrics.parquet")) > 1
    assert_complete(tmp_path)


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize(("name", "room"), [("meta.json", 0), ("speed.parquet", 100)], ids=["first", "midway"])
def test_speed(tmp_path: Path, code: int, name: str, room: int) -> None:
    out = tmp_path / "run"
    with disk_fault(code, lambda n: n == name, room=room):
        result = invoke(*TINY_SPEED, "--out", str(out))
    assert_one_line(result, code, str(out / name))
    assert not (out / name).exists()
    assert_complete(tmp_path)
    # room again: a new run completes (a speed run never overwrites one, so a folder it began goes to a new --out)
    again = out if name == "meta.json" else tmp_path / "again"
    rerun = invoke(*TINY_SPEED, "--out", str(again))
    assert rerun.exit_code == 0, rerun.output
    assert len(pd.read_parquet(again / "speed.parquet")) and json.loads((again / "meta.json").read_text())
    assert_complete(tmp_path)


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("kind", ["figure", "report"])
def test_report(speed_results: Path, tmp_path: Path, code: int, kind: str) -> None:
    out = tmp_path / "report.md"
    args = ["report", "--results", str(speed_results), "--out", str(out)]
    with disk_fault(code, (lambda n: n.endswith(".png")) if kind == "figure" else (lambda n: n == out.name), room=50):
        result = invoke(*args)
    assert_one_line(result, code, ".png" if kind == "figure" else str(out))
    assert not out.exists()
    assert_complete(tmp_path)
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert out.read_text().startswith("# ") and list((tmp_path / "report_figures").glob("*.png"))
    assert_complete(tmp_path)
