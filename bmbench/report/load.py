"""Find the runs under a results folder, read their tables and metadata, and group them by environment.

A speed run is a folder holding ``speed.parquet`` (or ``speed.csv``), ``scaling.*`` and ``meta.json`` (written by
``bmbench speed``); an ablation suite is a folder holding ``summary.parquet`` (or ``summary.csv``) and ``meta.json``
(written by ``bmbench ablate``). Runs measured on different devices or in different dtypes go to different
``Environment``s, so that no table ever mixes them silently.

Letters: N instances, K bases, M attention side, R mask side.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bmbench.errors import BmbenchError, BmbenchWarning
from bmbench.report.cells import check_summary
from bmbench.report.stats import aggregate
from bmbench.schema import (
    BASES_CORR,
    CURVES_TABLE,
    MASK_PARAMS,
    PER_N_PATTERN,
    REFERENCES_TABLE,
    SCALING_COLUMNS,
    SCALING_TABLE,
    SCORE_PREFIXES,
    SEED,
    SPEC_KEYS,
    SPEED_TABLE,
    STABILITY_TABLE,
    SUMMARY_TABLE,
    Table,
)

# --- the columns the report reads: the writers' names, from bmbench.schema; what each reader needs of them ----------

SPEED_REQUIRED = ("variant", "spec", "family", "instances", "stage", "median_ms")
SPEED_OPTIONAL = {  # column -> value assumed when an older or partial table lacks it
    "iqr_ms": float("nan"),
    "n": pd.NA,
    "noisy": False,
    "status": "ok",
    "axis": None,
    "axis_value": pd.NA,
    "axis_applies": True,
}
SCALING_REQUIRED = ("variant", "stage", "x")
SUMMARY_REQUIRED = ("variant", "spec", "family", "status")
AP_COLUMNS = ("mask_AP", "mask_AP50", "mask_AP75", "box_AP")  # COCOeval's 0..1 in the summary; points here
AP_SCALE = 100.0  # the summary stores COCOeval's 0..1; the report speaks in AP points, as the paper does
PER_N_RE = re.compile(rf"^{PER_N_PATTERN}$")  # a value at N instances (groups: part, unit, N)
REFERENCE_N = 100  # the N of single-number columns (ms, GFLOPs, Pareto front): a crowded COCO image; else the max N
AP_LIKE_RE = re.compile(rf"^({'|'.join(SCORE_PREFIXES)})AP")  # every AP column (subsets, classes, AP50/75, s/m/l)
CURVES_REQUIRED = ("spec", "family", "step", "mask_AP")
CURVES_OPTIONAL = (SEED, "fraction")  # computed when absent (seed 0; step / the cell's last step)
REFERENCES_REQUIRED = ("reference", "mask_AP")
ENV_META_KEYS = ("device", "device_name", "cpu_model", "dtype", "threads", "torch", "torchvision", "git_commit")
META_PROBLEM = "meta_problem"  # read_meta: what is wrong with a meta.json that cannot be read (truncated, ...)
UNKNOWN_DEVICE = "unknown device"
DEFAULT_DTYPE = "fp32"  # run_metadata's default


@dataclass
class StoredSpeedRun:
    """One ``bmbench speed`` run folder."""

    name: str  # folder name
    path: Path
    frame: pd.DataFrame  # the speed table, one row per (variant, axis value, N, stage)
    scaling: pd.DataFrame  # SCALING_COLUMNS plus family; empty when absent
    meta: dict[str, Any]
    repeats: list[StoredSpeedRun] = field(default_factory=list)  # later runs of the same sweep (`--runs k`)
    stability: pd.DataFrame | None = None  # stability.csv: each later run against the first; None when absent

    @property
    def axis(self) -> str | None:
        axes = self.frame["axis"].dropna().unique()
        return str(axes[0]) if len(axes) else self.meta.get("axis")

    def own_rows(self) -> pd.DataFrame:
        """Rows measured at each variant's own spec (the one it was named by), successful, with a numeric time."""
        own = own_specs(self)
        keep = self.frame["spec"] == self.frame["variant"].map(own)
        ok = self.frame["status"].fillna("ok").eq("ok") & self.frame["median_ms"].notna()
        return self.frame[keep & ok]


@dataclass
class AblationSuite:
    """One ``bmbench ablate`` suite folder (or the part of it measured in one environment)."""

    name: str  # the suite's name (folder name)
    path: Path
    frame: pd.DataFrame  # the summary, one row per cell (a variant with one seed); AP columns in points
    meta: dict[str, Any]
    curves: pd.DataFrame | None = None  # curves.csv: one row per cell and evaluation step, AP in points; None: absent
    references: pd.DataFrame | None = None  # references.csv: one row per reference mask kind, AP in points
    notes: list[str] = field(default_factory=list)  # where the summary disagreed with the cells' result.json

    def per_n(self, part: str = "mask", unit: str = "ms") -> dict[int, str]:
        """N -> the ``{part}_{unit}_n{N}`` column, by N (``mask``/``ms``: the whole mask branch's median ms)."""
        found = {
            int(m[3]): column
            for column in self.frame.columns
            if (m := PER_N_RE.match(str(column))) and m[1] == part and m[2] == unit
        }
        return dict(sorted(found.items()))

    @property
    def ms_columns(self) -> dict[int, str]:
        """N -> the ``mask_ms_n{N}`` column (mask-branch median ms), by N."""
        return self.per_n("mask", "ms")

    @property
    def params_column(self) -> str | None:
        return MASK_PARAMS if MASK_PARAMS in self.frame.columns else None

    @property
    def gflops_column(self) -> tuple[int | None, str] | None:
        """(N, column) of the mask branch's GFLOPs at REFERENCE_N (else the largest N); None when not measured."""
        per_n = self.per_n("mask", "gflops")
        if not per_n:
            return None
        num = REFERENCE_N if REFERENCE_N in per_n else max(per_n)
        return num, per_n[num]

    def measures(self) -> list[str]:
        """The numeric columns averaged over seeds: every AP column, times per N, params, GFLOPs, bases r."""
        per_n = [column for column in self.frame.columns if PER_N_RE.match(str(column))]
        aps = [column for column in self.frame.columns if AP_LIKE_RE.match(str(column))]
        wanted = (*aps, *per_n, self.params_column, BASES_CORR)
        return list(dict.fromkeys(c for c in wanted if c is not None and c in self.frame.columns))

    def runs(self) -> pd.DataFrame:
        """The successful cells, one row per variant and seed: labels, ``seed`` and the measures as floats."""
        ok = self.frame[self.frame["status"].astype(str).eq("ok")]
        labels = [c for c in ("spec", "variant", "family", *SPEC_KEYS) if c in ok.columns]
        seeds = pd.to_numeric(ok[SEED], errors="coerce") if SEED in ok else pd.Series(0, ok.index)
        numeric = ok[self.measures()].apply(pd.to_numeric, errors="coerce").astype(float)
        return pd.concat([ok[labels], seeds.fillna(0).astype(int).rename(SEED), numeric], axis=1)

    def cells(self) -> pd.DataFrame:
        """One row per spec over its successful cells: each measure's mean over seeds (same name), ``<m>_std`` and
        ``<m>_n``; for AP columns ``<m>_lo``/``<m>_hi``, the bootstrap interval of the mean (bmbench.report.stats);
        ``seeds`` counts the cells."""
        runs, measures = self.runs(), self.measures()
        labels = [c for c in ("variant", "family", *SPEC_KEYS) if c in runs.columns]
        aps = [column for column in measures if AP_LIKE_RE.match(column)]
        if runs.empty:
            return runs.assign(seeds=pd.Series(dtype=int))
        cells = aggregate(runs, ["spec"], measures, interval=aps)
        first = runs.groupby("spec", sort=False)[labels].first().reset_index()
        cells = first.merge(cells, on="spec", how="left")
        cells["seeds"] = runs.groupby("spec", sort=False).size().to_numpy()
        return cells


@dataclass
class Environment:
    """Runs that share a device and a dtype: the only runs one table may hold together."""

    device_name: str
    dtype: str
    speed_runs: list[StoredSpeedRun] = field(default_factory=list)
    suites: list[AblationSuite] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.device_name} · {self.dtype}"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "-", f"{self.device_name}-{self.dtype}").strip("-").lower()[:60]


def read_meta(folder: Path) -> dict[str, Any]:
    """``meta.json`` of a run folder, or {} when absent or unreadable; one that is truncated or not JSON warns and
    reads as ``{META_PROBLEM: what is wrong}``, which the report shows in place of the run's command."""
    path = folder / "meta.json"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        # bmbench writes one JSON object: a text that does not end as one was cut short
        problem = "empty" if not text.strip() else "truncated" if not text.rstrip().endswith("}") else "not JSON"
        message = f"{path}: {problem}; the run's command, device and versions are unknown"
        warnings.warn(message, BmbenchWarning, stacklevel=2)
        return {META_PROBLEM: problem}
    return data if isinstance(data, dict) else {}


def read_table(folder: Path, stem: str) -> pd.DataFrame | None:
    """``<stem>.parquet`` (types kept), else ``<stem>.csv``, else None."""
    parquet, csv = folder / f"{stem}.parquet", folder / f"{stem}.csv"
    try:
        if parquet.is_file():
            return pd.read_parquet(parquet)
        if csv.is_file():
            return pd.read_csv(csv)
    except (OSError, ValueError) as err:
        raise BmbenchError(f"{folder / stem}: cannot read the table ({err})") from err
    return None


def check_columns(
    frame: pd.DataFrame, table: Table, where: Path, *, required: tuple[str, ...], defaulted: tuple[str, ...] = ()
) -> None:
    """Refuse a table that lacks a column the report needs (BmbenchError, one line naming the file and the columns);
    warn, one line each, about columns bmbench.schema does not know (a renamed or foreign column would otherwise drop
    out of the report unseen) and about absent columns the report reads as a default."""
    absent = [column for column in required if column not in frame.columns]
    if absent:
        raise BmbenchError(f"{where}: missing column(s) {', '.join(absent)}; is it a bmbench table?")
    unknown = [str(column) for column in frame.columns if not table.knows(str(column))]
    if unknown:
        message = f"{where}: column(s) the {table.stem} table does not have, not read: {', '.join(unknown)}"
        warnings.warn(message, BmbenchWarning, stacklevel=2)
    assumed = [column for column in defaulted if column not in frame.columns]
    if assumed:
        message = f"{where}: no column(s) {', '.join(assumed)} (an older or partial table): read as their defaults"
        warnings.warn(message, BmbenchWarning, stacklevel=2)


def _numeric_spec_keys(frame: pd.DataFrame) -> pd.DataFrame:
    for key in (*SPEC_KEYS, "axis_value", "instances"):
        if key in frame.columns:
            frame[key] = pd.to_numeric(frame[key], errors="coerce").astype("Int64")
    return frame


def load_speed_run(folder: Path) -> StoredSpeedRun:
    frame = read_table(folder, "speed")
    if frame is None:
        raise BmbenchError(f"{folder}: no speed table")
    check_columns(frame, SPEED_TABLE, folder / "speed", required=SPEED_REQUIRED, defaulted=tuple(SPEED_OPTIONAL))
    for column, default in SPEED_OPTIONAL.items():
        if column not in frame.columns:
            frame[column] = default
    for key in SPEC_KEYS:
        if key not in frame.columns:
            frame[key] = pd.NA
    frame = _numeric_spec_keys(frame)
    frame["median_ms"] = pd.to_numeric(frame["median_ms"], errors="coerce")
    frame["iqr_ms"] = pd.to_numeric(frame["iqr_ms"], errors="coerce")
    frame["axis_applies"] = frame["axis_applies"].fillna(True).astype(bool)
    frame["noisy"] = frame["noisy"].fillna(False).astype(bool)
    scaling = read_table(folder, "scaling")
    if scaling is None or scaling.empty:
        scaling = pd.DataFrame(columns=list(SCALING_COLUMNS))
    check_columns(scaling, SCALING_TABLE, folder / "scaling", required=SCALING_REQUIRED)
    families = frame.drop_duplicates("variant").set_index("variant")["family"]
    scaling = scaling.assign(family=scaling["variant"].map(families))
    meta = read_meta(folder)
    run = StoredSpeedRun(folder.name, folder, frame, scaling, meta)
    for sub in repeat_folders(folder):
        repeat = load_speed_run(sub)
        repeat.meta = repeat.meta or meta  # a later run written without its own meta.json shares the first's
        run.repeats.append(repeat)
    run.stability = read_table(folder, STABILITY_TABLE.stem)
    if run.stability is not None:
        check_columns(run.stability, STABILITY_TABLE, folder / STABILITY_TABLE.stem, required=())
    return run


def repeat_folders(folder: Path) -> list[Path]:
    """The later runs of a speed run made with `--runs k`: ``run2/``, ``run3/`` … holding a speed table."""
    found = [sub for sub in folder.glob("run[0-9]*") if sub.is_dir() and read_table(sub, "speed") is not None]
    return sorted(found, key=lambda sub: int(sub.name[3:]) if sub.name[3:].isdigit() else 0)


def own_specs(run: StoredSpeedRun) -> dict[str, str]:
    """variant label -> the spec it stands for: from meta.json, else the spec that equals the label, else the one
    measured at the middle axis value."""
    declared = {item["variant"]: item["spec"] for item in run.meta.get("variants") or [] if isinstance(item, dict)}
    own: dict[str, str] = {}
    for variant, rows in run.frame.groupby("variant", sort=False):
        specs = list(dict.fromkeys(rows["spec"]))
        if declared.get(variant) in specs:
            own[variant] = declared[variant]
        elif variant in specs:
            own[variant] = variant
        else:
            ordered = rows.drop_duplicates("spec").sort_values("axis_value")["spec"].tolist()
            own[variant] = ordered[len(ordered) // 2]
    return own


def load_ablation(folder: Path) -> AblationSuite:
    meta = read_meta(folder)
    try:
        frame, problem = read_table(folder, "summary"), None
    except BmbenchError as err:  # a truncated parquet, say: the cells' own results may still be whole
        frame, problem = None, str(err)
    if frame is not None:
        check_columns(frame, SUMMARY_TABLE, folder / "summary", required=SUMMARY_REQUIRED)
    frame, notes = check_summary(frame, folder, meta, problem)  # never a truncated or stale summary as if whole
    if problem is not None and frame.empty:
        raise BmbenchError(problem)
    for note in notes:
        warnings.warn(f"{folder}: {note}", BmbenchWarning, stacklevel=2)
    frame = _numeric_spec_keys(frame.copy())
    _ap_in_points(frame)
    for column in frame.columns:
        if PER_N_RE.match(str(column)):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    name = str(frame["suite"].iloc[0]) if "suite" in frame.columns and len(frame) else folder.name
    return AblationSuite(name, folder, frame, meta, load_curves(folder), load_references(folder), notes)


def _ap_in_points(frame: pd.DataFrame) -> None:
    for column in frame.columns:
        if AP_LIKE_RE.match(str(column)):
            frame[column] = pd.to_numeric(frame[column], errors="coerce") * AP_SCALE


def load_references(folder: Path) -> pd.DataFrame | None:
    """``references.csv`` (or .parquet) of a suite, AP in points; None when the suite has none."""
    frame = read_table(folder, REFERENCES_TABLE.stem)
    if frame is None:
        return None
    check_columns(frame, REFERENCES_TABLE, folder / REFERENCES_TABLE.stem, required=REFERENCES_REQUIRED)
    frame = frame.copy()
    _ap_in_points(frame)
    return frame


def load_curves(folder: Path) -> pd.DataFrame | None:
    """``curves.csv`` (or .parquet) of a suite: AP in points, ``seed`` 0 and ``fraction`` step/last step of the
    cell when absent; None when the suite has none."""
    frame = read_table(folder, CURVES_TABLE.stem)
    if frame is None:
        return None
    check_columns(frame, CURVES_TABLE, folder / CURVES_TABLE.stem, required=CURVES_REQUIRED, defaulted=CURVES_OPTIONAL)
    frame = _numeric_spec_keys(frame.copy())
    _ap_in_points(frame)
    frame["step"] = pd.to_numeric(frame["step"], errors="coerce")
    frame[SEED] = pd.to_numeric(frame[SEED], errors="coerce").fillna(0) if SEED in frame else 0
    cell = frame["cell_id"] if "cell_id" in frame else frame["spec"].astype(str) + "/" + frame[SEED].astype(str)
    if "fraction" not in frame:
        frame["fraction"] = frame["step"] / frame.groupby(cell)["step"].transform("max")
    frame["fraction"] = pd.to_numeric(frame["fraction"], errors="coerce")
    return frame.dropna(subset=["step", "mask_AP"]).reset_index(drop=True)


def _is_within(path: Path, parents: list[Path]) -> bool:
    return any(parent in path.parents for parent in parents)


def discover(results: Path) -> tuple[list[StoredSpeedRun], list[AblationSuite]]:
    """Every speed run and ablation suite under ``results`` (any depth). Speed tables inside an ablation suite's
    folder belong to its cells and are not runs of their own."""
    results = Path(results)
    if not results.exists():
        raise BmbenchError(f"--results {results}: no such folder (run `bmbench speed` or `bmbench ablate` first)")
    if not results.is_dir():
        raise BmbenchError(f"--results {results}: not a folder")

    def folders(stem: str) -> list[Path]:
        found = {p.parent for ext in ("parquet", "csv") for p in results.rglob(f"{stem}.{ext}")}
        return sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(results).parts))

    suite_dirs = folders("summary")
    speed_dirs = [d for d in folders("speed") if d not in suite_dirs and not _is_within(d, suite_dirs)]
    repeats = {sub for d in speed_dirs for sub in repeat_folders(d)}  # read with their first run
    speed_dirs = [d for d in speed_dirs if d not in repeats]
    return [load_speed_run(folder) for folder in speed_dirs], [load_ablation(folder) for folder in suite_dirs]


def _speed_environment(run: StoredSpeedRun) -> tuple[str, str]:
    name = run.meta.get("device_name") or _first(run.frame, "device") or UNKNOWN_DEVICE
    dtype = run.meta.get("dtype") or _first(run.frame, "dtype") or DEFAULT_DTYPE
    return str(name), str(dtype)


def _first(frame: pd.DataFrame, column: str) -> str | None:
    if column not in frame.columns:
        return None
    values = frame[column].dropna()
    return str(values.iloc[0]) if len(values) else None


def _split_suite(suite: AblationSuite) -> dict[tuple[str, str], AblationSuite]:
    """A suite's rows by the environment each cell ran in (a cell's own device_name/dtype, else the suite's)."""
    frame = suite.frame.copy()
    frame["_device"] = frame["device_name"] if "device_name" in frame else None
    frame["_device"] = frame["_device"].fillna(suite.meta.get("device_name") or UNKNOWN_DEVICE).astype(str)
    frame["_dtype"] = frame["dtype"] if "dtype" in frame else None
    frame["_dtype"] = frame["_dtype"].fillna(suite.meta.get("dtype") or DEFAULT_DTYPE).astype(str)
    parts = {}
    for (device, dtype), rows in frame.groupby(["_device", "_dtype"], sort=False):
        rows = rows.drop(columns=["_device", "_dtype"]).reset_index(drop=True)
        curves = suite.curves
        if curves is not None:  # a cell's curve goes with its summary row: by cell id where both have one
            key = "cell_id" if "cell_id" in curves and "cell_id" in rows else "spec"
            curves = curves[curves[key].isin(rows[key])].reset_index(drop=True)
        parts[(str(device), str(dtype))] = AblationSuite(
            suite.name, suite.path, rows, suite.meta, curves, suite.references, suite.notes
        )
    return parts


def group_environments(speed_runs: list[StoredSpeedRun], suites: list[AblationSuite]) -> list[Environment]:
    """Environments, in order of first appearance (speed runs first), each with its runs and suite parts."""
    environments: dict[tuple[str, str], Environment] = {}

    def environment(key: tuple[str, str]) -> Environment:
        return environments.setdefault(key, Environment(device_name=key[0], dtype=key[1]))

    for run in speed_runs:
        environment(_speed_environment(run)).speed_runs.append(run)
    for suite in suites:
        for key, part in _split_suite(suite).items():
            environment(key).suites.append(part)
    return list(environments.values())


def load_results(results: Path) -> list[Environment]:
    """Discover and group everything under ``results``; a folder with no runs is a BmbenchError."""
    speed_runs, suites = discover(results)
    environments = group_environments(speed_runs, suites)
    if not environments:
        raise BmbenchError(
            f"--results {results}: no results found (expected speed/<run>/speed.csv from `bmbench speed` or "
            f"ablate/<suite>/summary.csv from `bmbench ablate`)"
        )
    return environments
