"""`ablate` and a disk that refuses a write: it stops at the first one, keeps every finished cell, says how many in
one line (exit 2) and resumes once there is room; a folder it cannot write is refused before any cell. Then real
folders where the machine allows them: made read-only by chmod, a tmpfs remounted read-only, a full tmpfs."""

from __future__ import annotations

import errno
import json
import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from disk_fault_tools import (
    CODES,
    SUITE,
    TINY_TRAIN,
    Counting,
    ablate,
    assert_complete,
    assert_one_line,
    disk_fault,
    finished,
    invoke,
    nth,
    refuses_report,
    remount,
    tmpfs,
    write_speed_results,
)

import bmbench.cli.ablate
from bmbench.ablation.cell import RESULT_FILE, expand_cells
from bmbench.ablation.driver import run_suite
from bmbench.ablation.executors import DISK_ERROR, execute_cell
from bmbench.ablation.suite import load_suite
from bmbench.data.synth import write_synthetic_dataset
from bmbench.errors import DiskError
from bmbench.training.checkpoint import load_checkpoint


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize(
    ("name", "room"), [("checkpoint.pt", 5000), (RESULT_FILE, 0)], ids=["mid-checkpoint", "between-cells"]
)
def test_ablate_stops_at_the_first_disk_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, name: str, room: int
) -> None:
    runner = Counting()
    with disk_fault(code, nth(name, 2), room=room):
        result, suite_dir = ablate(tmp_path, monkeypatch, runner)
    line = assert_one_line(result, code, name)
    remedy = "free space" if code == errno.ENOSPC else "make the folder writable"
    assert line.endswith(f"; 1 finished cells kept; {remedy} and rerun to resume")
    assert runner.calls == 2  # the third cell never started
    cells = expand_cells(load_suite(tmp_path / "disk.yaml"))
    assert finished(suite_dir) == [cells[0].cell_id]  # the second is not recorded as failed: it runs again
    assert pd.read_csv(suite_dir / "summary.csv")["cell_id"].tolist() == [cells[0].cell_id]
    assert_complete(tmp_path)
    rerun = Counting()
    again, _ = ablate(tmp_path, monkeypatch, rerun)
    assert again.exit_code == 0, again.output
    assert rerun.calls == 2 and finished(suite_dir) == sorted(c.cell_id for c in cells)
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
    result, suite_dir = ablate(tmp_path, monkeypatch, runner)
    assert_one_line(result, errno.EROFS, str(tmp_path))
    assert runner.calls == 0 and not (tmp_path / "out").exists()
    monkeypatch.setattr("tempfile.mkstemp", tempfile_mkstemp)
    again, _ = ablate(tmp_path, monkeypatch, runner)
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
    assert runner.calls == 2 and len(finished(tmp_path / "out" / "disk")) == 1


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "synth", num_images=4, size=64)


@pytest.fixture(scope="module")
def speed_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_speed_results(tmp_path_factory.mktemp("results"))


def test_a_read_only_folder_by_chmod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, speed_results: Path) -> None:
    runner = Counting()
    first, suite_dir = ablate(tmp_path, monkeypatch, runner)
    assert first.exit_code == 0, first.output
    shutil.copytree(speed_results / "speed", tmp_path / "out" / "speed")
    folders = [suite_dir, *[p for p in suite_dir.rglob("*") if p.is_dir()]]  # a suite copied from a colleague
    for folder in folders:
        folder.chmod(0o555)
    try:
        if os.access(suite_dir, os.W_OK):
            pytest.skip("permissions do not bind here (root, or a process with CAP_DAC_OVERRIDE)")
        result, _ = ablate(tmp_path, monkeypatch, runner)
        line = assert_one_line(result, errno.EACCES, str(suite_dir))
        assert line.endswith("3 finished cells kept; make the folder writable and rerun to resume")
        result = invoke("report", "--results", str(tmp_path / "out"), "--out", str(suite_dir / "r.md"))
        assert result.exit_code == 2 and result.stderr.strip().endswith(
            "is not writable (permission denied); nothing was written"
        )
        elsewhere = invoke("report", "--results", str(tmp_path / "out"), "--out", str(tmp_path / "mine" / "r.md"))
        assert elsewhere.exit_code == 0, elsewhere.output  # reading a read-only folder is fine
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert runner.calls == 3  # the refused run trained nothing


def test_a_read_only_file_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, speed_results: Path) -> None:
    with tmpfs(tmp_path / "out" / "disk", "64m") as mount:  # the suite's own folder is the mount
        runner = Counting()
        first, suite_dir = ablate(tmp_path, monkeypatch, runner)
        assert first.exit_code == 0 and suite_dir == mount, first.output
        shutil.copytree(speed_results / "speed", tmp_path / "out" / "speed")
        remount(mount, "ro")
        forced = partial(run_suite, runner=runner, prepare=lambda *a: None, force=True)
        monkeypatch.setattr(bmbench.cli.ablate, "run_suite", forced)
        result = invoke("ablate", str(tmp_path / "disk.yaml"), "--out", str(tmp_path / "out"), "--device", "cpu")
        line = assert_one_line(result, errno.EROFS, str(suite_dir))
        assert line.endswith("3 finished cells kept; make the folder writable and rerun to resume")
        assert runner.calls == 3  # refused by the probe before any cell, even with --force
        result = invoke("ablate", str(tmp_path / "disk.yaml"), "--out", str(mount), "--device", "cpu")
        assert (
            result.exit_code == 2
            and result.stderr.strip()
            == f"error: --out {mount}: {mount} is on a read-only file system; nothing was written"
        )
        refuses_report(tmp_path / "out", mount / "report.md")
        elsewhere = invoke("report", "--results", str(tmp_path / "out"), "--out", str(tmp_path / "mine" / "r.md"))
        assert elsewhere.exit_code == 0, elsewhere.output  # reading a read-only folder is fine


def test_a_full_disk(tmp_path: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with tmpfs(tmp_path / "disk", "2m") as mount:
        args = ["train", *TINY_TRAIN, "--data", str(tiny_data), "--out", str(mount / "run")]
        result = invoke(*args)  # the checkpoint is larger than the disk: torch's writer fails part-way
        assert_one_line(result, errno.ENOSPC, str(mount / "run" / "checkpoint.pt"))
        assert_complete(mount)
        runner = Counting(floats=300_000)  # a 1.2 MB checkpoint a cell: the second cell fills the disk
        (tmp_path / "disk.yaml").write_text(SUITE)
        monkeypatch.setattr(bmbench.cli.ablate, "run_suite", partial(run_suite, runner=runner, prepare=lambda *a: None))
        result = invoke("ablate", str(tmp_path / "disk.yaml"), "--out", str(mount), "--device", "cpu")
        line = assert_one_line(result, errno.ENOSPC, str(mount / "disk"))
        assert line.endswith(
            "checkpoint.pt: no space left on device; 1 finished cells kept; free space and rerun to resume"
        )
        assert runner.calls == 2 and len(finished(mount / "disk")) == 1
        assert_complete(mount)
        remount(mount, "size=64m")  # room again
        again = invoke(*args)
        assert again.exit_code == 0, again.output
        assert load_checkpoint(mount / "run" / "checkpoint.pt")["format"]
        resumed = invoke("ablate", str(tmp_path / "disk.yaml"), "--out", str(mount), "--device", "cpu")
        assert resumed.exit_code == 0 and len(finished(mount / "disk")) == 3
        assert runner.calls == 4  # the cell that met the full disk runs again, then the last; the first is kept
        assert_complete(mount)
