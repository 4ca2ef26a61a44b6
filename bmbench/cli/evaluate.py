"""`bmbench evaluate`: COCO mask and box AP of a checkpoint (predicted or oracle boxes), of a results file, or of
reference masks built from the ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bmbench.cli.console import console
from bmbench.cli.plugin import PluginOption, load_plugin_options
from bmbench.cli.progress import RichEvents
from bmbench.cli.replace import EVALUATE_FILES, check_replaceable, replacing
from bmbench.errors import BmbenchError
from bmbench.evaluation.cocoeval import EVALUATORS, MAX_DETS, check_evaluator, check_max_dets
from bmbench.evaluation.evaluate import BOX_SOURCES, evaluate, evaluate_detections, evaluate_reference
from bmbench.evaluation.reference_masks import REFERENCES
from bmbench.evaluation.scoring import STAT_NAMES
from bmbench.results import check_out_dir


def evaluate_cli(
    checkpoint: Annotated[Path | None, typer.Argument(help="A checkpoint.pt written by `bmbench train`.")] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="COCO-format dataset folder. Default: the synthetic shapes.")
    ] = None,
    boxes: Annotated[
        str, typer.Option(help=f"{' | '.join(BOX_SOURCES)}: the detector's boxes, or ground-truth boxes.")
    ] = "predicted",
    detections: Annotated[
        Path | None, typer.Option("--detections", help="Score this COCO results JSON instead of a checkpoint.")
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference",
            help=f"Score masks built from the ground truth instead: {' | '.join(REFERENCES)} (see README).",
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Split to score against, e.g. val, val2017.")] = "val",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output folder. Default: eval-<split>-<boxes> beside the checkpoint, or "
            "results/reference/<data>-<split>-<kind> for --reference.",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per inference batch.")] = 8,
    evaluator: Annotated[
        str,
        typer.Option(
            help=f"{' | '.join(EVALUATORS)}: COCOeval implementation (the same numbers; faster needs the "
            "faster extra: pip install 'bmbench\\[faster]')."  # rich markup would eat a bare [faster]
        ),
    ] = "pycocotools",
    max_dets: Annotated[
        int,
        typer.Option(
            "--max-dets", help="Detections kept per image, in post-processing and in COCOeval's maxDets (COCO: 100)."
        ),
    ] = MAX_DETS,
    plugin: PluginOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the evaluation that --out holds already (as a whole, once done).")
    ] = False,
) -> None:
    """Evaluate a checkpoint (writes detections.json and metrics.csv), score a detections file, or score reference
    masks built from the ground truth (what a mask AP means on the dataset)."""
    load_plugin_options(plugin)
    sources = [
        name
        for name, given in (("CHECKPOINT", checkpoint), ("--detections", detections), ("--reference", reference))
        if given is not None
    ]
    if len(sources) > 1:
        raise BmbenchError(f"give one of CHECKPOINT, --detections and --reference, not {' and '.join(sources)}")
    if not sources:
        raise BmbenchError("give a CHECKPOINT to evaluate, --detections FILE.json to score, or --reference KIND")
    if boxes != "predicted" and checkpoint is None:
        raise BmbenchError("--boxes applies to a checkpoint only")
    check_evaluator(evaluator)
    check_max_dets(max_dets)
    if out is not None:
        check_out_dir(out)  # before any work: a parent that is a file fails here, not after scoring
    if reference is not None:
        out = out or Path("results") / "reference" / f"{data.name if data else 'synthetic'}-{split}-{reference}"
    elif detections is not None:
        out = out or detections.parent / f"{detections.stem}-scores-{split}"
    else:
        out = out or checkpoint.parent / f"eval-{split}-{boxes}"
    check_replaceable(out, EVALUATE_FILES, force=force)  # an earlier evaluation is never mixed with this one
    scoring = {"split": split, "evaluator": evaluator, "max_dets": max_dets}
    with replacing(out, EVALUATE_FILES) as target:
        if reference is not None:
            metrics = evaluate_reference(reference, data, out=target, **scoring)
            title = f"reference masks {reference!r} on {split}"
        elif detections is not None:
            metrics = evaluate_detections(detections, data, out=target, **scoring)
            title = f"{detections} on {split}"
        else:
            with RichEvents() as events:
                metrics = evaluate(
                    checkpoint, data, boxes=boxes, device=device, out=target, batch_size=batch_size, events=events,
                    **scoring,
                )  # fmt: skip
            title = f"{checkpoint} on {split}, {boxes} boxes — {metrics['inference_images_per_s']:.1f} images/s"
    table = Table(title=title)
    table.add_column("")
    for name in STAT_NAMES[:6]:
        table.add_column(name, justify="right")
    for prefix in ("mask", "box", "boundary"):
        if f"{prefix}_AP" in metrics:
            cells = [metrics.get(f"{prefix}_{name}") for name in STAT_NAMES[:6]]
            table.add_row(prefix, *("" if value is None else f"{value:.3f}" for value in cells))
    console().print(table)
    parts = {k.removeprefix("mask_AP_"): v for k, v in metrics.items() if k.startswith("mask_AP_")}
    if parts:
        console().print("mask AP per subset and class: " + ", ".join(f"{k} {v:.3f}" for k, v in parts.items()))
    console().print(f"wrote {out}", soft_wrap=True)
