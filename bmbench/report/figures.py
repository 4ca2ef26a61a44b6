"""The report's seaborn figures, drawn on the Agg canvas (no pyplot, no global backend change) and written atomically.

Each function takes one run or one suite (so a figure never mixes environments) and a path, and returns a
``FigureResult``: the path written, or no path and a note saying which data was absent. Letters: N instances,
K bases, M attention side, R mask side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bmbench.report.load import AblationSuite, StoredSpeedRun
from bmbench.report.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
from bmbench.report.tables import latency_at, pareto_front, spec_label
from bmbench.results import atomic_path

DPI = 120
SIZE = (6.4, 4.4)  # inches
STAGE_STYLES = ("total", "merge")  # the mask branch, and its per-instance stage
FAMILY_ORDER = ("yolact", "centermask", "blendmask", "maskrcnn", "condinst")  # one colour each, in every figure


@dataclass(frozen=True)
class FigureResult:
    title: str  # caption in the report
    path: Path | None  # the PNG written, None when skipped
    note: str = ""  # why it was skipped


def _canvas(size: tuple[float, float] = SIZE, columns: int = 1) -> tuple[Figure, list]:
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, columns, squeeze=False)[0]
    return figure, list(axes)


def palette(labels: list[str], families: dict[str, str] | None = None) -> dict[str, tuple[float, float, float]]:
    """A colour per label: a family's own colour for the first label of that family, the next free colour after."""
    colours = sns.color_palette("tab10", 10)
    families = families or {label: label for label in labels}
    chosen: dict[str, tuple[float, float, float]] = {}
    free = iter(colours[len(FAMILY_ORDER) :])
    for label in sorted(labels, key=lambda name: (name not in FAMILY_ORDER, name)):
        family = families.get(label, label)
        own = colours[FAMILY_ORDER.index(family)] if family in FAMILY_ORDER else None
        chosen[label] = own if own is not None and own not in chosen.values() else next(free, colours[-1])
    return chosen


def _save(figure: Figure, path: Path, title: str) -> FigureResult:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    return FigureResult(title, Path(path))


def _plain_log_x(ax: object) -> None:
    """A log x axis ticked 1-2-5 and labelled 2, 5, 10 rather than 2×10⁰."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _log_axes(ax: object, x_ticks: list[int]) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(x_ticks, [str(t) for t in x_ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="major", alpha=0.3)


def _latency_rows(run: StoredSpeedRun, against: str) -> tuple[pd.DataFrame, str]:
    """The rows a latency plot draws, and why there are none: N, each variant at its own spec; R, every spec the
    axis changes, at the largest N."""
    if against == "N":
        rows = run.own_rows()
        rows = rows[rows["stage"].isin(STAGE_STYLES) & (rows["median_ms"] > 0)]
        enough = rows["instances"].nunique() >= 2
        return rows.assign(x=rows["instances"]), "" if enough else "needs times at two or more instance counts"
    frame = run.frame
    if run.axis != "R":
        return frame.iloc[:0], f"this run sweeps {run.axis}, not R"
    rows = frame[
        frame["axis_applies"]
        & frame["stage"].isin(STAGE_STYLES)
        & (frame["instances"] == frame["instances"].max())
        & frame["status"].eq("ok")
        & (frame["median_ms"] > 0)
    ]
    enough = rows["axis_value"].nunique() >= 2
    return rows.assign(x=rows["axis_value"]), "" if enough else "needs times at two or more values of R"


def latency_plot(run: StoredSpeedRun, path: Path, *, against: Literal["N", "R"]) -> FigureResult:
    """Mask-branch (and merge) median ms against N (each variant at its own spec) or against R (at the largest N,
    with an R² guide), log-log."""
    title = f"Mask-branch latency against {against} ({run.name})"
    rows, missing = _latency_rows(run, against)
    if missing:
        return FigureResult(title, None, missing)
    data = pd.DataFrame(
        {
            against: rows["x"].astype(int),
            "ms": rows["median_ms"].astype(float),
            "variant": rows["variant"].astype(str),
            "stage": rows["stage"].astype(str),
        }
    )
    figure, (ax,) = _canvas()
    families = dict(zip(rows["variant"].astype(str), rows["family"].astype(str), strict=True))
    sns.lineplot(
        data=data,
        palette=palette(list(families), families),
        x=against,
        y="ms",
        hue="variant",
        style="stage",
        style_order=list(STAGE_STYLES),
        markers=True,
        dashes=True,
        ax=ax,
    )
    if against == "R":
        _quadratic_guide(ax, data, families)
    _log_axes(ax, sorted(data[against].unique()))
    if against == "N":
        ax.set(xlabel="instances N", ylabel="median ms", title=title)
    else:
        ax.set(xlabel="mask side R", ylabel=f"median ms at N={int(rows['instances'].max())}", title=title)
    return _save(figure, path, title)


def _quadratic_guide(ax: object, data: pd.DataFrame, families: dict[str, str]) -> None:
    """A line ∝ R², half way below the first (BlendMask) merge point so that it hides no line."""
    merge = data[data["stage"] == "merge"].sort_values("R")
    blend = merge[merge["variant"].map(families) == "blendmask"]
    anchor = blend if len(blend) else merge
    if len(anchor):
        r0, ms0 = anchor["R"].iloc[0], anchor["ms"].iloc[0] / 2
        rs = sorted(data["R"].unique())
        ax.plot(rs, [ms0 * (r / r0) ** 2 for r in rs], color="grey", linestyle=":", label="∝ R² (guide)")
        ax.legend(fontsize="small")


# one marker per built-in family; a plugin's family gets OTHER_MARKER
FAMILY_MARKERS = {"blendmask": "o", "maskrcnn": "s", "yolact": "^", "centermask": "D", "condinst": "v"}
OTHER_MARKER = "P"
CELL_ORDER = ["family", "R", "K", "M"]  # legend order of the cells, the same in every figure


def cell_label(cell: pd.Series) -> str:
    """``K=4 M=7 R=56`` for BlendMask cells, ``maskrcnn R=28`` for the others: the legend's key for a point."""
    label = spec_label(cell)
    if not label:  # a table without the spec letters: the spec string names the cell
        return str(cell["spec"])
    return label if cell["family"] == "blendmask" else f"{cell['family']} {label}"


def _std(cells: pd.DataFrame, column: str) -> pd.Series:
    name = f"{column}_std"
    return cells[name].fillna(0.0) if name in cells else pd.Series(0.0, index=cells.index)


def ap_vs_latency(suite: AblationSuite, path: Path) -> FigureResult:
    """Mean mask AP over seeds against mask-branch ms at N=100 (else the largest N), one point per cell with ± std
    error bars, the Pareto front of the means, one marker per family and a legend naming each cell (no text on the
    points, so no label hides another)."""
    title = f"Mask AP against mask-branch latency ({suite.name})"
    latency = latency_at(suite)
    cells = suite.cells()
    if latency is None or "mask_AP" not in cells:
        return FigureResult(title, None, "needs mask AP and mask-branch times")
    num, column = latency
    cells = cells[cells["mask_AP"].notna() & cells[column].notna() & (cells[column] > 0)].reset_index(drop=True)
    if len(cells) < 2:
        return FigureResult(title, None, "needs two or more cells with both AP and time")
    cells = cells.sort_values(CELL_ORDER, na_position="first", kind="stable").reset_index(drop=True)
    colours = sns.color_palette("tab20", 20) if len(cells) > 10 else sns.color_palette("tab10", 10)
    figure, (ax,) = _canvas((SIZE[0] + 2.6, SIZE[1] + 0.4))
    ap_err, ms_err = _std(cells, "mask_AP"), _std(cells, column)
    for i, cell in cells.iterrows():
        ax.errorbar(
            cell[column],
            cell["mask_AP"],
            yerr=ap_err[i],
            xerr=ms_err[i],
            fmt=FAMILY_MARKERS.get(str(cell["family"]), OTHER_MARKER),
            color=colours[i % len(colours)],
            markersize=7,
            alpha=0.85,  # a point exactly under another still shows through
            markeredgecolor="black",
            markeredgewidth=0.5,
            elinewidth=1,
            capsize=2,
            label=cell_label(cell),
        )
    front = cells[pareto_front(cells["mask_AP"], cells[column])].sort_values(column)
    ax.step(front[column], front["mask_AP"], where="post", color="black", linewidth=1, label="Pareto front (means)")
    _plain_log_x(ax)
    ax.grid(True, alpha=0.3)
    several = int(cells["seeds"].max()) > 1
    ax.legend(
        fontsize="x-small",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        title="cell (marker: family)",
        title_fontsize="x-small",
        ncol=2 if len(cells) > 20 else 1,
        frameon=False,
    )
    ax.set(
        xlabel=f"mask-branch ms at N={num}",
        ylabel="mask AP" + (" (mean ± std over seeds)" if several else ""),
        title=title,
    )
    return _save(figure, path, title)


def _annotations(grid: pd.DataFrame, spread: pd.DataFrame | None) -> pd.DataFrame:
    """``12.3 ± 0.8`` per grid square where a spread over seeds exists, else ``12.3``."""

    def text(mean: float, std: float) -> str:
        if pd.isna(mean):
            return ""
        return f"{mean:.1f}" if pd.isna(std) else f"{mean:.1f}\n± {std:.1f}"

    std = spread.reindex(index=grid.index, columns=grid.columns) if spread is not None else grid * float("nan")
    return pd.DataFrame(
        [
            [text(m, d) for m, d in zip(row_m, row_d, strict=True)]
            for row_m, row_d in zip(grid.values, std.values, strict=True)
        ],
        index=grid.index,
        columns=grid.columns,
    )


def ap_heatmap(suite: AblationSuite, path: Path) -> FigureResult:
    """BlendMask mean mask AP over K (rows) × M (columns), one panel per R, on one colour scale; each square
    annotated with its mean ± std over seeds."""
    title = f"BlendMask mask AP over K × M per R ({suite.name})"
    cells = suite.cells()
    if "mask_AP" not in cells:
        return FigureResult(title, None, "needs mask AP")
    blend = cells[(cells["family"] == "blendmask") & cells["mask_AP"].notna()]
    if len(blend) < 2:
        return FigureResult(title, None, "needs two or more BlendMask cells with mask AP")
    sides = sorted(blend["R"].dropna().astype(int).unique())
    several = int(blend["seeds"].max()) > 1
    figure, axes = _canvas((3.4 * len(sides) + 1, 3.6), columns=len(sides))
    low, high = blend["mask_AP"].min(), blend["mask_AP"].max()
    if high - low < 1e-6:  # all cells alike: a degenerate colour scale would paint equal values differently
        low, high = max(0.0, low - 0.5), high + 0.5
    for ax, side in zip(axes, sides, strict=True):
        here = blend[blend["R"] == side]
        grid = here.pivot_table(index="K", columns="M", values="mask_AP", aggfunc="mean")
        spread = here.pivot_table(index="K", columns="M", values="mask_AP_std", aggfunc="mean") if several else None
        grid.index, grid.columns = grid.index.astype(int), grid.columns.astype(int)
        if spread is not None:
            spread.index, spread.columns = spread.index.astype(int), spread.columns.astype(int)
        sns.heatmap(
            grid,
            annot=_annotations(grid, spread),
            fmt="",
            annot_kws={"fontsize": 8},
            cmap="viridis",
            vmin=low,
            vmax=high,
            ax=ax,
            cbar=side == sides[-1],
            cbar_kws={"label": "mask AP" + (" (mean over seeds)" if several else "")},
        )
        ax.set(title=f"R={side}", xlabel="M", ylabel="K")
    figure.suptitle(title + (": mean ± std over seeds" if several else ""), fontsize="medium")
    return _save(figure, path, title)


def learning_curves(suite: AblationSuite, path: Path) -> FigureResult:
    """Mask AP against training step, one line per spec: the mean over seeds with a 95 % bootstrap band."""
    title = f"Learning curves: mask AP against step ({suite.name})"
    curves = suite.curves
    if curves is None or curves.empty:
        return FigureResult(title, None, "not measured (the suite has no curves.csv)")
    if curves["step"].nunique() < 2:
        return FigureResult(title, None, "needs AP at two or more steps")
    data = pd.DataFrame(
        {
            "step": curves["step"].astype(int),
            "mask AP": curves["mask_AP"].astype(float),
            "cell": [cell_label(row) for _, row in curves.iterrows()],
            "family": curves["family"].astype(str),
        }
    )
    specs = curves.drop_duplicates("spec").sort_values(CELL_ORDER, na_position="first", kind="stable")
    order = [cell_label(row) for _, row in specs.iterrows()]  # as in ap_vs_latency: a cell keeps its colour
    figure, (ax,) = _canvas((SIZE[0] + 2.6, SIZE[1] + 0.4))
    sns.lineplot(
        data=data,
        x="step",
        y="mask AP",
        hue="cell",
        hue_order=order,
        palette=sns.color_palette("tab20" if len(order) > 10 else "tab10", len(order)),
        style="family",
        markers={f: FAMILY_MARKERS.get(f, OTHER_MARKER) for f in data["family"].unique()},
        dashes=False,
        errorbar=("ci", 95),
        n_boot=BOOTSTRAP_RESAMPLES,
        seed=BOOTSTRAP_SEED,
        ax=ax,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set(xlabel="training step", ylabel="mask AP (mean over seeds, 95 % band)", title=title)
    return _save(figure, path, title)
