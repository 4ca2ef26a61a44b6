"""`bmbench data synth` leaves no folder behind when refused or interrupted, so that the same command can be rerun."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import bmbench.data.synth as synth


def test_a_negative_seed_is_refused_in_one_line_and_writes_nothing(cli_app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "new" / "ds"
    result = CliRunner().invoke(
        cli_app, ["data", "synth", "--out", str(out), "--images", "3", "--size", "64", "--seed", "-1"]
    )
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.strip()] == [
        "error: synthetic dataset: the seed must be a non-negative integer, got -1"
    ]
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_leaves_nothing_and_the_rerun_succeeds(
    cli_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ds"
    args = ["data", "synth", "--out", str(out), "--images", "6", "--size", "64"]
    calls = []
    render = synth.render_image

    def interrupted(rng: np.random.Generator, size: int, difficulty: str):  # noqa: ANN202 - render_image's result
        calls.append(1)
        if len(calls) == 4:  # three images are on disk by now
            raise KeyboardInterrupt
        return render(rng, size, difficulty)

    monkeypatch.setattr(synth, "render_image", interrupted)
    stopped = CliRunner().invoke(cli_app, args)
    assert stopped.exit_code == 130 and "nothing half-written was left" in stopped.output
    assert list(tmp_path.iterdir()) == []  # no dataset, no hidden scratch folder
    monkeypatch.setattr(synth, "render_image", render)
    again = CliRunner().invoke(cli_app, args)
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert len(list((out / "train").iterdir())) + len(list((out / "val").iterdir())) == 6
