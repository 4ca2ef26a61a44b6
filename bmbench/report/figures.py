"""The report's seaborn figures, drawn on the Agg canvas (no pyplot, no global backend change) and written atomically.

Each function takes one run or one suite (so a figure never mixes environments) and a path, and returns a
``FigureResult``: the path written, or no path and a note saying which data was absent. Letters: N instances,
K bases, M attention side, R mask side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bmbench.report.load import AblationSuite, SpeedRun
from bmbench.report.tables import latency_at, pareto_front, spec_label
from bmbench.results import atomic_path

DPI = 120
SIZE = (6.4, 4.4)  # inches
STAGE_STYLES = ("total", "merge")  # the mask branch, and its per-instance stage
FAMILY_ORDER = ("yolact", "centermask", "blendmask", "maskrcnn")  # one colour each, the same in every figure


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


def latency_vs_instances(run: SpeedRun, path: Path) -> FigureResult:
    """Mask-branch (and merge) median ms against N, each variant at its own spec, log-log."""
    title = f"Mask-branch latency against N ({run.name})"
    rows = run.own_rows()
    rows = rows[rows["stage"].isin(STAGE_STYLES) & (rows["median_ms"] > 0)]
    if rows["instances"].nunique() < 2:
        return FigureResult(title, None, "needs times at two or more instance counts")
    data = pd.DataFrame(
        {
            "N": rows["instances"].astype(int),
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
        x="N",
        y="ms",
        hue="variant",
        style="stage",
        style_order=list(STAGE_STYLES),
        markers=True,
        dashes=True,
        ax=ax,
    )
    _log_axes(ax, sorted(data["N"].unique()))
    ax.set(xlabel="instances N", ylabel="median ms", title=title)
    return _save(figure, path, title)


def latency_vs_r(run: SpeedRun, path: Path) -> FigureResult:
    """Mask-branch (and merge) median ms against R at the largest N, log-log, with an R² guide."""
    title = f"Mask-branch latency against R ({run.name})"
    frame = run.frame
    if run.axis != "R":
        return FigureResult(title, None, f"this run sweeps {run.axis}, not R")
    largest = frame["instances"].max()
    rows = frame[
        frame["axis_applies"]
        & frame["stage"].isin(STAGE_STYLES)
        & (frame["instances"] == largest)
        & frame["status"].eq("ok")
        & (frame["median_ms"] > 0)
    ]
    if rows["axis_value"].nunique() < 2:
        return FigureResult(title, None, "needs times at two or more values of R")
    data = pd.DataFrame(
        {
            "R": rows["axis_value"].astype(int),
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
        x="R",
        y="ms",
        hue="variant",
        style="stage",
        style_order=list(STAGE_STYLES),
        markers=True,
        ax=ax,
    )
    merge = data[data["stage"] == "merge"].sort_values("R")
    blend = merge[merge["variant"].map(families) == "blendmask"]
    anchor = blend if len(blend) else merge
    if len(anchor):  # a quadratic guide, half way below the first (BlendMask) merge point so it hides no line
        r0, ms0 = anchor["R"].iloc[0], anchor["ms"].iloc[0] / 2
        rs = sorted(data["R"].unique())
        ax.plot(rs, [ms0 * (r / r0) ** 2 for r in rs], color="grey", linestyle=":", label="∝ R² (guide)")
        ax.legend(fontsize="small")
    _log_axes(ax, sorted(data["R"].unique()))
    ax.set(xlabel="mask side R", ylabel=f"median ms at N={int(largest)}", title=title)
    return _save(figure, path, title)


def ap_vs_latency(suite: AblationSuite, path: Path) -> FigureResult:
    """Mask AP against mask-branch ms at N=100 (else the largest N) per cell, with the Pareto front."""
    title = f"Mask AP against mask-branch latency ({suite.name})"
    latency = latency_at(suite)
    cells = suite.cells()
    if latency is None or "mask_AP" not in cells:
        return FigureResult(title, None, "needs mask AP and mask-branch times")
    num, column = latency
    cells = cells[cells["mask_AP"].notna() & cells[column].notna() & (cells[column] > 0)].reset_index(drop=True)
    if len(cells) < 2:
        return FigureResult(title, None, "needs two or more cells with both AP and time")
    data = pd.DataFrame({"ms": cells[column], "AP": cells["mask_AP"], "family": cells["family"].astype(str)})
    figure, (ax,) = _canvas()
    sns.scatterplot(
        data=data, x="ms", y="AP", hue="family", palette=palette(list(data["family"].unique())), s=60, ax=ax
    )
    front = data[pareto_front(data["AP"], data["ms"])].sort_values("ms")
    ax.step(front["ms"], front["AP"], where="post", color="black", linewidth=1, label="Pareto front")
    for i, cell in cells.iterrows():
        ax.annotate(
            spec_label(cell), (data["ms"][i], data["AP"][i]), fontsize=6, xytext=(3, 3), textcoords="offset points"
        )
    _plain_log_x(ax)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    ax.set(xlabel=f"mask-branch ms at N={num}", ylabel="mask AP", title=title)
    return _save(figure, path, title)


def ap_heatmap(suite: AblationSuite, path: Path) -> FigureResult:
    """BlendMask mask AP over K (rows) × M (columns), one panel per R, on one colour scale."""
    title = f"BlendMask mask AP over K × M per R ({suite.name})"
    cells = suite.cells()
    if "mask_AP" not in cells:
        return FigureResult(title, None, "needs mask AP")
    blend = cells[(cells["family"] == "blendmask") & cells["mask_AP"].notna()]
    if len(blend) < 2:
        return FigureResult(title, None, "needs two or more BlendMask cells with mask AP")
    sides = sorted(blend["R"].dropna().astype(int).unique())
    figure, axes = _canvas((3.4 * len(sides) + 1, 3.6), columns=len(sides))
    low, high = blend["mask_AP"].min(), blend["mask_AP"].max()
    if high - low < 1e-6:  # all cells alike: a degenerate colour scale would paint equal values differently
        low, high = max(0.0, low - 0.5), high + 0.5
    for ax, side in zip(axes, sides, strict=True):
        grid = blend[blend["R"] == side].pivot_table(index="K", columns="M", values="mask_AP", aggfunc="mean")
        grid.index, grid.columns = grid.index.astype(int), grid.columns.astype(int)
        sns.heatmap(
            grid,
            annot=True,
            fmt=".1f",
            cmap="viridis",
            vmin=low,
            vmax=high,
            ax=ax,
            cbar=side == sides[-1],
            cbar_kws={"label": "mask AP"},
        )
        ax.set(title=f"R={side}", xlabel="M", ylabel="K")
    figure.suptitle(title, fontsize="medium")
    return _save(figure, path, title)
