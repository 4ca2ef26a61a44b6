"""`bmbench speed`: latency of each mask head's stages against R, K or M and the instance count.

The sweep's options are generated from bmbench.bench.options.SweepRequest (one field an option, its help there);
the body validates them into a SweepConfig (a BmbenchError, exit 2 and nothing written, on bad input), calls
bmbench.bench.run_folder and prints rich tables. Letters: N instances, K bases, M attention side, R mask side.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bmbench.bench.checks import CheckRun, count_check_steps
from bmbench.bench.drift import drift_text
from bmbench.bench.options import (
    SweepConfig,
    SweepRequest,
    make_config,
)
from bmbench.bench.plan import count_steps, plan_points
from bmbench.bench.run_folder import (
    SpeedRun,
    check_out_dir,
    check_sweep_fits,
    default_out_dir,
    machine_load,
    run_checks_to,
    run_speed,
)
from bmbench.cli.console import console
from bmbench.cli.options import config_options
from bmbench.cli.plugin import PluginOption, load_plugin_options
from bmbench.device import reuse_freed_memory

BUSY_LOAD = 1.0  # a 1-minute load average from other work at which the run warns


@config_options(SweepRequest, param="request")
def speed_cli(
    request: SweepRequest,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Run the performance checks instead of a sweep: floors and peers side by side (roi_align alone, "
            "plain formulation, blender, torch.compile, torchvision's Mask R-CNN head, old vs new paste), blender "
            "formulations (K=4, M=7, R=56), merge bandwidth against copy bandwidth, repeatability; at the largest N.",
        ),
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Output folder. Default: results/speed/<time>-vary<axis>/.")] = None,
    plugin: PluginOption = None,
) -> None:
    """Time each mask head's stages (bottom, top, merge, paste, total) against R, K or M and the number of
    instances; write speed.csv/.parquet, scaling.csv and meta.json."""
    load_plugin_options(plugin)
    config = make_config(request)
    points, _ = plan_points(config)
    out_dir = out if out is not None else default_out_dir(config, check=check)
    check_out_dir(out_dir)
    check_sweep_fits(config)  # a request that cannot fit at all: refused with the estimate, nothing written
    reuse_freed_memory()  # stable host-memory timings: see bmbench.device.reuse_freed_memory
    load = machine_load()
    if load is not None and load >= BUSY_LOAD:
        console(stderr=True).print(
            f"[yellow]warning:[/] the machine is busy (load average {load:g}, {os.cpu_count()} CPUs): timings will be "
            "slower and noisier; on a shared CPU, --threads 1 avoids threads stalling each other."
        )
    steps = count_check_steps(config) if check else count_steps(config, points) * config.runs + int(config.peers)
    with _progress() as bar:
        task = bar.add_task("starting", total=steps)
        started: list[str] = []

        def advance(description: str, done: int = 1) -> None:  # `done` more steps finished since the last call
            started.extend([description] * done)
            bar.update(task, description=description, completed=min(steps, len(started)))

        if check:
            checks = run_checks_to(config, out_dir, progress=advance)
        else:
            run = run_speed(config, out_dir, progress=advance)
        bar.update(task, description="done", completed=steps)
    if check:
        _print_checks(checks, out_dir)
    else:
        _print_summary(run, config)
        if config.profile:
            console().print(trace_line(out_dir / "traces"), markup=False, highlight=False)


def trace_line(trace_dir: Path) -> str:
    """Where the profiler traces lie and how to open them: TensorBoard's profiler tab is an optional extra."""
    if any(importlib.util.find_spec(name) is None for name in ("tensorboard", "torch_tb_profiler")):
        return (
            f"traces in {trace_dir}: to view them in TensorBoard, pip install 'bmbench[tensorboard]'; "
            "or open a .pt.trace.json file in https://ui.perfetto.dev"
        )
    return f"traces in {trace_dir}: tensorboard --logdir {trace_dir} (the PyTorch Profiler tab)"


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}", style="cyan"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console(stderr=True),
        transient=False,
    )


def _ms(value: float, noisy: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"
    return text + ("*" if noisy else "")


def _cell(rows: pd.DataFrame) -> str:
    if rows.empty:
        return ""
    row = rows.iloc[0]
    if row["status"] != "ok":
        return str(row["status"])
    return _ms(row["median_ms"], bool(row["noisy"])) + ("" if bool(row.get("precise", True)) else "?")


def _print_summary(run: SpeedRun, config: SweepConfig) -> None:
    out = console()
    frame, num = run.frame, max(config.instances)
    stages = ("bottom", "top", "merge", "paste", "total")
    table = Table(title=f"Mask branch at N={num}, {config.image_text}, {config.device} {config.dtype} — median ms")
    for column in ("variant", config.axis, *stages):
        table.add_column(column, justify="left" if column == "variant" else "right")
    at_n = frame[frame["instances"] == num]
    for (variant, value), group in at_n.groupby(["variant", "axis_value"], dropna=False, sort=False):
        applies = bool(group["axis_applies"].iloc[0])
        shown = ("–" if pd.isna(value) else str(value)) + ("" if applies else " (fixed)")
        table.add_row(str(variant), shown, *(_cell(group[group["stage"] == stage]) for stage in stages))
    out.print(table)
    whole = frame[frame["stage"].isin(("detector", "end_to_end"))]
    if not whole.empty:
        e2e = Table(title=f"Whole model at N={num} (backbone + FPN + FCOS + mask branch) — median ms")
        for column in ("variant", "detector", "end_to_end", "mask share"):
            e2e.add_column(column, justify="left" if column == "variant" else "right")
        for variant, group in whole.groupby("variant", sort=False):
            detector, total = (group[group["stage"] == stage] for stage in ("detector", "end_to_end"))
            share = "–"
            if (group["status"] == "ok").all():
                share = f"{1 - detector['median_ms'].iloc[0] / total['median_ms'].iloc[0]:.0%}"
            e2e.add_row(str(variant), _cell(detector), _cell(total), share)
        out.print(e2e)
    if not run.scaling.empty:
        fits = Table(
            title="Scaling exponents: cost model a + b·x^p; paired p (within cycles) [95 % interval], then pooled "
            "p [interval] | log-log slope (R²)"
        )
        for column in ("variant", "stage", f"vs {config.axis}", "vs N"):
            fits.add_column(column, justify="left" if column in ("variant", "stage") else "right")
        for (variant, stage), group in run.scaling.groupby(["variant", "stage"], sort=False):
            own = dict(config.variants)[variant]
            own_at = f"{config.axis}={getattr(own, config.axis)}"
            axis_fit = group[group["x"] == config.axis]
            n_fit = group[(group["x"] == "N") & group["at"].isin((own_at, "own"))]
            n_fit = n_fit if not n_fit.empty else group[group["x"] == "N"].head(1)
            fits.add_row(str(variant), str(stage), _fit(axis_fit), _fit(n_fit))
        out.print(fits)
    for skipped in run.skipped:
        out.print(f"[yellow]skipped[/] {skipped.variant} {config.axis}={skipped.axis_value}: {skipped.reason}")
    failed = frame[frame["status"] != "ok"].drop_duplicates(["spec", "instances", "status"])
    for _, row in failed.iterrows():
        out.print(f"[red]{row['status']}[/] {row['spec']} N={row['instances']} {row['stage']}: {row['error']}")
    if run.peers is not None:
        _print_peers(run.peers)
    out.print(drift_text(run.drift))
    for repeat in run.repeats:
        out.print(f"run {repeat.out_dir.name}: " + drift_text(repeat.drift))
    if run.stability is not None:
        _print_stability(run)
    noisy = int(frame["noisy"].sum())
    imprecise = int((~frame["precise"].astype(bool)).sum())
    out.print(
        f"{len(frame)} rows, {noisy} noisy (IQR/median > 10 %, marked *), {imprecise} short of the ±"
        f"{config.precision:.0%} precision target (marked ?), {run.wall_s:.0f} s — [bold]{run.out_dir}[/]"
    )


def _print_stability(run: SpeedRun) -> None:
    """What the later runs repeated: points agreeing, exponents, and the speed findings' verdicts in each run."""
    from bmbench.report.load import load_speed_run
    from bmbench.report.speed_findings import speed_verdicts  # the report's rules, judged on each run's own tables

    table = Table(title="Stability: each later run against the first")
    for column in ("run", "what", "first", "later", "agree"):
        table.add_column(column, justify="left" if column in ("run", "what") else "right")
    for _, row in run.stability.iterrows():
        if row["kind"] == "exponent":
            first = f"{row['first']:.2f} [{row['first_low']:.2f}, {row['first_high']:.2f}]"
            later = f"{row['second']:.2f} [{row['second_low']:.2f}, {row['second_high']:.2f}]"
            agree = "overlap" if row["agree"] else "[red]apart[/]"
            table.add_row(str(row["run"]), str(row["name"]), first, later, agree)
        else:
            shown = f"{row['agree']:.0%} of {int(row['points'])} points overlap"
            table.add_row(str(row["run"]), row["kind"], "", f"median |diff| {row['median_abs_diff_pct']:.1f} %", shown)
    console().print(table)
    stored = load_speed_run(run.out_dir)
    verdicts = [speed_verdicts(stored)] + [speed_verdicts(repeat) for repeat in stored.repeats]
    for finding in verdicts[0]:
        seen = [v.get(finding, "–") for v in verdicts]
        same = "agree" if len(set(seen)) == 1 else "[red]unstable here[/]"
        console().print(f"finding {finding}: " + " | ".join(seen) + f" — {same}")


def _fit(rows: pd.DataFrame) -> str:
    if rows.empty:
        return "–"
    row = rows.iloc[0]
    slope = f"{row['slope']:.2f} ({row['r2']:.2f}) @{row['at']}"
    if pd.isna(row.get("a_ms")):
        return slope
    paired = ""
    if not pd.isna(row.get("p_floor")):
        paired = f"floor {row['p_floor']:.2f} [{row['p_floor_low']:.2f}, {row['p_floor_high']:.2f}]; "
    if not pd.isna(row.get("p_paired")):
        paired += f"paired {row['p_paired']:.2f} [{row['p_paired_low']:.2f}, {row['p_paired_high']:.2f}]; "
    if pd.isna(row["p"]):
        return f"{paired}{row['a_ms']:.3g} ms, flat | {slope}"
    return f"{paired}{row['a_ms']:.3g} ms + p {row['p']:.2f} [{row['p_low']:.2f}, {row['p_high']:.2f}] | {slope}"


def _print_peers(peers: pd.DataFrame) -> None:
    table = Table(title="Floors and peers, side by side: median ms [95 % interval], ratio to the reference row")
    for column in ("check", "row", "median ms", "interval", "n", "ratio", "to", "equal"):
        table.add_column(column, justify="left" if column in ("check", "row", "to") else "right")
    for _, row in peers.iterrows():
        if row["status"] != "ok":
            table.add_row(
                str(row["check"]), str(row["row"]), str(row["status"]), str(row["error"])[:60], "", "", "", ""
            )
            continue
        precise = "" if bool(row["precise"]) else "?"
        interval = f"[{_ms(row['ci_low_ms'])}, {_ms(row['ci_high_ms'])}]"
        equal = "–" if row["equivalent"] is None or pd.isna(row["equivalent"]) else str(bool(row["equivalent"]))
        table.add_row(
            str(row["check"]),
            str(row["row"]),
            _ms(row["median_ms"]) + precise,
            interval,
            str(int(row["n"])),
            f"×{row['ratio']:.2f}",
            str(row["reference"]),
            equal,
        )
    console().print(table)


def _print_checks(run: CheckRun, out_dir: Path) -> None:
    out = console()
    _print_peers(run.peers)
    tables = (
        ("Blender formulations", run.formulations, ("formulation", "equivalent", "median_ms", "ratio_to_blender")),
        ("Bandwidth", run.bandwidth, ("what", "median_ms", "gb_per_s", "gflop_per_s")),
        ("Repeatability", run.repeatability, ("variant", "stage", "round1_ms", "round2_ms", "relative_spread")),
    )
    for title, frame, columns in tables:
        table = Table(title=title)
        shown = [c for c in columns if c in frame.columns]
        for column in shown:
            table.add_column(column)
        for _, row in frame.iterrows():
            table.add_row(*(_format(row[c]) for c in shown))
        out.print(table)
    out.print(f"[bold]{out_dir}[/]")


def _format(value: object) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
