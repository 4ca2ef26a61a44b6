"""`bmbench speed` through typer's CliRunner: a tiny run, and every bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pandas as pd
import pytest
import torch
import typer
from typer.testing import CliRunner

from bmbench.bench.peers import (
    BLENDER,
    COMPILED,
    NEW_PASTE,
    OLD_PASTE,
    OURS_RCNN,
    PLAIN,
    ROI_ALIGN,
    ROWS,
    TORCHVISION_RCNN,
)

runner = CliRunner()
TINY = ["--image-size", "64x48", "--trunk", "small", "--budget-s", "0.005", "--threads", "1", "--device", "cpu"]


def test_tiny_run_through_the_cli(cli_app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["speed", "--vary", "R", "--values", "8,16", "--variants", "blendmask:K=2,M=2,R=8;maskrcnn:R=8"]
    result = runner.invoke(cli_app, [*args, "--instances", "1..2", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Mask branch at N=2" in result.output and "Scaling exponents" in result.output
    assert "Whole model at N=2" in result.output
    frame = pd.read_csv(out / "speed.csv")
    assert set(frame["instances"]) == {1, 2} and set(frame["R"]) == {8, 16}
    assert set(frame["stage"]) == {"bottom", "top", "merge", "paste", "total", "detector", "end_to_end"}
    assert (out / "scaling.csv").exists() and json.loads((out / "meta.json").read_text())["image_size"] == "64x48"
    allocator = json.loads((out / "meta.json").read_text())["host_allocator"]
    assert allocator.startswith("glibc, freed memory reused") or platform.libc_ver()[0] != "glibc"
    again = runner.invoke(cli_app, [*args, "--instances", "1", *TINY, "--out", str(out)])
    assert again.exit_code == 2 and "already holds a run" in again.output


def test_check_through_the_cli(cli_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bmbench.bench.checks as checks

    monkeypatch.setattr(checks, "COPY_MIB", 4)
    monkeypatch.setattr(checks, "COMPILE_PEERS", False)  # torch.compile builds C++: `bmbench speed --check` runs it
    real = checks.formulation_rows
    monkeypatch.setattr(checks, "formulation_rows", lambda w, t, compile=True: real(w, t, compile=False))
    out = tmp_path / "check"
    result = runner.invoke(
        cli_app, ["speed", "--check", "--variants", "blendmask", "--instances", "2", *TINY, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "Blender formulations" in result.output and "Repeatability" in result.output
    for name in ("peers", "formulations", "bandwidth", "repeatability"):
        assert (out / f"{name}.csv").exists()
    peers = pd.read_csv(out / "peers.csv")
    assert list(peers["row"]) == list(ROWS)  # every floor and peer the issue names, in one table
    assert "Floors and peers" in result.output
    for name in ROWS:
        assert name[:20] in result.output
    ok = peers[peers["status"] == "ok"]
    assert set(ok["row"]) == set(ROWS) - {COMPILED} and ok["ratio"].gt(0).all()
    assert ok.set_index("row").loc[[PLAIN, BLENDER, OURS_RCNN, OLD_PASTE], "equivalent"].astype(bool).all()
    for reference in (ROI_ALIGN, TORCHVISION_RCNN, NEW_PASTE):
        assert ok.set_index("row").loc[reference, "ratio"] == pytest.approx(1.0)


BAD_INPUTS = [
    (["--instances", "abc"], "'abc'"),
    (["--instances", "0..10"], "'0..10'"),
    (["--instances", "100..1"], "'100..1'"),
    (["--vary", "Q"], "unknown axis 'Q'"),
    (["--variants", "nope"], "unknown family or preset 'nope'"),
    (["--variants", "blendmask:K=0"], "K must be >= 1"),
    (["--variants", "blendmask:K"], "expected KEY=VALUE"),
    (["--image-size", "800"], "is not WxH"),
    (["--image-size", "800x"], "is not WxH"),
    (["--values", "28,x"], "--values"),
    (["--dtype", "fp16", "--device", "cpu"], "fp16 needs a CUDA device"),
    (["--vary", "R", "--values", "27", "--variants", "maskrcnn"], "nothing to measure"),
]
if not torch.cuda.is_available():
    BAD_INPUTS.append((["--device", "cuda"], "CUDA is not available"))


def test_refusals_before_any_work_are_one_line_exit_2(
    cli_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    cases = [
        (["--out", str(tmp_path / "file" / "run")], "not a folder"),
        (["--image-size", "100000x100000", "--instances", "1", "--trunk", "small", "--device", "cpu"], "GiB"),
        (["--precision", "1.5"], "--precision"),
    ]
    for args, message in cases:
        result = runner.invoke(cli_app, ["speed", *args])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    cli_app: typer.Typer, args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the default --out would land under here
    result = runner.invoke(cli_app, ["speed", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_runs_two_prints_the_drift_the_stability_table_and_each_runs_verdicts(
    cli_app: typer.Typer, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ["speed", "--values", "8,16,24", "--variants", "blendmask:K=2,M=2,R=8", "--instances", "1,2,4"]
    result = runner.invoke(cli_app, [*args, *TINY, "--runs", "2", "--no-end-to-end", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "drift probe (conv2d 3x3" in result.output and "Stability" in result.output
    assert "finding 5:" in result.output and "finding 6:" in result.output
    assert (out / "run2" / "speed.csv").exists() and (out / "stability.csv").exists()
    assert "does not have" not in result.output  # the table written is the table the schema names


def test_schedule_sequential_is_recorded(cli_app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["speed", "--values", "8", "--variants", "blendmask:K=2,M=2,R=8", "--instances", "1"]
    result = runner.invoke(cli_app, [*args, *TINY, "--schedule", "sequential", "--no-end-to-end", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(out / "speed.csv")["schedule"]) == {"sequential"}
    assert json.loads((out / "meta.json").read_text())["schedule"] == "sequential"


def test_every_field_of_the_sweep_request_is_a_cli_option_and_reaches_the_config() -> None:
    from dataclasses import fields

    from bmbench.bench.options import SweepConfig, SweepRequest
    from bmbench.cli import load_command

    options = {param.name for param in load_command("speed").params}
    requested = {item.name for item in fields(SweepRequest)}
    assert requested <= options
    # every request field but vary (parsed into the config's axis) is a field of the config it builds
    assert requested - {"vary"} <= {item.name for item in fields(SweepConfig)}
