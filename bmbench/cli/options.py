"""Command options generated from a frozen config dataclass, and the options several commands share.

A config field whose metadata has a ``"help"`` line is one option of every command that takes the config: its name
is the field's with dashes (``batch_size`` -> ``--batch-size``, a bool also gets ``--no-...``), its default the
field's default and its type the field's (a Literal is read as text; the config's own checks name a bad value in one
line). The command then receives one config object instead of relaying each option by hand, so a new option is one
edit: a ``"help"`` in the config's field.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import typer

F = TypeVar("F", bound=Callable[..., Any])

DataOption = Annotated[
    Path | None, typer.Option("--data", help="COCO-format dataset folder. Default: the synthetic shapes.")
]
DeviceOption = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")]


def _option_type(hint: Any) -> Any:
    """The type Typer parses a field as: its own, except a Literal (and Literal | None), which is text."""
    if get_origin(hint) is Literal:
        return str
    args = get_args(hint)
    if type(None) in args and any(get_origin(arg) is Literal for arg in args):
        return str | None
    return hint


def config_parameters(config_type: type) -> list[inspect.Parameter]:
    """One keyword-only Typer parameter per field of `config_type` that declares a ``"help"``, in field order."""
    hints = get_type_hints(config_type)
    parameters = []
    for item in fields(config_type):
        if "help" not in item.metadata:
            continue
        default = item.default if item.default is not MISSING else item.default_factory()  # type: ignore[misc]
        option = typer.Option(*item.metadata.get("flags", ()), help=item.metadata["help"])
        annotation = Annotated[_option_type(hints[item.name]), option]
        parameters.append(
            inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        )
    return parameters


def config_options(config_type: type, *, param: str = "config") -> Callable[[F], F]:
    """Decorate a command whose parameter `param` is a `config_type`: in its place the command gets one option per
    field that declares a ``"help"`` (see config_parameters), and it is called with the config they build."""
    generated = config_parameters(config_type)
    names = [parameter.name for parameter in generated]

    def decorate(command: F) -> F:
        hints = get_type_hints(command, include_extras=True)
        own = inspect.signature(command).parameters
        clash = sorted(set(names) & set(own) - {param})
        if param not in own or clash:
            raise TypeError(f"{command.__name__}: needs a {param!r} parameter and no option named {clash}")
        parameters: list[inspect.Parameter] = []
        for parameter in own.values():
            if parameter.name == param:
                parameters += generated
            else:
                annotation = hints.get(parameter.name, parameter.annotation)
                parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=annotation))

        @functools.wraps(command)
        def wrapper(**options: Any) -> Any:
            config = config_type(**{name: options.pop(name) for name in names})
            return command(**options, **{param: config})

        wrapper.__signature__ = inspect.Signature(parameters, return_annotation=hints.get("return"))  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": hints.get("return")}
        return wrapper  # type: ignore[return-value]

    return decorate
