"""What `train` and `evaluate` do with an output folder that holds a run already, with weights that are not finite,
with a foreign pickle, and when stopped: refused in one line, replaced as a whole with --force, kept when stopped."""

from __future__ import annotations

import os
import pickle
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner

import bmbench.cli.train as train_cli_module
from bmbench.data.synth import write_synthetic_dataset

SPEC = "yolact:K=4"
TRAIN = ["--iters", "1", "--batch-size", "2", "--image-size", "64", "--device", "cpu", "--protocol", "joint"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "synth", num_images=6, size=64)


@pytest.fixture(scope="module")
def trained(cli_app: typer.Typer, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint of a one-step training."""
    out = tmp_path_factory.mktemp("trained") / "run"
    result = CliRunner().invoke(cli_app, ["train", SPEC, "--data", str(data), "--out", str(out), *TRAIN])
    assert result.exit_code == 0, result.output
    return out / "checkpoint.pt"


def lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_train_onto_a_run_is_refused_unless_force_which_replaces_the_folder(
    cli_app: typer.Typer, data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ["train", SPEC, "--data", str(data), "--out", str(out), *TRAIN]
    assert CliRunner().invoke(cli_app, args).exit_code == 0
    first = (out / "checkpoint.pt").read_bytes()
    (out / "eval-val-predicted").mkdir()  # an evaluation of the old checkpoint: stale once it is replaced
    refused = CliRunner().invoke(cli_app, [*args, "--seed", "1"])
    assert refused.exit_code == 2
    assert lines(refused.output) == [
        f"error: --out {out}: it already holds a run (checkpoint.pt); pass --force to replace it, or choose "
        "another folder"
    ]
    assert (out / "checkpoint.pt").read_bytes() == first
    forced = CliRunner().invoke(cli_app, [*args, "--seed", "1", "--force"])
    assert forced.exit_code == 0, forced.output
    assert (out / "checkpoint.pt").read_bytes() != first
    assert not (out / "eval-val-predicted").exists()  # the folder was replaced as a whole
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "meta.json", "train_log.csv", "train_log.parquet"]
    assert hidden(tmp_path) == []


def test_evaluate_onto_an_evaluation_is_refused_unless_force(
    cli_app: typer.Typer, trained: Path, data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    scored = CliRunner().invoke(
        cli_app, ["evaluate", str(trained), "--data", str(data), "--device", "cpu", "--out", str(out)]
    )
    assert scored.exit_code == 0, scored.output
    assert (out / "detections.json").is_file()
    reference = ["evaluate", "--reference", "roi-28", "--data", str(data), "--out", str(out)]
    refused = CliRunner().invoke(cli_app, reference)
    assert refused.exit_code == 2
    assert lines(refused.output) == [
        f"error: --out {out}: it already holds a run (metrics.csv); pass --force to replace it, or choose "
        "another folder"
    ]
    forced = CliRunner().invoke(cli_app, [*reference, "--force"])
    assert forced.exit_code == 0, forced.output
    assert not (out / "detections.json").exists()  # nothing of the checkpoint's evaluation is left beside it
    assert (out / "metrics.csv").is_file() and hidden(tmp_path) == []


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_a_checkpoint_with_non_finite_weights_is_refused_in_one_line(
    cli_app: typer.Typer, trained: Path, data: Path, tmp_path: Path, poison: float
) -> None:
    state = torch.load(trained, weights_only=True)
    if poison != poison:  # NaN: every weight, as a diverged training leaves them
        state["model"] = {k: v.fill_(poison) if v.is_floating_point() else v for k, v in state["model"].items()}
    else:  # one infinity is enough
        next(v for v in state["model"].values() if v.is_floating_point()).view(-1)[0] = poison
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    result = CliRunner().invoke(cli_app, ["evaluate", str(bad), "--data", str(data), "--device", "cpu"])
    assert result.exit_code == 2
    (line,) = lines(result.output)
    assert line.startswith(f"error: checkpoint {bad}: ") and "hold NaN or infinite values" in line
    assert not (tmp_path / "eval-val-predicted").exists()


def test_a_raw_pickle_is_refused_in_one_line(cli_app: typer.Typer, tmp_path: Path) -> None:
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"model": [1, 2, 3]}, protocol=4))
    result = CliRunner().invoke(cli_app, ["evaluate", str(raw)])
    assert result.exit_code == 2
    assert lines(result.output) == [f"error: checkpoint {raw} is corrupted or not a torch file (UnpicklingError)"]
    init = CliRunner().invoke(cli_app, ["train", SPEC, "--init", str(raw), "--out", str(tmp_path / "run"), *TRAIN])
    assert init.exit_code == 2
    assert lines(init.output) == [f"error: --init {raw}: not a torch state-dict file (UnpicklingError)"]


def test_sigterm_on_a_forced_train_keeps_the_old_run_and_says_so(
    cli_app: typer.Typer, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    args = ["train", SPEC, "--data", str(data), "--out", str(out), *TRAIN]
    assert CliRunner().invoke(cli_app, args).exit_code == 0
    first = (out / "checkpoint.pt").read_bytes()

    def stopped(*_: Any, out: Path, **__: Any) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "checkpoint-1.pt").write_bytes(b"half a run")
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(train_cli_module, "train", stopped)
    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(cli_app, [*args, "--force"])
    assert result.exit_code == 143
    said = " ".join(result.output.split())
    assert f"terminated (SIGTERM): training stopped before its checkpoint was written, so {out} keeps the run" in said
    assert (out / "checkpoint.pt").read_bytes() == first and not (out / "checkpoint-1.pt").exists()
    assert hidden(tmp_path) == [] and signal.getsignal(signal.SIGTERM) == before
