"""The results schema: the columns of every table bmbench writes, in one place that writers and readers import.

A leaf module (no torch, no pandas): the report reads these names without loading the measuring code. A column added
here is written by its writer and read by the report; a reader never keeps its own copy.

Letters: N instances, K bases, M attention side, R mask side.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

MASK_STAGES = ("bottom", "top", "merge", "paste")  # a mask head's stages, in order (bottom, top: once per image)
TOTAL = "total"  # the whole mask branch, timed as one run
STAGES = (*MASK_STAGES, TOTAL)
DETECTOR, END_TO_END = "detector", "end_to_end"  # the model without the mask branch, and the whole model

# --- bmbench speed: speed.csv, one row per (variant, axis value, N, stage) -----------------------------------------
SPEED_COLUMNS = (
    "variant",  # the variant as given (preset name or spec)
    "spec",  # the spec measured at this axis value
    "family",
    "K",
    "M",
    "R",
    "S",
    "axis",  # the swept axis (R, K or M)
    "axis_value",  # its value at this point (the variant's own when the axis does not apply; empty if it has none)
    "axis_applies",  # False: the axis does not change this variant, measured once at its own value
    "instances",  # N
    "stage",  # bottom, top, merge, paste, total; detector, end_to_end for the whole model
    "device",
    "dtype",
    "trunk",
    "image_size",  # WxH
    "threads",
    "compiled",
    "median_ms",
    "iqr_ms",
    "mean_ms",
    "min_ms",
    "n",  # timed repeats
    "block",  # back-to-back calls per timed repeat (a stage shorter than the timer's min_block_s); times per call
    "noisy",  # IQR / median > 10 %
    "first_ms",  # the first warm-up run of the measurement; nan without warm-up
    "ci_low_ms",  # the 95 % interval of the median (order statistics)
    "ci_high_ms",
    "rel_ci",  # its larger half-width / median
    "precise",  # the interval reached the precision target (False: flagged, stopped by the cap or budget)
    "ratio_to_ref",  # median over cycles of (this time / the drift probe's time in the same cycle)
    "ratio_ci_low",  # its 95 % interval (order statistics)
    "ratio_ci_high",
    "schedule",  # interleaved or sequential (bench/schedule.py)
    "stop",  # what ended the repeats: precision, cap or budget
    "peak_alloc_mb",  # CUDA: peak allocated memory during the measurement (torch.cuda.max_memory_allocated)
    "merge_ws_mb",  # the merge's working set at this point, from tensor sizes (bench.memory; CPU and CUDA)
    "status",  # ok, oom or error
    "error",  # the error's message when status is not ok
)

# --- bmbench speed: scaling.csv, one row per (variant, stage, fitted variable, where the other was held) --------------
SCALING_COLUMNS = (
    "variant",
    "stage",
    "x",  # R, K, M or N
    "at",  # where the other variable was held: N=<largest> for axis fits, <axis>=<value> (or own) for N fits
    "slope",  # least-squares slope of log(time) on log(x), over x_min..x_max
    "r2",  # of that log-log fit
    "points",
    "x_min",
    "x_max",
    "a_ms",  # cost model t = a + b·x^p: the fixed cost
    "b",  # its coefficient (ms per x^p)
    "p",  # its exponent; nan where the marginal part is zero (no growth to fit)
    "p_low",  # bootstrap 95 % interval of p
    "p_high",
    "marginal_ms",  # (t(x_max) - a) / x_max^u: the average marginal cost in marginal_unit
    "marginal_unit",  # ms per instance (N), ms per R² (R), …
    "fit_r2",  # R² of the cost model on the times themselves
    "fit_rmse_rel",  # root-mean-square relative residual of the cost model
    "fit_points",  # the points the cost model was fitted to (every measured x: a absorbs the fixed cost)
    "p_paired",  # the cost model fitted within each cycle on that cycle's points: the median p over cycles
    "p_paired_low",  # bootstrap 95 % interval of that median (cycles resampled)
    "p_paired_high",
    "cycles_paired",  # cycles holding every point of the fit (the paired and the floor fit both use them)
    "p_floor",  # the cost model fitted to each point's fastest call over those cycles: what verdicts read
    "p_floor_low",  # bootstrap 95 % interval (cycles resampled)
    "p_floor_high",
)

# The exponent a speed verdict reads, first present first: the floor fit, the paired fit, the pooled cost model (older
# scaling.csv files have only the last). bench.floor explains why the floor comes first.
JUDGED_FITS = (("floor", "p_floor"), ("paired", "p_paired"), ("pooled", "p"))


def judged_exponent(fit: Mapping[str, object]) -> tuple[float, float, float, str]:
    """(p, low, high, which fit) of a scaling.csv row, as a verdict reads it (JUDGED_FITS)."""

    def value(column: str) -> float:
        raw = fit.get(column)
        return float("nan") if raw is None or raw == "" else float(raw)  # type: ignore[arg-type]

    for name, column in JUDGED_FITS:
        if not math.isnan(value(column)):
            return value(column), value(f"{column}_low"), value(f"{column}_high"), name
    return float("nan"), value("p_low"), value("p_high"), "pooled"


# --- bmbench speed: samples.csv, every timed repeat of the sweep (what the paired fits and ratios are computed from)
SAMPLE_COLUMNS = (
    "variant",
    "spec",
    "axis_value",
    "axis_applies",
    "instances",  # N (bottom and top: the largest N, their row at every N)
    "stage",  # bottom, top, merge, paste, total; "probe" for the drift probe
    "cycle",  # the cycle it was timed in (sequential: the repeat's index)
    "ms",  # per call
    "ref_ms",  # the drift probe's time in the same cycle
    "at_s",  # seconds since the timed part started
)

# --- bmbench speed --runs 2: stability.csv, what a second run of the same sweep repeated ----------------------------
STABILITY_COLUMNS = (
    "run",  # the later run compared with the first (2, 3, ...)
    "kind",  # points-ms, points-ratio: the share of points whose intervals overlap; exponent: one fit in both runs
    "name",  # what is compared (a fit: variant stage vs x at ...)
    "first",  # the first run's value (a share, or an exponent)
    "second",  # the second run's
    "first_low",  # intervals (exponents)
    "first_high",
    "second_low",
    "second_high",
    "agree",  # the intervals overlap (exponent); the share of points agreeing (points-*)
    "median_abs_diff_pct",  # points-*: median |difference| between the runs' medians, % of the first
    "points",  # points compared
)

# --- columns every table that names a variant carries ----------------------------------------------------------------
SPEC_KEYS = ("K", "M", "R", "S")  # the fields every spec has as attributes (None where its family lacks them)
SCORE_PREFIXES = ("mask_", "box_", "boundary_")  # every metric COCOeval scoring returns starts so (AP in 0..1)
# A value at N instances: mask_ms_n{N} (the whole mask branch), <stage>_ms_n{N}, mask_gflops_n{N} (analytic cost)
PER_N_PATTERN = r"(mask|bottom|top|merge|paste)_(ms|gflops)_n(\d+)"

# --- bmbench ablate: summary.csv, one row per cell (variant x seed) --------------------------------------------------
BUILT_IN_ORIGIN = "built in"  # the summary's origin of a family bmbench ships (bmbench.plugins.BUILT_IN's kind)
SEED = "seed"  # the cell's seed (absent in summaries written before suites had seeds: each row then stands alone)
SUMMARY_METRICS = (  # the summary's first metric columns, in order (then every other measured value)
    "mask_AP", "mask_AP50", "mask_AP75", "mask_APs", "mask_APm", "mask_APl", "box_AP",
    "mask_AP_touching", "mask_AP_thin", "boundary_AP", "boundary_AP50", "boundary_AP75",
)  # fmt: skip
TOUCHING_AP = "mask_AP_touching"  # mask AP on same-class instances that touch or overlap (the subset M is for)
THIN_AP = "mask_AP_thin"  # mask AP on shapes with parts a few pixels wide (the subset R is for)
BOUNDARY_AP = "boundary_AP"  # Boundary AP (Cheng et al. 2021): the metric that responds to R
BASES_CORR = "bases_corr"  # mean pairwise correlation of the trained bases (bmbench.models.diagnostics)
MASK_PARAMS = "mask_params"  # parameters of the mask branch
SUMMARY_COLUMNS = (
    "suite",
    "cell_id",
    "variant",
    "spec",
    "family",
    "origin",  # where the family comes from: BUILT_IN_ORIGIN, or a plugin's package and version
    *SPEC_KEYS,
    SEED,
    "protocol",  # the suite's train: section, as far as it sets a cell apart
    "iters",
    "batch_size",
    "lr",
    "trunk",
    "eval_boxes",  # oracle or predicted
    "speed_image_size",  # the suite's speed: section (the workload each cell's mask branch is timed on)
    "speed_trunk",
    "status",  # ok or failed
    "error",
    *SUMMARY_METRICS,
    "infer_images_per_s",  # what evaluation measured beside the scores
    "eval_s",
    "num_detections",
    BASES_CORR,
    MASK_PARAMS,
    "train_s",  # what training measured
    "train_images_per_s",
    "trunk_reused",  # the one-time stage came from the suite's cache
    "init_loaded",  # tensors --init loaded into the backbone
    "device",  # where the cell ran
    "device_name",
    "dtype",
    "torch",
    "threads",
    "git_commit",
    "hostname",
    "wall_s",  # the cell, end to end
    "finished",  # when (UTC)
)
SUMMARY_PATTERNS = (  # column families whose names carry a value
    r"dataset_\w+",  # the suite's dataset: section, one column per field
    rf"({'|'.join(SCORE_PREFIXES)})\w+",  # every score: per subset, per class (mask_AP_<class>), AP50/75, s/m/l
    PER_N_PATTERN,
    r"(bottom|top|merge|paste)_gflops_n\d+",  # analytic cost per stage at N
    r"final_loss_\w+",  # the last logged value of each training loss
    r"(trunk|pretrain)_(train_s|images_per_s)",  # the one-time stage of shared-trunk and finetune
)

# --- bmbench ablate: curves.csv, one row per cell and evaluated step ------------------------------------------------
CURVES_COLUMNS = ("cell_id", "spec", "family", *SPEC_KEYS, SEED, "step", "fraction")  # then the metrics at that step
CURVE_PREFIXES = ("mask_AP", "box_AP", "boundary_AP")  # the metrics a learning curve keeps at each step
CURVES_PATTERNS = (rf"({'|'.join(CURVE_PREFIXES)})\w*",)

# --- bmbench ablate: references.csv, one row per reference mask kind, scored like the cells ------------------------
REFERENCES_COLUMNS = ("reference", "split")  # then its scores
REFERENCES_PATTERNS = (rf"({'|'.join(SCORE_PREFIXES)})\w+",)


# --- the report's verdict on a finding ------------------------------------------------------------------------------
HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured"
NOT_SIGNIFICANT = "not significant at this budget"  # measured, but a difference it rests on is inside the spread
UNSTABLE = "unstable here"  # runs of the same sweep on this machine gave different verdicts


@dataclass(frozen=True)
class Table:
    """One results table: the file stem its writer uses, its columns, and the column families named by a pattern
    (a value in the name: per N, per class, per dataset field). The report warns about any other column."""

    stem: str  # <stem>.csv and <stem>.parquet
    columns: tuple[str, ...]  # the columns its writer writes, in order
    patterns: tuple[str, ...] = ()  # regular expressions a column name may match whole instead

    def knows(self, column: str) -> bool:
        return column in self.columns or any(re.fullmatch(pattern, column) for pattern in self.patterns)


SPEED_TABLE = Table("speed", SPEED_COLUMNS)
SCALING_TABLE = Table("scaling", SCALING_COLUMNS)
SAMPLES_TABLE = Table("samples", SAMPLE_COLUMNS)
STABILITY_TABLE = Table("stability", STABILITY_COLUMNS)
SUMMARY_TABLE = Table("summary", SUMMARY_COLUMNS, SUMMARY_PATTERNS)
CURVES_TABLE = Table("curves", CURVES_COLUMNS, CURVES_PATTERNS)
REFERENCES_TABLE = Table("references", REFERENCES_COLUMNS, REFERENCES_PATTERNS)
