"""The `bmbench` group: every command listed without importing its module, and each one loaded when it runs."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
import typer
from typer.testing import CliRunner

import bmbench.cli
from bmbench.cli import COMMANDS, load_command


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
def test_each_command_loads_with_its_own_help(cli_app: typer.Typer, name: str) -> None:
    result = CliRunner().invoke(cli_app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert f"bmbench {name}" in result.output  # its own usage line, not the group's


def test_an_unknown_command_is_exit_2(cli_app: typer.Typer) -> None:
    result = CliRunner().invoke(cli_app, ["nope"])
    assert result.exit_code == 2 and "No such command" in result.output


def test_the_cli_app_fixture_resolves_a_command_through_load_command(
    cli_app: typer.Typer, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[str] = []

    def spy(name: str) -> click.Command:
        loaded.append(name)
        return load_command(name)

    monkeypatch.setattr(bmbench.cli, "load_command", spy)
    result = CliRunner().invoke(cli_app, ["variants", "--help"])
    assert result.exit_code == 0 and loaded == ["variants"]
