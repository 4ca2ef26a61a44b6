"""`bmbench evaluate`: COCO mask and box AP of a checkpoint (predicted or oracle boxes), of a results file, or of
reference masks built from the ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bmbench.ablation.suite import EvalSpec
from bmbench.cli.console import console
from bmbench.cli.options import DataOption, DeviceOption, config_options
from bmbench.cli.plugin import PluginOption, load_plugin_options
from bmbench.cli.progress import RichEvents
from bmbench.cli.replace import EVALUATE_FILES, check_replaceable, replacing
from bmbench.errors import BmbenchError
from bmbench.evaluation.cocoeval import check_evaluator, check_max_dets
from bmbench.evaluation.evaluate import Source, evaluate_source
from bmbench.evaluation.reference_masks import REFERENCES
from bmbench.evaluation.scoring import STAT_NAMES
from bmbench.results import check_out_dir

OUT_HELP = (
    "Output folder. Default: eval-<split>-<boxes> beside the checkpoint, or results/reference/<data>-<split>-<kind> "
    "for --reference."
)


@config_options(EvalSpec, param="rules")
def evaluate_cli(
    checkpoint: Annotated[Path | None, typer.Argument(help="A checkpoint.pt written by `bmbench train`.")] = None,
    *,
    data: DataOption = None,
    rules: EvalSpec,  # --boxes, --evaluator, --max-dets: the fields of a suite's eval: section that declare a help
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
    out: Annotated[Path | None, typer.Option("--out", help=OUT_HELP)] = None,
    device: DeviceOption = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per inference batch.")] = 8,
    plugin: PluginOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the evaluation that --out holds already (as a whole, once done).")
    ] = False,
) -> None:
    """Evaluate a checkpoint (writes detections.json and metrics.csv), score a detections file, or score reference
    masks built from the ground truth (what a mask AP means on the dataset)."""
    load_plugin_options(plugin)
    kind, source = chosen_source(checkpoint, detections, reference, rules=rules, out=out)
    out = out or default_out(kind, source, data=data, split=split, boxes=rules.boxes)
    check_replaceable(out, EVALUATE_FILES, force=force)  # an earlier evaluation is never mixed with this one
    with replacing(out, EVALUATE_FILES) as target, RichEvents() as events:
        metrics = evaluate_source(
            kind, source, data, out=target, boxes=rules.boxes, device=device, batch_size=batch_size, events=events,
            split=split, evaluator=rules.evaluator, max_dets=rules.max_dets,
        )  # fmt: skip
    print_metrics(metrics, title=_title(kind, source, split=split, boxes=rules.boxes, metrics=metrics))
    console().print(f"wrote {out}", soft_wrap=True)


def chosen_source(
    checkpoint: Path | None, detections: Path | None, reference: str | None, *, rules: EvalSpec, out: Path | None
) -> tuple[Source, Path | str]:
    """The one source the command was given, and its kind; every option checked before any work (BmbenchError)."""
    given = {"CHECKPOINT": checkpoint, "--detections": detections, "--reference": reference}
    sources = [name for name, value in given.items() if value is not None]
    if len(sources) > 1:
        raise BmbenchError(f"give one of CHECKPOINT, --detections and --reference, not {' and '.join(sources)}")
    if not sources:
        raise BmbenchError("give a CHECKPOINT to evaluate, --detections FILE.json to score, or --reference KIND")
    if rules.boxes != "predicted" and checkpoint is None:
        raise BmbenchError("--boxes applies to a checkpoint only")
    check_evaluator(rules.evaluator)
    check_max_dets(rules.max_dets)
    if out is not None:
        check_out_dir(out)  # before any work: a parent that is a file fails here, not after scoring
    kind: Source = {"CHECKPOINT": "checkpoint", "--detections": "detections", "--reference": "reference"}[sources[0]]
    return kind, given[sources[0]]  # type: ignore[return-value]


def default_out(kind: Source, source: Path | str, *, data: Path | None, split: str, boxes: str) -> Path:
    """Where an evaluation goes without --out (see OUT_HELP)."""
    if kind == "reference":
        return Path("results") / "reference" / f"{data.name if data else 'synthetic'}-{split}-{source}"
    if kind == "detections":
        return Path(source).parent / f"{Path(source).stem}-scores-{split}"
    return Path(source).parent / f"eval-{split}-{boxes}"


def _title(kind: Source, source: Path | str, *, split: str, boxes: str, metrics: dict[str, Any]) -> str:
    if kind == "reference":
        return f"reference masks {source!r} on {split}"
    if kind == "detections":
        return f"{source} on {split}"
    return f"{source} on {split}, {boxes} boxes — {metrics['inference_images_per_s']:.1f} images/s"


def print_metrics(metrics: dict[str, Any], *, title: str) -> None:
    """AP, AP50, AP75 and APs/m/l for masks, boxes and boundaries, then mask AP per subset and class."""
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
