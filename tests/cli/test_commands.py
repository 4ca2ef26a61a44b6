"""The `bmbench` group: every command listed without importing its module, and each one loaded when it runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from bmbench.cli import COMMANDS, app


def test_the_group_help_lists_every_command_without_importing_torch() -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom bmbench.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "print(result.exit_code, 'torch' in sys.modules, result.output)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("0 False")
    for name, (_, _, line) in COMMANDS.items():
        assert name in out and line.split()[0] in out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_loads_with_its_own_help(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert f"bmbench {name}" in result.output  # its own usage line, not the group's


def test_an_unknown_command_is_exit_2() -> None:
    result = CliRunner().invoke(app, ["nope"])
    assert result.exit_code == 2 and "No such command" in result.output
