"""Assemble the markdown report: findings with verdicts, one section per environment, published figures apart.

``build_report`` reads everything under a results folder, draws the figures into ``<report stem>_figures/`` next
to the report and writes the report; every file is written atomically.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import pandas as pd

import bmbench
from bmbench.report import curves, figures, reference_table, stats, tables
from bmbench.report.figures import FigureResult
from bmbench.report.findings import FAILS, FINDINGS, HOLDS, NOT_MEASURED, NOT_SIGNIFICANT, UNSTABLE, Verdict
from bmbench.report.judge import judge_findings
from bmbench.report.load import META_PROBLEM, AblationSuite, Environment, StoredSpeedRun, load_results
from bmbench.results import git_commit, write_text
from bmbench.schema import BUILT_IN_ORIGIN

TITLE = "bmbench report: BlendMask-family mask heads, measured here"
LEGEND = (
    "Letters: N instances, K bases, M attention side, R mask side. Times are medians in ms with the IQR in "
    "brackets; `~` marks a noisy point (IQR > 10 % of the median). AP is COCO AP in points (0–100)."
)
PUBLISHED_LABEL = "Published figures: published, other hardware and other data"
PUBLISHED_NOTE = (
    "These numbers come from the papers and model zoos named in the `source` column (COCO, the GPUs listed). "
    "They are not comparable with the measurements above and are never mixed into their tables."
)
VERDICT_TEXT = {
    HOLDS: "holds",
    FAILS: "does not hold here",
    NOT_SIGNIFICANT: NOT_SIGNIFICANT,
    NOT_MEASURED: "not measured",
    UNSTABLE: "unstable here",
}
SPREAD_NOTE = (
    f"AP is the mean over seeds ± the sample std; intervals are {stats.CI_LEVEL:.0%} percentile bootstraps of the "
    f"mean ({stats.BOOTSTRAP_RESAMPLES} resamples, seeded), paired over the seeds two cells share. A difference whose "
    f"interval contains the rule's threshold, or that rests on fewer than {stats.MIN_SEEDS} seeds, reads *not "
    f"significant at this budget*. With {stats.MIN_SEEDS} seeds the interval is close to the range of the per-seed "
    "differences: it calls a difference significant only when every seed agrees on its sign."
)
RUN_COLUMNS = {  # environment block: column title -> meta.json key
    "device": "device",
    "device name": "device_name",
    "CPU": "cpu_model",
    "dtype": "dtype",
    "threads": "threads",
    "torch": "torch",
    "torchvision": "torchvision",
    "commit": "git_commit",
    "started": "started",
    "status": "status",
}
SPEED_FIGURES: tuple[tuple[str, Callable[[StoredSpeedRun, Path], FigureResult]], ...] = (
    ("latency-vs-n", partial(figures.latency_plot, against="N")),
    ("latency-vs-r", partial(figures.latency_plot, against="R")),
)
SUITE_FIGURES: tuple[tuple[str, Callable[[AblationSuite, Path], FigureResult]], ...] = (
    ("ap-vs-latency", figures.ap_vs_latency),
    ("ap-heatmap", figures.ap_heatmap),
    ("learning-curves", figures.learning_curves),
)


@dataclass
class Report:
    """What build_report wrote."""

    path: Path  # the markdown report
    environments: list[Environment]
    verdicts: list[Verdict]
    figures: list[FigureResult] = field(default_factory=list)  # drawn and skipped


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def figure_dir(out: Path) -> Path:
    """Where the figures of report ``out`` go: ``<stem>_figures/`` beside it."""
    return out.parent / f"{out.stem}_figures"


def draw_figures(env: Environment, folder: Path) -> dict[str, list[FigureResult]]:
    """Every figure of the environment's runs and suites, keyed by the run's or suite's section id."""
    drawn: dict[str, list[FigureResult]] = {}
    for run in env.speed_runs:
        key = f"{env.slug}-speed-{_slug(run.name)}"
        drawn[key] = [draw(run, folder / f"{key}-{kind}.png") for kind, draw in SPEED_FIGURES]
    for suite in env.suites:
        key = f"{env.slug}-ablate-{_slug(suite.name)}"
        drawn[key] = [draw(suite, folder / f"{key}-{kind}.png") for kind, draw in SUITE_FIGURES]
    return drawn


def _table(title: str, table: pd.DataFrame, note: str = "") -> list[str]:
    if table.empty:
        return []
    lines = [f"#### {title}", ""]
    if note:
        lines += [note, ""]
    return lines + [tables.to_markdown(table), ""]


def _figure_lines(results: list[FigureResult], out: Path) -> list[str]:
    lines = []
    for result in results:
        if result.path is None:
            lines.append(f"- _{result.title}: not drawn ({result.note})._")
        else:
            lines += [f"![{result.title}]({result.path.relative_to(out.parent).as_posix()})", ""]
    return lines + [""]


def _meta_value(meta: dict, key: str) -> str:
    value = meta.get(key)
    return tables.DASH if value in (None, "") else str(value).replace("|", "/")


def _plugins_value(meta: dict) -> str:
    """The head plugins a run loaded (meta.json ``plugins``: family -> name, version, digest), or a dash."""
    plugins = meta.get("plugins") or {}
    if not isinstance(plugins, dict):
        return tables.DASH
    named = []
    for family, identity in sorted(plugins.items()):
        source = " ".join(
            str(identity[key]) for key in ("name", "version") if isinstance(identity, dict) and identity.get(key)
        )
        named.append(f"{family} ({source})" if source else family)
    return "; ".join(named).replace("|", "/") or tables.DASH


def plugin_note(frame: pd.DataFrame) -> list[str]:
    """A line naming each family of the suite that came from a plugin, with its package and version (the summary's
    ``origin`` column), so that a reader knows which rows are not bmbench's own heads; empty when all are."""
    if "origin" not in frame or "family" not in frame:
        return []
    pairs = frame[["family", "origin"]].dropna().astype(str).drop_duplicates()
    pairs = pairs[pairs["origin"] != BUILT_IN_ORIGIN].sort_values("family")
    if pairs.empty:
        return []
    named = ", ".join(f"`{row.family}` from {row.origin}" for row in pairs.itertuples())
    return [f"Families from head plugins: {named}.", ""]


def environment_block(env: Environment) -> list[str]:
    """One row per run: its command, device, versions, threads, commit and head plugins (from its meta.json)."""
    rows = []
    for kind, run in [*(("speed", r) for r in env.speed_runs), *(("ablate", s) for s in env.suites)]:
        row = {"run": f"{kind} `{run.name}`", "command": f"`{_meta_value(run.meta, 'command')}`"}
        if META_PROBLEM in run.meta:  # say why nothing is known, rather than show a dash
            row["command"] = f"meta.json {run.meta[META_PROBLEM]}"
        row |= {title: _meta_value(run.meta, key) for title, key in RUN_COLUMNS.items()}
        row["head plugins"] = _plugins_value(run.meta)
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame = frame.loc[:, [c for c in frame.columns if (frame[c] != tables.DASH).any() or c == "run"]]
    return [tables.to_markdown(frame), ""]


def speed_section(run: StoredSpeedRun, drawn: list[FigureResult], out: Path) -> list[str]:
    meta = run.meta
    lines = [f"### Speed run `{run.name}`", ""]
    what = [f"{key} {meta[key]}" for key in ("image_size", "trunk", "seed", "budget_s") if key in meta]
    if what:
        lines += [f"Mask branch on seeded boxes and features of the right shapes: {', '.join(what)}.", ""]
    lines += _figure_lines(drawn, out)
    side_by_side = tables.speed_side_by_side(run)
    lines += _table("Each variant at its own spec: mask-branch total, median ms, against N", side_by_side)
    lines += _table(
        "Whole model (backbone, FPN, detector, mask branch)",
        tables.end_to_end_table(run),
        "The mask branch's share of the whole model's time, each variant at its own spec.",
    )
    lines += _table(
        "Fitted scaling exponents",
        tables.scaling_exponents_table(run),
        "Cost model t = a + b·x^p: fixed ms a, exponent p with its bootstrap 95 % interval (2 is quadratic, 1 "
        "linear), marginal cost; beside it the slope of log(time) against log(x), which a fixed cost drags down.",
    )
    drift = meta.get("drift") or {}
    if drift.get("cycles"):
        lines += [
            f"Drift probe ({drift['probe']}), timed in each of {drift['cycles']} cycles: {drift['ref_ms_median']} ms "
            f"median (min {drift['ref_ms_min']}, max {drift['ref_ms_max']}; a {drift['range_pct']} % range), trend "
            f"{drift['trend_pct_per_min']:+} % per minute over {drift['minutes']} min. The paired exponents are "
            "fitted within cycles, so that this drift moves every point of a cycle alike.",
            "",
        ]
    lines += _table(
        "Stability: later runs of the same sweep against the first (`--runs`)",
        tables.stability_summary(run),
        "Points agree when their 95 % intervals overlap, in ms and in ratio to the drift probe; a finding the runs "
        "judge differently reads 'unstable here'.",
    )
    lines += _table("Floors and peers, side by side (`--peers` / `--check`)", tables.peers_table(run))
    lines += _table(
        "Stage times per variant, axis value and N: median ms (IQR)",
        tables.speed_stage_table(run),
        "`(n/a)`: the swept axis does not apply to this variant, measured once at its own value. `?`: the "
        "median's 95 % interval missed the precision target (the cap or the budget stopped the repeats).",
    )
    return lines


def suite_section(suite: AblationSuite, drawn: list[FigureResult], out: Path) -> list[str]:
    lines = [f"### Ablation suite `{suite.name}`", ""]
    ok = int(suite.frame["status"].astype(str).eq("ok").sum())
    lines += [f"{ok} of {len(suite.frame)} cells succeeded.", ""]
    lines += [*(f"**Warning:** {note}." for note in suite.notes), ""] if suite.notes else []
    lines += plugin_note(suite.frame)
    if "eval_boxes" in suite.frame and suite.frame["eval_boxes"].astype(str).eq("oracle").any():
        lines += [
            "Masks were scored on ground-truth boxes (`eval: {boxes: oracle}`): box AP is 100 by construction, and "
            "mask AP measures the masks alone.",
            "",
        ]
    latency = tables.latency_at(suite)
    front = f"mask AP against ms at N={latency[0]}" if latency else "no times"
    lines += _table(
        "BlendMask grid (rows R / K / M)",
        tables.grid_table(suite),
        f"{tables.BEST_MARK}: highest mask AP; {tables.PARETO_MARK}: no other cell is both more accurate and "
        f"faster ({front}). `bases r`: mean pairwise correlation of a cell's trained bases on the first evaluation "
        "batch; near 1 the K bases are one map and K acts as 1.",
    )
    lines += _table("Baselines side by side", tables.baselines_table(suite))
    lines += _table("Mask AP per class (mean ± std over seeds)", tables.class_table(suite))
    lines += _table("Reference masks on the val split", reference_table.reference_table(suite), reference_table.NOTE)
    lines += _table(
        "Gaps between BlendMask cells, with their intervals",
        tables.gaps_table(suite),
        "Each difference is the mean over the matched cells (same values of the other letters) of the cells' mean "
        "AP; the interval is paired over seeds. R: boundary AP (the metric that responds to R) beside mask AP.",
    )
    lines += [SPREAD_NOTE, ""]
    lines += _table("Failed cells", tables.failed_cells_table(suite))
    lines += _figure_lines([d for d in drawn if "Learning curves" not in d.title], out)
    lines += curves_section(suite, [d for d in drawn if "Learning curves" in d.title], out)
    return lines


def curves_section(suite: AblationSuite, drawn: list[FigureResult], out: Path) -> list[str]:
    """AP along each cell's schedule, and whether the ranking at 50 % is the one at 100 %."""
    lines = ["#### Learning curves", ""]
    ranking = curves.curve_ranking(suite)
    if ranking is None:
        return lines + [
            "Not measured: the suite has no `curves.csv` (AP at 25, 50 and 100 % of each cell's schedule).",
            "",
        ]
    lines += [f"Ranking: {ranking.text()}.", ""]
    lines += _table("Mask AP along the schedule (mean ± std over seeds)", curves.curve_table(suite))
    return lines + _figure_lines(drawn, out)


def findings_section(verdicts: list[Verdict]) -> list[str]:
    lines = ["## The paper's findings, tested here", ""]
    failing = sorted({v.finding.id for v in verdicts if v.verdict == FAILS})
    holding = sorted({v.finding.id for v in verdicts if v.verdict == HOLDS})
    unsure = sorted({v.finding.id for v in verdicts if v.verdict == NOT_SIGNIFICANT} - set(failing) - set(holding))
    unstable = sorted({v.finding.id for v in verdicts if v.verdict == UNSTABLE} - set(failing) - set(holding))
    unsure = sorted(set(unsure) - set(unstable))
    unmeasured = [f.id for f in FINDINGS if f.id not in {*failing, *holding, *unsure, *unstable}]
    lines += [
        f"Hold here: {', '.join(map(str, holding)) or 'none'}. "
        f"Do not hold here: {', '.join(map(str, failing)) or 'none'}. "
        f"Not significant at this budget: {', '.join(map(str, unsure)) or 'none'}. "
        f"Unstable here (runs disagree): {', '.join(map(str, unstable)) or 'none'}. "
        f"Not measured: {', '.join(map(str, unmeasured)) or 'none'}.",
        "",
    ]
    summary = pd.DataFrame(
        [
            {"#": str(v.finding.id), "verdict": VERDICT_TEXT[v.verdict], "from": v.scope, "environment": v.environment}
            for v in verdicts
        ]
    )
    lines += [tables.to_markdown(summary), ""]
    for finding in FINDINGS:
        lines += [f"### {finding.id}. {finding.text}", "", f"_Source: {finding.source}._", ""]
        for v in (v for v in verdicts if v.finding.id == finding.id):
            where = f"{v.scope}, {v.environment}" if v.environment != "–" else "these results"
            lines.append(f"- **{VERDICT_TEXT[v.verdict]}** ({where}): {v.evidence}.")
        lines.append("")
    return lines


def render_markdown(
    environments: list[Environment],
    verdicts: list[Verdict],
    drawn: dict[str, list[FigureResult]],
    *,
    results: Path,
    out: Path,
    now: datetime,
) -> str:
    lines = [f"# {TITLE}", ""]
    lines += [
        f"Generated {now:%Y-%m-%d %H:%M} UTC by bmbench {bmbench.__version__} (commit {git_commit() or 'unknown'}) "
        f"from `{results}`: "
        f"{len(environments)} environment(s). Runs on different devices or in different dtypes are reported in "
        "separate sections and never mixed in one table.",
        "",
        LEGEND,
        "",
    ]
    lines += findings_section(verdicts)
    for index, env in enumerate(environments, start=1):
        lines += [f"## Environment {index}: {env.label}", "", *environment_block(env)]
        for run in env.speed_runs:
            lines += speed_section(run, drawn.get(f"{env.slug}-speed-{_slug(run.name)}", []), out)
        for suite in env.suites:
            lines += suite_section(suite, drawn.get(f"{env.slug}-ablate-{_slug(suite.name)}", []), out)
    lines += [f"## {PUBLISHED_LABEL}", "", PUBLISHED_NOTE, "", tables.to_markdown(tables.published_table()), ""]
    return "\n".join(lines).rstrip() + "\n"


def build_report(results: Path, out: Path, *, now: datetime | None = None) -> Report:
    """Read ``results``, draw the figures, write the report to ``out``; raises BmbenchError on no results."""
    results, out = Path(results), Path(out)
    environments = load_results(results)
    verdicts = judge_findings(environments)
    drawn: dict[str, list[FigureResult]] = {}
    for env in environments:
        drawn |= draw_figures(env, figure_dir(out))
    moment = now or datetime.now(timezone.utc)
    write_text(out, render_markdown(environments, verdicts, drawn, results=results, out=out, now=moment))
    return Report(out, environments, verdicts, [f for group in drawn.values() for f in group])
