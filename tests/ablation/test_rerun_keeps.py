"""A finished cell that runs again keeps its old result until the new one is complete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
import typer
from test_run import KILL_SCRIPT, InterruptOn, fake_runner, no_data, run, suite_file
from typer.testing import CliRunner

import bmbench.cli.ablate
from bmbench.ablation.cell import expand_cells
from bmbench.ablation.driver import run_suite
from bmbench.ablation.suite import load_suite


def hidden(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.name.startswith(".") and p.name != ".lock"]


def test_force_only_cut_short_keeps_the_old_result_and_its_summary_row(tmp_path: Path) -> None:
    path, out = suite_file(tmp_path), tmp_path / "out"
    run(path, out)
    first = expand_cells(load_suite(path))[0]
    cell_dir = out / "fake" / first.cell_id
    old = (cell_dir / "result.json").read_text()
    with pytest.raises(KeyboardInterrupt):
        run(path, out, only=[first.cell_id], force=True, runner=InterruptOn(1))
    assert (cell_dir / "result.json").read_text() == old  # the old result is back, byte for byte
    assert (cell_dir / "checkpoint.pt").read_bytes() == b"weights"  # with the rest of its folder
    assert hidden(out / "fake") == []
    summary = pd.read_csv(out / "fake" / "summary.csv")
    assert first.cell_id in set(summary["cell_id"]) and len(summary) == 4
    assert run(path, out).ran == 0  # nothing lost: the next plain run reuses it


def test_a_finished_forced_rerun_replaces_the_old_result(tmp_path: Path) -> None:
    path, out = suite_file(tmp_path), tmp_path / "out"
    run(path, out)
    first = expand_cells(load_suite(path))[0]
    before = json.loads((out / "fake" / first.cell_id / "result.json").read_text())
    time.sleep(1.1)  # the record's "finished" has a one-second resolution
    assert run(path, out, only=[first.cell_id], force=True).ran == 1
    after = json.loads((out / "fake" / first.cell_id / "result.json").read_text())
    assert after["finished"] != before["finished"]
    assert hidden(out / "fake") == []


def test_a_forced_rerun_killed_outright_is_settled_by_the_next_run(tmp_path: Path) -> None:
    path, out = suite_file(tmp_path), tmp_path / "out"
    run(path, out)
    first = expand_cells(load_suite(path))[0]
    old = (out / "fake" / first.cell_id / "result.json").read_text()
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), path=str(path), out=str(out))
    script = script.replace("prepare=no_data)", f"prepare=no_data, force=True, only=[{first.cell_id!r}])")
    process = subprocess.Popen([sys.executable, "-c", script], env=os.environ | {"FAKE_CELL_SECONDS": "30"})
    aside = out / "fake" / f".{first.cell_id}.previous"
    deadline = time.time() + 60
    while not (out / "fake" / first.cell_id / "checkpoint.pt").exists() or not aside.exists():
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    outcome = run(path, out)  # no --force: the old result counts as finished
    assert (outcome.ran, outcome.reused) == (0, 4)
    assert (out / "fake" / first.cell_id / "result.json").read_text() == old
    assert hidden(out / "fake") == []


def test_sigterm_on_ablate_says_what_was_kept(
    cli_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM unwinds as Ctrl-C does: the same line, exit status 143."""

    def terminated_on_second(cell, **kwargs):  # noqa: ANN001, ANN003, ANN202 - a runner
        if cell.spec.K == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return fake_runner(cell, **kwargs)

    monkeypatch.setattr(
        bmbench.cli.ablate, "run_suite", partial(run_suite, runner=terminated_on_second, prepare=no_data)
    )
    path, out = suite_file(tmp_path), tmp_path / "out"
    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(cli_app, ["ablate", str(path), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 143
    said = " ".join(result.output.split())
    assert f"terminated (SIGTERM): 1 finished cells kept in {out / 'fake'}; run the same command again" in said
    assert len(pd.read_csv(out / "fake" / "summary.csv")) == 1
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is the command's alone
