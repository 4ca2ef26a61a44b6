"""The report's statistics over seeds: per-cell mean, std and a bootstrap interval, differences between cells with
their interval, and Kendall's tau-b between two rankings.

Everything is deterministic: each bootstrap draws from its own generator seeded with BOOTSTRAP_SEED, so the same
table gives the same intervals. Values are indexed by seed; a difference between cells is paired over the seeds
they share (same seed: same data stream and pretrained model, so the pairing removes that part of the noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

CI_LEVEL = 0.95  # the interval's coverage
BOOTSTRAP_RESAMPLES = 4000  # resamples of the seeds per interval: the percentiles move < 0.05 AP between reseedings
BOOTSTRAP_SEED = 0  # the generator's seed: the same table always gives the same interval
MIN_SEEDS = 3  # fewer seeds give no usable interval: with 2, a percentile bootstrap returns their range, and two
# seeds agree in sign half the time by chance; with 3 it returns (nearly) their range, all 3 agree 1 time in 4
ABOVE, BELOW, INSIDE = "above", "below", "inside"  # where an interval lies against a threshold


def bootstrap_ci(values: np.ndarray, *, level: float = CI_LEVEL, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (float[n], NaNs dropped); NaNs when n < 2."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(BOOTSTRAP_RESAMPLES, len(values)))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def aggregate(frame: pd.DataFrame, keys: list[str], columns: list[str], *, interval: list[str]) -> pd.DataFrame:
    """One row per ``keys``: each column's mean (same name), ``<column>_std`` (sample std, NaN for one value) and
    ``<column>_n``; for the columns in ``interval`` also ``<column>_lo`` / ``<column>_hi``, the bootstrap interval
    of the mean. Rows keep the first-seen order of their keys."""
    grouped = frame.groupby(keys, sort=False, dropna=False)
    parts = [grouped[columns].mean()]
    parts.append(grouped[columns].std(ddof=1).add_suffix("_std"))
    parts.append(grouped[columns].count().add_suffix("_n"))
    for column in interval:
        bounds = grouped[column].apply(lambda values: pd.Series(bootstrap_ci(values.to_numpy()), index=["lo", "hi"]))
        bounds = bounds.unstack() if isinstance(bounds.index, pd.MultiIndex) else bounds
        parts.append(bounds.rename(columns={"lo": f"{column}_lo", "hi": f"{column}_hi"}))
    return pd.concat(parts, axis=1).reset_index()


@dataclass(frozen=True)
class Difference:
    """A contrast between cells (e.g. cell A minus cell B) estimated over seeds, with its bootstrap interval."""

    estimate: float  # the contrast of the cells' means
    low: float  # CI_LEVEL bootstrap interval; NaN when seeds < MIN_SEEDS
    high: float
    seeds: int  # seeds it rests on: shared seeds when paired, else the fewest any cell has
    paired: bool  # True: per-seed contrasts over shared seeds; False: each cell's seeds resampled on their own

    @property
    def measured(self) -> bool:
        """An interval exists: enough seeds for one."""
        return self.seeds >= MIN_SEEDS and not math.isnan(self.low)

    def side(self, threshold: float = 0.0) -> str:
        """ABOVE when the whole interval is above ``threshold``, BELOW when below, INSIDE when it contains it or
        when there is no interval (too few seeds)."""
        if not self.measured:
            return INSIDE
        return ABOVE if self.low > threshold else BELOW if self.high < threshold else INSIDE

    def text(self, unit: str = "AP") -> str:
        """``+2.9 AP [+1.2, +4.1], 3 seeds`` (or ``+2.9 AP, one seed: no interval``)."""
        if not self.measured:
            count = "one seed" if self.seeds <= 1 else f"{self.seeds} seeds (< {MIN_SEEDS})"
            return f"{self.estimate:+.1f} {unit}, {count}: no interval"
        how = "paired" if self.paired else "unpaired"
        return f"{self.estimate:+.1f} {unit} [{self.low:+.1f}, {self.high:+.1f}], {self.seeds} seeds {how}"


def contrast(terms: list[tuple[pd.Series, float]], *, seed: int = BOOTSTRAP_SEED) -> Difference:
    """Σ weight · mean(values) over ``terms`` (each a Series of one cell's metric indexed by seed) with its interval:
    paired over the seeds every term has when there are at least MIN_SEEDS of them, else each term resampled on
    its own (then the seed count is the fewest any term has)."""
    terms = [(values.dropna(), weight) for values, weight in terms]
    weights = np.array([weight for _, weight in terms], dtype=float)
    estimate = float(sum(weight * values.mean() for values, weight in terms))
    shared = set.intersection(*(set(values.index) for values, _ in terms)) if terms else set()
    if len(shared) >= MIN_SEEDS:
        order = sorted(shared)
        per_seed = np.column_stack([values.groupby(level=0).mean().loc[order].to_numpy() for values, _ in terms])
        low, high = bootstrap_ci(per_seed @ weights, seed=seed)
        return Difference(float((per_seed @ weights).mean()), low, high, len(order), True)
    fewest = min((len(values) for values, _ in terms), default=0)
    if fewest < MIN_SEEDS:
        return Difference(estimate, math.nan, math.nan, fewest, False)
    rng = np.random.default_rng(seed)
    total = np.zeros(BOOTSTRAP_RESAMPLES)
    for values, weight in terms:
        array = values.to_numpy(dtype=float)
        total += weight * array[rng.integers(0, len(array), size=(BOOTSTRAP_RESAMPLES, len(array)))].mean(axis=1)
    tail = 100 * (1 - CI_LEVEL) / 2
    low, high = np.percentile(total, [tail, 100 - tail])
    return Difference(estimate, float(low), float(high), fewest, False)


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b of two rankings (float[n] each): (concordant − discordant) pairs over the geometric mean of
    the pairs untied in x and untied in y; NaN with fewer than two items or when either side is all ties."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    upper = np.triu_indices(len(x), k=1)
    sx = np.sign(x[:, None] - x[None, :])[upper]
    sy = np.sign(y[:, None] - y[None, :])[upper]
    denominator = math.sqrt(float(np.abs(sx).sum() * np.abs(sy).sum()))
    return float((sx * sy).sum() / denominator) if denominator > 0 else math.nan


def seed_values(runs: pd.DataFrame, spec: str, metric: str) -> pd.Series:
    """One cell's ``metric`` indexed by seed (``runs``: one row per spec and seed, as AblationSuite.runs)."""
    rows = runs[(runs["spec"] == spec) & runs[metric].notna()]
    return rows.groupby("seed")[metric].mean()


def matched_contrast(
    runs: pd.DataFrame, axis: str, value: int, other: int, metric: str, keys: tuple[str, ...] = ("R", "K", "M")
) -> tuple[Difference, int]:
    """``axis=value`` minus ``axis=other`` on ``metric``, averaged over the groups of cells that match on the other
    ``keys`` (e.g. K=4 minus K=1 at each measured R and M), and how many groups matched. When only some groups' two
    cells share MIN_SEEDS seeds (a suite that runs 3 seeds only where the findings compare), the contrast uses those
    groups alone, so that it has an interval; otherwise every group."""
    rows = runs[runs[metric].notna()] if metric in runs else runs.iloc[0:0]
    group_keys = [key for key in keys if key != axis and key in rows]
    specs = rows.drop_duplicates("spec")[["spec", axis, *group_keys]]
    here, there = specs[specs[axis] == value], specs[specs[axis] == other]
    pairs = here.merge(there, on=group_keys, suffixes=("", "_other")) if group_keys else here.merge(there, how="cross")
    if pairs.empty:
        return Difference(math.nan, math.nan, math.nan, 0, False), 0

    def shared_seeds(pair: pd.Series) -> int:
        mine, theirs = seed_values(rows, pair["spec"], metric), seed_values(rows, pair["spec_other"], metric)
        return len(set(mine.index) & set(theirs.index))

    seeded = pairs[pairs.apply(shared_seeds, axis=1) >= MIN_SEEDS]
    if len(seeded) and len(seeded) < len(pairs):
        pairs = seeded
    weight = 1.0 / len(pairs)
    terms = [(seed_values(rows, spec, metric), weight) for spec in pairs["spec"]]
    terms += [(seed_values(rows, spec, metric), -weight) for spec in pairs["spec_other"]]
    return contrast(terms), len(pairs)
