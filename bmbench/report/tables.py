"""The report's tables, as DataFrames of display strings ready for ``DataFrame.to_markdown``.

Each table holds rows of one run or one suite only, so it never mixes environments. Letters: N instances, K bases,
M attention side, R mask side. Times are milliseconds; AP is in points (0..100).
"""

from __future__ import annotations

import math
from importlib import resources

import pandas as pd

from bmbench.report.load import REFERENCE_N, AblationSuite, StoredSpeedRun
from bmbench.report.stats import ABOVE, BELOW, MIN_SEEDS, matched_contrast
from bmbench.schema import (
    BASES_CORR,
    BOUNDARY_AP,
    DETECTOR,
    END_TO_END,
    NOT_SIGNIFICANT,
    STAGES,
    THIN_AP,
    TOUCHING_AP,
)

GRID_MS_AT = (10, 100)  # the paper's table reports the mask branch at these N; the nearest measured N stands in
PARETO_N = REFERENCE_N  # Pareto front and "ms" of the trade-off findings: N=100, else the largest N measured
BEST_MARK, PARETO_MARK = "★ best", "◆ Pareto"
PUBLISHED_FILE = "published.csv"
DASH = "–"
SUBSET_COLUMNS = (  # AP columns shown beside mask AP when measured: (title, column)
    ("boundary AP", BOUNDARY_AP),
    ("AP touching", TOUCHING_AP),
    ("AP thin", THIN_AP),
)
GAPS = (  # (axis, value, minus, metrics): the differences the quick suite reports with their intervals
    ("K", 4, 1, ("mask_AP",)),
    ("M", 7, 1, (TOUCHING_AP, "mask_AP")),
    ("R", 56, 28, ("mask_AP", BOUNDARY_AP, THIN_AP)),  # boundary AP beside mask AP: it responds to R
)
SPREAD_SUFFIXES = ("_std", "_n", "_lo", "_hi")  # the columns AblationSuite.cells adds beside each mean


def fmt_ms(value: object) -> str:
    """Milliseconds with three significant figures (no exponent)."""
    if value is None or pd.isna(value):
        return DASH
    x = float(value)
    return f"{x:.3g}" if x < 1 else f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def fmt_num(value: object, digits: int = 1) -> str:
    return DASH if value is None or pd.isna(value) else f"{float(value):.{digits}f}"


def fmt_int(value: object) -> str:
    return DASH if value is None or pd.isna(value) else str(int(value))


def fmt_params(value: object) -> str:
    return DASH if value is None or pd.isna(value) else f"{float(value) / 1e6:.2f}M"


def fmt_point(median: object, iqr: object, noisy: bool, status: str, repeats: object = None) -> str:
    """``median (IQR)``, ``~`` when IQR/median > 10 %, ``(1 run)`` where one run left no spread to show, or the
    status (oom, error) of a failed point."""
    if status != "ok":
        return status
    single = repeats is not None and not pd.isna(repeats) and int(repeats) < 2
    text = f"{fmt_ms(median)} ({'1 run' if single else fmt_ms(iqr)})"
    return f"{text} ~" if noisy else text


def fmt_spread(mean: object, std: object, n: object) -> str:
    """``35.0 ± 0.4`` (mean ± sample std over seeds), or the mean alone for one seed."""
    if mean is None or pd.isna(mean):
        return DASH
    several = n is not None and not pd.isna(n) and int(n) > 1 and std is not None and not pd.isna(std)
    return f"{float(mean):.1f} ± {float(std):.1f}" if several else f"{float(mean):.1f}"


def fmt_interval(low: object, high: object, n: object) -> str:
    """``[34.6, 35.4]``: the bootstrap interval, shown only from MIN_SEEDS seeds on (below, it is their range)."""
    if low is None or pd.isna(low) or n is None or pd.isna(n) or int(n) < MIN_SEEDS:
        return DASH
    return f"[{float(low):.1f}, {float(high):.1f}]"


def spec_label(row: pd.Series) -> str:
    """``K=4 M=7 R=56`` from a row's spec fields that are set."""
    return " ".join(f"{k}={int(row[k])}" for k in ("K", "M", "R", "S") if k in row and not pd.isna(row[k]))


# --- speed -------------------------------------------------------------------------------------------------------


def _stage_cell(point: pd.Series) -> str:
    """fmt_point, with ``?`` where the median's interval missed the precision target (a column older runs lack)."""
    text = fmt_point(point["median_ms"], point["iqr_ms"], bool(point["noisy"]), str(point["status"]), point["n"])
    precise = point.get("precise")
    missed = str(point["status"]) == "ok" and precise is not None and not pd.isna(precise) and not bool(precise)
    return f"{text} ?" if missed else text


def _memory_mb(group: pd.DataFrame, column: str) -> str:
    values = group[column].dropna() if column in group else pd.Series(dtype=float)
    return fmt_num(values.max(), 1) if len(values) else DASH


def speed_stage_table(run: StoredSpeedRun) -> pd.DataFrame:
    """Variant × axis value × N: each stage's median ms (IQR), ``?`` where its 95 % interval missed the precision
    target; beside them the merge's analytic working set and (CUDA) the peak allocated memory, MB."""
    frame = run.frame[run.frame["stage"].isin(STAGES)]
    if frame.empty:
        return pd.DataFrame()
    axis = run.axis or "axis"
    rows = []
    keys = ["variant", "spec", "instances"]
    for (variant, spec, num), group in frame.groupby(keys, sort=False):
        by_stage = group.set_index("stage")
        first = group.iloc[0]
        value = first["axis_value"]
        shown = fmt_int(value) if bool(first["axis_applies"]) else f"{fmt_int(value)} (n/a)"
        row = {"variant": variant, "spec": spec, axis: shown, "N": int(num)}
        for stage in STAGES:
            row[stage] = _stage_cell(by_stage.loc[stage]) if stage in by_stage.index else DASH
        row["merge working set MB"] = _memory_mb(group, "merge_ws_mb")
        row["peak allocated MB"] = _memory_mb(group, "peak_alloc_mb")
        rows.append(row)
    table = pd.DataFrame(rows)
    if (table["peak allocated MB"] == DASH).all():
        table = table.drop(columns="peak allocated MB")  # CPU runs: no allocator statistics
    if (table["merge working set MB"] == DASH).all():
        table = table.drop(columns="merge working set MB")
    order = {variant: i for i, variant in enumerate(dict.fromkeys(frame["variant"]))}
    table["_v"] = table["variant"].map(order)
    return table.sort_values(["_v", "spec", "N"], kind="stable").drop(columns="_v").reset_index(drop=True)


def speed_side_by_side(run: StoredSpeedRun, stage: str = "total") -> pd.DataFrame:
    """Each variant at its own spec (rows) against N (columns): median ms of ``stage``."""
    own = run.own_rows()
    own = own[own["stage"] == stage]
    if own.empty:
        return pd.DataFrame()
    table = own.pivot_table(index=["variant", "spec"], columns="instances", values="median_ms", sort=False)
    table = table.apply(lambda column: column.map(fmt_ms))
    table.columns = [f"N={int(n)}" for n in table.columns]
    return table.reset_index()


def end_to_end_table(run: StoredSpeedRun) -> pd.DataFrame:
    """The whole model per variant at one N: detector ms, end-to-end ms, and the mask branch's share."""
    own = run.own_rows()
    whole = own[own["stage"].isin([DETECTOR, END_TO_END])]
    if whole.empty:
        return pd.DataFrame()
    rows = []
    for (variant, spec, num), group in whole.groupby(["variant", "spec", "instances"], sort=False):
        times = group.set_index("stage")["median_ms"]
        total = own[(own["variant"] == variant) & (own["instances"] == num) & (own["stage"] == "total")]
        mask_ms = float(total["median_ms"].iloc[0]) if len(total) else math.nan
        e2e = float(times.get(END_TO_END, math.nan))
        share = 100 * mask_ms / e2e if e2e > 0 and not math.isnan(mask_ms) else math.nan
        rows.append(
            {
                "variant": variant,
                "spec": spec,
                "N": int(num),
                "detector ms": fmt_ms(times.get(DETECTOR)),
                "end-to-end ms": fmt_ms(e2e),
                "mask branch ms": fmt_ms(mask_ms),
                "mask share": DASH if math.isnan(share) else f"{share:.0f} %",
            }
        )
    return pd.DataFrame(rows)


def _cost_model(fit: pd.Series) -> tuple[str, str, str, str]:
    """(fixed ms, p [interval], marginal cost, fit R²) of a scaling row; dashes where no cost model was fitted."""
    if "a_ms" not in fit or pd.isna(fit["a_ms"]):
        return DASH, DASH, DASH, DASH
    if pd.isna(fit["p"]):
        exponent = "flat"
    else:
        exponent = f"{fmt_num(fit['p'], 2)} [{fmt_num(fit['p_low'], 2)}, {fmt_num(fit['p_high'], 2)}]"
    marginal = f"{float(fit['marginal_ms']):.3g} {fit['marginal_unit']}" if not pd.isna(fit["marginal_ms"]) else DASH
    return fmt_ms(fit["a_ms"]), exponent, marginal, fmt_num(fit["fit_r2"], 3)


def scaling_exponents_table(run: StoredSpeedRun) -> pd.DataFrame:
    """Per (variant, stage, x): the cost model t = a + b·x^p (fixed cost a, exponent p with its bootstrap 95 %
    interval, average marginal cost, fit R²) and the log-log slope with its R² and range."""
    fits = run.scaling
    if fits.empty:
        return pd.DataFrame()
    models = [_cost_model(fit) for _, fit in fits.iterrows()]
    return pd.DataFrame(
        {
            "variant": fits["variant"],
            "stage": fits["stage"],
            "x": fits["x"],
            "at": fits["at"],
            "fixed ms": [m[0] for m in models],
            "floor p [95 %]": [_floor(fit) for _, fit in fits.iterrows()],
            "paired p [95 %]": [_paired(fit) for _, fit in fits.iterrows()],
            "pooled p [95 %]": [m[1] for m in models],
            "marginal": [m[2] for m in models],
            "fit R²": [m[3] for m in models],
            "log-log slope": fits["slope"].map(lambda v: fmt_num(v, 2)),
            "R²": fits["r2"].map(lambda v: fmt_num(v, 3)),
            "points": fits["points"].map(fmt_int),
            "range": [f"{fmt_int(a)}..{fmt_int(b)}" for a, b in zip(fits["x_min"], fits["x_max"], strict=True)],
        }
    )


def _floor(fit: pd.Series) -> str:
    """The exponent fitted to each point's fastest call over the cycles, with its interval; a dash for older runs."""
    if pd.isna(fit.get("p_floor")):
        return DASH
    return f"{fmt_num(fit['p_floor'], 2)} [{fmt_num(fit['p_floor_low'], 2)}, {fmt_num(fit['p_floor_high'], 2)}]"


def _paired(fit: pd.Series) -> str:
    """The exponent fitted within each cycle (median over cycles) with its interval; a dash for older runs."""
    if pd.isna(fit.get("p_paired")):
        return DASH
    low, high = fmt_num(fit["p_paired_low"], 2), fmt_num(fit["p_paired_high"], 2)
    return f"{fmt_num(fit['p_paired'], 2)} [{low}, {high}] ({fmt_int(fit['cycles_paired'])} cycles)"


def stability_summary(run: StoredSpeedRun) -> pd.DataFrame:
    """The run's stability.csv (``bmbench speed --runs k``) as a table: per later run, the share of points whose
    intervals overlap with the first run's (ms and ratio to the probe), and each exponent in both runs."""
    if run.stability is None or run.stability.empty:
        return pd.DataFrame()
    rows = []
    for _, row in run.stability.iterrows():
        if row["kind"] == "exponent":
            first = f"{fmt_num(row['first'], 2)} [{fmt_num(row['first_low'], 2)}, {fmt_num(row['first_high'], 2)}]"
            later = f"{fmt_num(row['second'], 2)} [{fmt_num(row['second_low'], 2)}, {fmt_num(row['second_high'], 2)}]"
            agree = "overlap" if row["agree"] else "apart"
        else:
            first, later = DASH, f"median abs. difference {fmt_num(row['median_abs_diff_pct'], 1)} %"
            agree = f"{row['agree']:.0%} of {fmt_int(row['points'])} points overlap"
        name = row["name"] if row["kind"] == "exponent" else row["kind"]
        rows.append({"run": fmt_int(row.get("run", 2)), "compared": name, "first run": first, "later run": later})
        rows[-1]["agree"] = agree
    return pd.DataFrame(rows)


def peers_table(run: StoredSpeedRun) -> pd.DataFrame:
    """The run's floors-and-peers ratio table (``peers.csv``, from ``bmbench speed --peers`` or ``--check``):
    each row's median ms [95 % interval], its ratio to the reference row and whether their outputs agree."""
    path = run.path / "peers.csv"
    if not path.exists():
        return pd.DataFrame()
    peers = pd.read_csv(path)
    rows = []
    for _, row in peers.iterrows():
        ok = row["status"] == "ok"
        equal = row["equivalent"]
        rows.append(
            {
                "check": row["check"],
                "timed": row["row"],
                "median ms [95 %]": (
                    f"{fmt_ms(row['median_ms'])} [{fmt_ms(row['ci_low_ms'])}, {fmt_ms(row['ci_high_ms'])}]"
                    + ("" if bool(row["precise"]) else " ?")
                    if ok
                    else str(row["status"])
                ),
                "n": fmt_int(row["n"]) if ok else DASH,
                "ratio": f"×{float(row['ratio']):.2f}" if ok else DASH,
                "to": row["reference"],
                "same output": DASH if pd.isna(equal) else str(equal),
            }
        )
    return pd.DataFrame(rows)


# --- ablation ----------------------------------------------------------------------------------------------------


def latency_at(suite: AblationSuite, wanted: int = PARETO_N) -> tuple[int, str] | None:
    """(N, column) of the mask-branch time at ``wanted`` instances, else at the largest N measured."""
    columns = suite.ms_columns
    if not columns:
        return None
    num = wanted if wanted in columns else max(columns)
    return num, columns[num]


def pareto_front(ap: pd.Series, ms: pd.Series) -> pd.Series:
    """True for cells that no other cell beats on both: at least as accurate and at least as fast, better in one."""
    valid = ap.notna() & ms.notna()
    front = pd.Series(False, index=ap.index)
    for i in ap.index[valid]:
        dominated = (ap[valid] >= ap[i]) & (ms[valid] <= ms[i]) & ((ap[valid] > ap[i]) | (ms[valid] < ms[i]))
        front[i] = not dominated.any()
    return front


def _grid_marks(cells: pd.DataFrame, latency: str | None) -> pd.Series:
    marks = pd.Series("", index=cells.index)
    if "mask_AP" not in cells or cells["mask_AP"].notna().sum() == 0:
        return marks
    spread = cells["mask_AP"].max() > cells["mask_AP"].min()
    best = (cells["mask_AP"] == cells["mask_AP"].max()) & spread  # all cells tied: none is "best"
    front = pareto_front(cells["mask_AP"], cells[latency]) if latency else pd.Series(False, index=cells.index)
    for i in cells.index:
        marks[i] = ", ".join(m for m, on in ((BEST_MARK, best[i]), (PARETO_MARK, front[i])) if on)
    return marks


def _metric_columns(cells: pd.DataFrame, suite: AblationSuite, ms_at: list[int]) -> dict[str, pd.Series]:
    columns: dict[str, pd.Series] = {}

    def spread(column: str) -> pd.Series:
        std = cells[f"{column}_std"] if f"{column}_std" in cells else pd.Series(math.nan, index=cells.index)
        count = cells[f"{column}_n"] if f"{column}_n" in cells else cells["seeds"]
        return pd.Series([fmt_spread(*v) for v in zip(cells[column], std, count, strict=True)], index=cells.index)

    if "mask_AP" in cells:
        columns["mask AP"] = spread("mask_AP")
        if "mask_AP_lo" in cells and (cells["seeds"] >= MIN_SEEDS).any():
            bounds = zip(cells["mask_AP_lo"], cells["mask_AP_hi"], cells["mask_AP_n"], strict=True)
            columns["mask AP 95 % CI"] = pd.Series([fmt_interval(*b) for b in bounds], index=cells.index)
    for name, column in SUBSET_COLUMNS:
        if column in cells and cells[column].notna().any():
            columns[name] = spread(column)
    for name, column in (("AP50", "mask_AP50"), ("AP75", "mask_AP75"), ("box AP", "box_AP")):
        if column in cells:
            columns[name] = cells[column].map(fmt_num)
    for num in ms_at:
        columns[f"ms N={num}"] = cells[suite.ms_columns[num]].map(fmt_ms)
    if suite.params_column:
        columns["params"] = cells[suite.params_column].map(fmt_params)
    if suite.gflops_column:
        num, column = suite.gflops_column
        columns["GFLOPs" if num is None else f"GFLOPs N={num}"] = cells[column].map(lambda v: fmt_num(v, 2))
    if BASES_CORR in cells and cells[BASES_CORR].notna().any():
        columns["bases r"] = cells[BASES_CORR].map(lambda v: fmt_num(v, 2))
    if (cells["seeds"] > 1).any():
        columns["seeds"] = cells["seeds"].map(fmt_int)
    return columns


def _shown_ns(suite: AblationSuite) -> list[int]:
    measured = list(suite.ms_columns)
    if not measured:
        return []
    chosen = {min(measured, key=lambda n: (abs(n - wanted), -n)) for wanted in GRID_MS_AT}
    return sorted(chosen)


def grid_table(suite: AblationSuite) -> pd.DataFrame:
    """BlendMask cells as the paper lays them out: rows R / K / M; AP, ms at N≈10 and N≈100, params, GFLOPs; the
    most accurate cell and the Pareto-optimal cells (AP against ms at N=100) marked."""
    cells = suite.cells()
    cells = cells[cells["family"] == "blendmask"].sort_values(["R", "K", "M"]).reset_index(drop=True)
    if cells.empty:
        return pd.DataFrame()
    latency = latency_at(suite)
    table = pd.DataFrame({key: cells[key].map(fmt_int) for key in ("R", "K", "M")})
    for name, values in _metric_columns(cells, suite, _shown_ns(suite)).items():
        table[name] = values
    table["mark"] = _grid_marks(cells, latency[1] if latency else None)
    return table


def baselines_table(suite: AblationSuite) -> pd.DataFrame:
    """One row per baseline family cell beside BlendMask's named presets (or its best grid cell), same columns."""
    cells = suite.cells()
    if cells.empty:
        return pd.DataFrame()
    blend = cells[cells["family"] == "blendmask"]
    named = blend[~blend["variant"].astype(str).str.contains(":")]
    if named.empty and len(blend) and "mask_AP" in blend:
        named = blend.loc[[blend["mask_AP"].idxmax()]].assign(variant="blendmask (grid's best)")
    chosen = pd.concat([cells[cells["family"] != "blendmask"], named])
    if chosen["family"].nunique() < 2:
        return pd.DataFrame()
    table = pd.DataFrame({"variant": chosen["variant"], "spec": chosen["spec"]})
    for name, values in _metric_columns(chosen, suite, list(suite.ms_columns)).items():
        table[name] = values
    return table.reset_index(drop=True)


def gaps_table(suite: AblationSuite) -> pd.DataFrame:
    """The GAPS between BlendMask cells on each metric measured: the difference of the means over matched cells,
    its 95 % bootstrap interval (paired over seeds) and whether that interval excludes 0."""
    runs = suite.runs()
    blend = runs[runs["family"] == "blendmask"] if "family" in runs else runs.iloc[0:0]
    rows = []
    for axis, value, minus, metrics in GAPS:
        for metric in metrics:
            if metric not in blend or blend[metric].isna().all():
                continue
            gap, matched = matched_contrast(blend, axis, value, minus, metric)
            if not matched:
                continue
            if gap.measured:
                interval = f"[{gap.low:+.1f}, {gap.high:+.1f}]"
                reading = "significant" if gap.side(0.0) in (ABOVE, BELOW) else NOT_SIGNIFICANT
            else:
                interval = DASH
                reading = f"{NOT_SIGNIFICANT} ({'one seed' if gap.seeds <= 1 else f'{gap.seeds} seeds'})"
            others = [k for k in ("R", "K", "M") if k != axis]
            rows.append(
                {
                    "comparison": f"{axis}={value} − {axis}={minus}",
                    "metric": metric,
                    "matched": f"{matched} ({'/'.join(others)})",
                    "difference": f"{gap.estimate:+.1f}",
                    "95 % CI": interval,
                    "seeds": str(gap.seeds),
                    "reading": reading,
                }
            )
    return pd.DataFrame(rows)


def class_columns(frame: pd.DataFrame) -> dict[str, str]:
    """class name -> its ``mask_AP_<class name>`` column (the per-category AP; subsets such as touching excluded)."""
    subsets = {TOUCHING_AP, THIN_AP}
    found = {}
    for column in frame.columns:
        name = str(column)
        if name.startswith("mask_AP_") and name not in subsets and not name.endswith(SPREAD_SUFFIXES):
            found[name.removeprefix("mask_AP_").removeprefix("class_")] = name
    return found


def class_table(suite: AblationSuite) -> pd.DataFrame:
    """Each cell's mask AP per class (mean ± std over seeds), as detectron2's COCOEvaluator reports it."""
    columns = class_columns(suite.frame)
    if not columns:
        return pd.DataFrame()
    cells = suite.cells()
    table = pd.DataFrame({"spec": cells["spec"]})
    for name, column in columns.items():
        values = zip(cells[column], cells[f"{column}_std"], cells[f"{column}_n"], strict=True)
        table[name] = [fmt_spread(*v) for v in values]
    return table


def failed_cells_table(suite: AblationSuite) -> pd.DataFrame:
    failed = suite.frame[~suite.frame["status"].astype(str).eq("ok")]
    if failed.empty:
        return pd.DataFrame()
    error = failed["error"] if "error" in failed else pd.Series("", index=failed.index)
    return pd.DataFrame(
        {"spec": failed["spec"], "status": failed["status"], "error": error.fillna("").astype(str).str[:120]}
    ).reset_index(drop=True)


# --- published ---------------------------------------------------------------------------------------------------


def published_figures() -> pd.DataFrame:
    """The published figures shipped with the package (bmbench/report/paper/published.csv), as they were published."""
    with (resources.files("bmbench.report") / "paper" / PUBLISHED_FILE).open(encoding="utf-8") as handle:
        return pd.read_csv(handle)


def published_table() -> pd.DataFrame:
    frame = published_figures()
    return frame.astype(object).where(frame.notna(), DASH)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (every cell already a display string)."""
    return table.to_markdown(index=False, disable_numparse=True)
