"""`bmbench train`: train one variant on a COCO-format dataset (default: the synthetic shapes) and checkpoint it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bmbench.cli.console import console
from bmbench.cli.options import DataOption, DeviceOption, config_options
from bmbench.cli.plugin import PluginOption, load_plugin_options
from bmbench.cli.progress import RichEvents
from bmbench.cli.replace import TRAIN_FILES, check_replaceable, held_run, replacing
from bmbench.cli.signals import sigterm_as_interrupt, stop_code, stop_word
from bmbench.training.config import TrainConfig
from bmbench.training.train import TrainResult, train
from bmbench.variants import parse_spec


def default_train_dir(name: str, protocol: str, seed: int) -> Path:
    """results/train/<variant>-<protocol>-s<seed>, the variant's spec made filesystem-safe."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")
    return Path("results") / "train" / f"{slug}-{protocol}-s{seed}"


@config_options(TrainConfig)
def train_cli(
    variant: Annotated[str, typer.Argument(help="Preset or spec, e.g. blendmask or blendmask:K=4,M=7,R=56.")],
    config: TrainConfig,  # one option per field that declares a help (bmbench.cli.options)
    data: DataOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder. Default: results/train/<variant>-<protocol>-s<seed>.")
    ] = None,
    device: DeviceOption = "auto",
    trunk_cache: Annotated[
        Path | None, typer.Option("--trunk-cache", help="Folder of cached shared trunks. Default: results/trunks.")
    ] = None,
    plugin: PluginOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the run that --out holds already (as a whole, once trained).")
    ] = False,
) -> None:
    """Train a variant and write checkpoint.pt, train_log.csv and meta.json."""
    load_plugin_options(plugin)
    spec = parse_spec(variant)
    out = out or default_train_dir(spec.name, config.protocol, config.seed)
    check_replaceable(out, TRAIN_FILES, force=force)
    held = held_run(out, TRAIN_FILES) is not None
    try:
        with sigterm_as_interrupt(), replacing(out, TRAIN_FILES) as target, RichEvents() as events:
            options = {"device": device, "trunk_cache": trunk_cache, "events": events}
            result = train(spec, config, data_dir=data, out=target, **options)
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (Terminated): say what was kept
        console(stderr=True).print(
            f"{stop_word(err)}: training stopped before its checkpoint was written, so {out} "
            f"{'keeps the run it held' if held else 'holds no new run'}; a shared trunk or pretraining finished "
            "before the stop stays cached; nothing half-written was left",
            soft_wrap=True,
        )
        raise typer.Exit(stop_code(err)) from None  # not KeyboardInterrupt: the group would add its generic line
    print_result(result, title=f"trained {spec} ({config.protocol})")
    console().print(f"checkpoint: {out / result.checkpoint.name}", soft_wrap=True)


def print_result(result: TrainResult, *, title: str) -> None:
    """The run's final metrics, one row each."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.metrics.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console().print(table)
