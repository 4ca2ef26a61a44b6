"""The results schema: the columns of every table bmbench writes, in one place that writers and readers import.

A leaf module (no torch, no pandas): the report reads these names without loading the measuring code. A column added
here is written by its writer and read by the report; a reader never keeps its own copy.

Letters: N instances, K bases, M attention side, R mask side.
"""

from __future__ import annotations

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
    "cycles_paired",  # cycles holding every point of the fit
)

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
