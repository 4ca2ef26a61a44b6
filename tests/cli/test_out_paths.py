"""Every command refuses an --out under a regular file before any work: one line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bmbench.data.synth import write_synthetic_dataset


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "synth", num_images=4, size=64)


COMMANDS = {
    "speed": ["speed", "--vary", "R", "--values", "8", "--instances", "1", "--variants", "maskrcnn:R=8"],
    "train": ["train", "blendmask:K=2,M=2,R=8", "--iters", "1", "--batch-size", "1", "--protocol", "joint"],
    "evaluate": ["evaluate", "--reference", "box"],
    "data synth": ["data", "synth", "--images", "4", "--size", "64"],
    "report": ["report"],
    "ablate": ["ablate", "SUITE"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_out_under_a_regular_file_is_refused_first(
    cli_app: typer.Typer, command: str, tiny_data: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    suite = tmp_path / "s.yaml"
    suite.write_text(f"dataset: {{kind: coco, root: {tiny_data}, train: train, val: val}}\nvariants: [yolact]\n")
    args = [str(suite) if a == "SUITE" else a for a in COMMANDS[command]]
    if command in ("train", "evaluate"):
        args += ["--data", str(tiny_data)]
    target = blocker / "out" / ("report.md" if command == "report" else "run")
    result = CliRunner().invoke(cli_app, [*args, "--out", str(target)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().count("\n") == 0 and "a-file is a file, not a folder" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "s.yaml"]  # nothing written
