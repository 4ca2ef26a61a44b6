"""An optional feature whose extra is not installed says in one line which extra to install (the faster evaluator's
line is tested with the evaluate CLI in tests/evaluation/test_evaluate_cli.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bmbench.ablation.executors import execute_ray
from bmbench.cli.speed import trace_line
from bmbench.errors import BmbenchError


def test_ray_executor_without_ray_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(BmbenchError) as raised:
        list(execute_ray([], runner=None, suite_dir=tmp_path, device="cpu", data_dir=None, starting=None))  # type: ignore
    assert str(raised.value) == "--executor ray needs Ray: pip install 'bmbench[ray]'"


@pytest.mark.parametrize("missing", ["tensorboard", "torch_tb_profiler"])
def test_profiler_traces_name_the_tensorboard_extra(missing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, missing, None)
    line = trace_line(Path("results/speed/x/traces"))
    assert "\n" not in line
    assert line.startswith("traces in results/speed/x/traces: ")
    assert "pip install 'bmbench[tensorboard]'" in line


def test_evaluator_help_names_the_faster_extra(cli_app: typer.Typer) -> None:
    result = CliRunner().invoke(cli_app, ["evaluate", "--help"], terminal_width=400)
    assert result.exit_code == 0
    assert "pip install 'bmbench[faster]'" in result.stdout  # rich markup used to swallow '[faster]'
