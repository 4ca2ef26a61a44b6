"""What a speed sweep measures, expanded from its config: the points (variant × axis value) and the measurements
of each point (stage × N), before anything is built or timed.

Letters: N instances, K bases, M attention side, R mask side. A point is a variant at one axis value; a measurement
is one stage of one point at one N. Bottom and top read no per-instance input: they are one measurement per point,
taken at the largest N, and their row repeats at every N.
"""

from __future__ import annotations

from dataclasses import dataclass

from bmbench.bench.options import SweepConfig
from bmbench.errors import BmbenchError
from bmbench.schema import STAGES
from bmbench.variants import VariantSpec

PER_IMAGE_STAGES = ("bottom", "top")  # no per-instance input: one measurement per point
PER_INSTANCE_STAGES = tuple(stage for stage in STAGES if stage not in PER_IMAGE_STAGES)  # merge, paste, total


@dataclass(frozen=True)
class SweepPoint:
    """One variant at one axis value."""

    variant: str  # label as given
    spec: VariantSpec
    axis_value: int | None  # None when the variant has no such field (YOLACT and R)
    axis_applies: bool


@dataclass(frozen=True)
class Skipped:
    """A requested point that is not a valid spec (e.g. M > R)."""

    variant: str
    axis_value: int
    reason: str


@dataclass(frozen=True)
class MeasurementKey:
    """One timed measurement: a stage of a point at N instances (per-image stages: at the largest N)."""

    point: int  # index into the plan's points
    instances: int  # N
    stage: str  # bottom, top, merge, paste or total


def plan_points(config: SweepConfig) -> tuple[list[SweepPoint], list[Skipped]]:
    """Expand variants × axis values. A variant the axis does not apply to gives one point at its own value; an
    invalid combination is skipped and listed. Raises BmbenchError when nothing is left to measure."""
    points: list[SweepPoint] = []
    skipped: list[Skipped] = []
    for label, spec in config.variants:
        if not spec.applies(config.axis):
            points.append(SweepPoint(label, spec, getattr(spec, config.axis), False))
            continue
        for value in config.values:
            try:
                points.append(SweepPoint(label, spec.with_params(**{config.axis: value}), value, True))
            except BmbenchError as err:
                skipped.append(Skipped(label, value, str(err)))
    if not points:
        reasons = "; ".join(f"{s.variant} {config.axis}={s.axis_value}: {s.reason}" for s in skipped)
        raise BmbenchError(f"nothing to measure: every point is invalid ({reasons})")
    return points, skipped


def plan_measurements(points: list[SweepPoint], instances: tuple[int, ...]) -> list[MeasurementKey]:
    """Every measurement of the sweep, in the sequential order: point by point, the per-image stages first, then
    each N from the largest down (the largest warms a head up), stage by stage."""
    counts = sorted(instances, reverse=True)
    keys: list[MeasurementKey] = []
    for index in range(len(points)):
        keys += [MeasurementKey(index, counts[0], stage) for stage in PER_IMAGE_STAGES]
        keys += [MeasurementKey(index, num, stage) for num in counts for stage in PER_INSTANCE_STAGES]
    return keys


def count_steps(config: SweepConfig, points: list[SweepPoint]) -> int:
    """Progress steps: the warm-up, the timed part (one step a point), one end-to-end point per variant, one
    profiled point per point."""
    steps = 1 + len(points)
    steps += len(config.variants) if config.end_to_end else 0
    return steps + (len(points) if config.profile else 0)
