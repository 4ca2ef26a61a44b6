"""Options generated from a config dataclass: a field with a help is an option (its name, default and help), the
command receives the config they build, and `bmbench train`'s options are TrainConfig's."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Annotated, Literal

import pytest
import typer
from typer.testing import CliRunner

from bmbench.cli import load_command
from bmbench.cli.options import config_options
from bmbench.training.config import TrainConfig


@dataclass(frozen=True)
class Toy:
    steps: int = field(default=3, metadata={"help": "How many steps."})
    rate_hz: float | None = field(default=None, metadata={"help": "A rate. Default: none."})
    mode: Literal["a", "b"] = field(default="a", metadata={"help": "a | b."})
    loud: bool = field(default=True, metadata={"help": "Say more."})
    hidden: int = 7  # no help: not an option


def _run(command: object, args: list[str]) -> typer.testing.Result:
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("toy")(command)
    return CliRunner().invoke(app, ["toy", *args])


def test_each_field_with_a_help_is_one_option_and_the_command_gets_the_config() -> None:
    seen: list[tuple[str, Toy]] = []

    @config_options(Toy)
    def toy_cli(name: Annotated[str, typer.Argument()], config: Toy, tail: Annotated[int, typer.Option()] = 1) -> None:
        seen.append((name, config))

    assert _run(toy_cli, ["x"]).exit_code == 0
    assert seen[-1] == ("x", Toy())  # every default is the field's
    result = _run(toy_cli, ["y", "--steps", "5", "--rate-hz", "2.5", "--mode", "b", "--no-loud", "--tail", "2"])
    assert result.exit_code == 0, result.output
    assert seen[-1] == ("y", Toy(steps=5, rate_hz=2.5, mode="b", loud=False))
    assert _run(toy_cli, ["z", "--hidden", "1"]).exit_code == 2  # a field without a help is no option
    help_text = _run(toy_cli, ["--help"]).output
    for text in ("--steps", "How many steps.", "--rate-hz", "--no-loud", "a | b.", "--tail"):
        assert text in help_text


def test_a_command_without_the_config_parameter_or_with_a_clashing_option_is_refused() -> None:
    def no_config(steps: int = 1) -> None: ...

    def clash(config: Toy, steps: int = 1) -> None: ...

    for command in (no_config, clash):
        with pytest.raises(TypeError):
            config_options(Toy)(command)


def test_train_options_are_the_config_fields_with_a_help() -> None:
    command = load_command("train")
    options = {param.name: param for param in command.params}
    declared = [item for item in fields(TrainConfig) if "help" in item.metadata]
    assert len(declared) >= 12
    for item in declared:
        assert options[item.name].default == item.default and options[item.name].help == item.metadata["help"]
    assert "pretrain_head" not in options  # no help: the suite file sets it, the command does not
    flags = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for flag in ("--batch-size", "--image-size", "--trunk-iters", "--trunk-lr", "--semantic-aux", "--no-semantic-aux"):
        assert flag in flags
