"""`bmbench train`: train one variant on a COCO-format dataset (default: the synthetic shapes) and checkpoint it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bmbench.cli.console import console
from bmbench.cli.plugin import PluginOption, load_plugin_options
from bmbench.cli.progress import RichEvents
from bmbench.cli.replace import TRAIN_FILES, check_replaceable, held_run, replacing
from bmbench.cli.signals import sigterm_as_interrupt, stop_code, stop_word
from bmbench.models.backbone import TRUNKS
from bmbench.training.config import PROTOCOLS, TrainConfig
from bmbench.training.train import train
from bmbench.variants import parse_spec


def default_train_dir(name: str, protocol: str, seed: int) -> Path:
    """results/train/<variant>-<protocol>-s<seed>, the variant's spec made filesystem-safe."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")
    return Path("results") / "train" / f"{slug}-{protocol}-s{seed}"


def train_cli(
    variant: Annotated[str, typer.Argument(help="Preset or spec, e.g. blendmask or blendmask:K=4,M=7,R=56.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="COCO-format dataset folder. Default: the synthetic shapes.")
    ] = None,
    iters: Annotated[int, typer.Option(help="Optimiser steps (shared-trunk: of the head).")] = TrainConfig.iters,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.")] = TrainConfig.batch_size,
    lr: Annotated[float, typer.Option(help="AdamW peak learning rate (warm-up, then cosine decay).")] = TrainConfig.lr,
    protocol: Annotated[
        str,
        typer.Option(
            help=f"{' | '.join(PROTOCOLS)}: a cached trunk and the mask head alone; end to end; or a model "
            "pretrained once, then end to end with a fresh head."
        ),
    ] = TrainConfig.protocol,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder. Default: results/train/<variant>-<protocol>-s<seed>.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, data order and flips.")] = TrainConfig.seed,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    trunk: Annotated[str, typer.Option(help=f"Backbone + detector widths: {', '.join(TRUNKS)}.")] = TrainConfig.trunk,
    image_size: Annotated[
        int | None,
        typer.Option("--image-size", help="Longer image side (multiple of 32). Default: the dataset's own."),
    ] = TrainConfig.image_size,
    trunk_iters: Annotated[
        int, typer.Option("--trunk-iters", help="shared-trunk / finetune: steps of the one-time stage.")
    ] = TrainConfig.trunk_iters,
    trunk_lr: Annotated[
        float | None, typer.Option("--trunk-lr", help="shared-trunk / finetune: one-time stage's lr. Default: --lr.")
    ] = TrainConfig.trunk_lr,
    trunk_cache: Annotated[
        Path | None, typer.Option("--trunk-cache", help="Folder of cached shared trunks. Default: results/trunks.")
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            help="Backbone weights: torchvision:<WeightsEnum> (e.g. torchvision:ResNet50_Weights.IMAGENET1K_V2, "
            "downloaded) or a state-dict file. Default: random.",
        ),
    ] = TrainConfig.init,
    semantic_aux: Annotated[
        bool, typer.Option("--semantic-aux/--no-semantic-aux", help="Auxiliary semantic loss on the trunk's FPN.")
    ] = TrainConfig.semantic_aux,
    semantic_level: Annotated[
        str, typer.Option("--semantic-level", help="p3 | p2: the FPN level the auxiliary semantic loss reads.")
    ] = TrainConfig.semantic_level,
    plugin: PluginOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the run that --out holds already (as a whole, once trained).")
    ] = False,
) -> None:
    """Train a variant and write checkpoint.pt, train_log.csv and meta.json."""
    load_plugin_options(plugin)
    spec = parse_spec(variant)
    config = TrainConfig(
        protocol=protocol,  # type: ignore[arg-type] - check_config names a bad one
        iters=iters,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        trunk=trunk,
        image_size=image_size,
        trunk_iters=trunk_iters,
        trunk_lr=trunk_lr,
        semantic_aux=semantic_aux,
        semantic_level=semantic_level,  # type: ignore[arg-type] - check_config names a bad one
        init=init,
    )
    out = out or default_train_dir(spec.name, protocol, seed)
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
    table = Table(title=f"trained {spec} ({protocol})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.metrics.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console().print(table)
    console().print(f"checkpoint: {out / result.checkpoint.name}", soft_wrap=True)
