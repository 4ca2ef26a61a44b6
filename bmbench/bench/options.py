"""What a speed sweep measures, as a frozen dataclass, and the strict parsers that build it from user text.

Everything is validated here, before anything is measured or written: bad input raises BmbenchError naming the
offending text. Letters: N instances, K bases, M attention side, R mask side.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from bmbench.bench.timer import DEFAULT_MIN_BLOCK_S
from bmbench.device import DTYPES, resolve_device, resolve_dtype
from bmbench.errors import BmbenchError
from bmbench.models.backbone import TRUNKS
from bmbench.variants import FAMILY_PRESETS, VariantSpec, parse_specs

# The axes `--vary` sweeps, with their default values.
AXIS_DEFAULTS: dict[str, tuple[int, ...]] = {"R": (28, 56, 112), "K": (1, 2, 4, 8), "M": (1, 2, 4, 7, 14)}
DEFAULT_INSTANCES = "1..100"
# W x H, as the option is written: COCO-style 800 short side, 1088 long side (the reference size of
# `bmbench variants`, H=800, W=1088).
DEFAULT_IMAGE_SIZE = "1088x800"
# The CPU's defaults where the command gives none: the small trunk at the quick suite's 544x416 and R up to 56, so
# that the default sweep finishes in minutes on a few cores (measured on a 2-core VM: 218 s and 222 s; with one
# thread at 320x256 it took 277 s and reached the precision target on fewer rows, 24 % against 32 %). At the
# paper's setting a 2-core CPU needs ~7 minutes for 6 repeats of the Mask R-CNN head alone (R=112, N=100 runs
# 14-29 s there: its four 256-channel convs on 100 RoIs of 56x56); on CUDA the paper's setting is the default.
CPU_IMAGE_SIZE = "544x416"
CPU_TRUNK = "small"
CPU_AXIS_DEFAULTS: dict[str, tuple[int, ...]] = {"R": (14, 28, 56)}
DEFAULT_TRUNK = "r50"
DEFAULT_BUDGET_S = 0.5  # seconds of timed repeats per stage measurement, at most (the precision target stops sooner)
DEFAULT_WARMUP = 1
DEFAULT_MAX_REPEATS = 100  # a cheap noisy stage reaches ±3 % within this many repeats
# repeats per measurement whatever the budget: the fewest with a distribution-free 95 % interval of the median
# (bench.timer.MIN_CI_REPEATS), so that every point can reach the precision target; spread over the cycles
DEFAULT_MIN_REPEATS = 6
DEFAULT_MIN_BLOCK_MS = DEFAULT_MIN_BLOCK_S * 1e3  # >0: a stage shorter than this is timed in blocks of calls
DEFAULT_PRECISION = 0.03  # the median's 95 % interval within ±3 %
SCHEDULES = ("interleaved", "sequential")  # bench/schedule.py
DEFAULT_SCHEDULE = "interleaved"
DEFAULT_PRIME = False  # an untimed call before every timed one in a cycle (see the measurement in docs/speed.md)
MIN_IMAGE_SIDE = 32
# The fields a suite's speed: section may set; the rest are fixed per cell (variant, its own R, device, seed).
SUITE_SPEED_FIELDS = ("instances", "image_size", "trunk", "dtype", "budget_s")

_RANGE_RE = re.compile(r"^(\d+)\.\.(\d+)(?::(\d+))?$")


def one_two_five(low: int, high: int) -> list[int]:
    """The 1-2-5 series (1, 2, 5, 10, 20, 50, …) inside [low, high]."""
    values, decade = [], 1
    while decade <= high:
        values += [v for v in (decade, 2 * decade, 5 * decade) if low <= v <= high]
        decade *= 10
    return values


def parse_instances(text: str) -> list[int]:
    """Instance counts from ``1..100`` (the 1-2-5 series inside the bounds), ``a..b:step`` (inclusive range) and
    comma lists of either or of plain integers; sorted, without duplicates. Every count must be >= 1."""
    values: set[int] = set()
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise BmbenchError(f"--instances {text!r}: give counts like 1..100, 10..100:10 or 1,10,100")
    for item in items:
        match = _RANGE_RE.match(item)
        if item.isdigit():
            count = int(item)
            if count < 1:
                raise BmbenchError(f"--instances: {item!r} must be >= 1")
            values.add(count)
        elif match:
            low, high = int(match[1]), int(match[2])
            step = None if match[3] is None else int(match[3])
            if low < 1:
                raise BmbenchError(f"--instances: {item!r} must start at >= 1")
            if high < low:
                raise BmbenchError(f"--instances: {item!r} is empty (the end is below the start)")
            if step is not None and step < 1:
                raise BmbenchError(f"--instances: {item!r} needs a step >= 1")
            expanded = list(range(low, high + 1, step)) if step else one_two_five(low, high)
            if not expanded:
                raise BmbenchError(f"--instances: {item!r} holds no 1-2-5 value; use {low}..{high}:1 for a range")
            values.update(expanded)
        else:
            raise BmbenchError(f"--instances: bad item {item!r} (use 1..100, a..b:step or a comma list of counts)")
    return sorted(values)


def parse_axis(text: str) -> str:
    """``R``, ``K`` or ``M`` (case-insensitive)."""
    axis = text.strip().upper()
    if axis not in AXIS_DEFAULTS:
        raise BmbenchError(f"--vary: unknown axis {text!r} (use {', '.join(AXIS_DEFAULTS)})")
    return axis


def parse_values(text: str | None, axis: str, *, device: torch.device | None = None) -> list[int]:
    """A comma list of positive integers for ``axis``; None gives the axis defaults (the CPU's on a CPU device)."""
    if text is None:
        on_cpu = device is not None and device.type == "cpu"
        return list((CPU_AXIS_DEFAULTS if on_cpu else {}).get(axis, AXIS_DEFAULTS[axis]))
    values: list[int] = []
    for item in (part.strip() for part in text.split(",")):
        if not item.isdigit() or int(item) < 1:
            raise BmbenchError(f"--values: bad {axis} value {item!r} (use a comma list of integers >= 1)")
        if int(item) not in values:
            values.append(int(item))
    return values


def parse_image_size(text: str) -> tuple[int, int]:
    """``WxH`` -> (H, W), each side >= 32."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if match is None:
        raise BmbenchError(f"--image-size: {text!r} is not WxH (e.g. {DEFAULT_IMAGE_SIZE})")
    W, H = int(match[1]), int(match[2])
    if min(W, H) < MIN_IMAGE_SIDE:
        raise BmbenchError(f"--image-size: {text!r} has a side below {MIN_IMAGE_SIDE} pixels")
    return H, W


def default_threads() -> int:
    """All cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class SweepConfig:
    """One speed sweep: variants × axis values × instance counts, on one device. A suite's ``speed:`` section loads
    into this class too (its fields SUITE_SPEED_FIELDS), so the defaults below are the suite's."""

    variants: tuple[tuple[str, VariantSpec], ...] = ()  # (label as given, spec) per variant
    axis: str = "R"  # R, K or M
    values: tuple[int, ...] = ()  # the axis values
    # N values, ascending
    instances: tuple[int, ...] = field(default=(1, 10, 100), metadata={"minimum": 1, "sorted": True})
    image_size: tuple[int, int] = field(default=(800, 1088), metadata={"size": True})  # H, W (written WxH)
    device: torch.device = torch.device("cpu")  # where the sweep runs
    dtype: str = field(default="fp32", metadata={"choices": tuple(DTYPES)})  # fp32, fp16 or bf16
    threads: int = field(default_factory=lambda: default_threads())  # torch intra-op threads
    # budget of one stage measurement's timed repeats, seconds
    budget_s: float = field(default=DEFAULT_BUDGET_S, metadata={"positive": True})
    warmup: int = DEFAULT_WARMUP  # warm-up runs per stage measurement (fewer when one run exceeds the budget)
    min_repeats: int = DEFAULT_MIN_REPEATS  # timed repeats per stage measurement that the budget cannot cut
    max_repeats: int = DEFAULT_MAX_REPEATS  # cap on timed repeats per stage measurement
    # a stage faster than this is timed in blocks of back-to-back calls lasting about this long (0: one call each)
    min_block_ms: float = DEFAULT_MIN_BLOCK_MS
    # target relative half-width of the median's 95 % interval (0: repeat until the budget or the cap)
    precision: float = DEFAULT_PRECISION
    # interleaved: shuffled cycles of every measurement and the drift probe; sequential: one measurement after another
    schedule: str = field(default=DEFAULT_SCHEDULE, metadata={"choices": SCHEDULES})
    prime: bool = DEFAULT_PRIME  # an untimed call before each timed repeat
    runs: int = field(default=1, metadata={"minimum": 1})  # the whole sweep this many times (stability.csv compares)
    # the drift probe's image side (bench/drift.py); None: sized to the sweep's median measurement
    probe_side: int | None = None
    seed: int = 0  # boxes, features and weights
    # widths of the FPN and box tower: a key of TRUNKS (r50: the paper's)
    trunk: str = field(default=DEFAULT_TRUNK, metadata={"choices": lambda: tuple(TRUNKS)})
    compile: bool = False  # torch.compile the head's stages
    profile: bool = False  # write torch.profiler traces after timing
    end_to_end: bool = True  # also time the whole model per variant at the largest N
    peers: bool = False  # also time the floors and peers (bench.peers) at the largest N, as `--check` does

    @property
    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype, self.device)

    @property
    def image_text(self) -> str:
        H, W = self.image_size
        return f"{W}x{H}"


_CPU_R = ",".join(map(str, CPU_AXIS_DEFAULTS["R"]))
_AXES = ", ".join(f"{axis} {','.join(map(str, values))}" for axis, values in AXIS_DEFAULTS.items())


def _help(text: str, *flags: str) -> dict[str, object]:
    return {"help": text, "flags": flags} if flags else {"help": text}


@dataclass(frozen=True)
class SweepRequest:
    """A sweep as the user writes it, before validation: each field is one option of `bmbench speed` (its help in the
    metadata; bmbench.cli.options generates the options), and make_config turns it into a SweepConfig or names the
    bad input. A new sweep option is a field here and one in SweepConfig."""

    vary: str = field(default="R", metadata=_help("Axis to sweep: R, K or M."))
    values: str | None = field(
        default=None,
        metadata=_help(f"Comma list of axis values. Defaults: {_AXES}; on the CPU R {_CPU_R} (sized to finish)."),
    )
    variants: str | None = field(
        default=None, metadata=_help("Comma list of presets or specs. Default: the family presets.")
    )
    instances: str = field(
        default=DEFAULT_INSTANCES,
        metadata=_help("Instance counts N: 1..100 (1-2-5 series), a..b:step, or a comma list."),
    )
    image_size: str | None = field(
        default=None,
        metadata=_help(f"Image size WxH. Default: {DEFAULT_IMAGE_SIZE} (the paper's); {CPU_IMAGE_SIZE} on the CPU."),
    )
    device: str = field(default="auto", metadata=_help("auto, cpu, cuda or cuda:N."))
    dtype: str = field(default="fp32", metadata=_help("fp32, fp16 (CUDA only) or bf16."))
    threads: int | None = field(default=None, metadata=_help("Torch threads. Default: all cores."))
    budget_s: float = field(
        default=DEFAULT_BUDGET_S,
        metadata=_help(
            "Seconds of timed repeats per stage measurement, at most (the precision target stops sooner); in cycles, "
            "the measurements of one stage share theirs."
        ),
    )
    precision: float = field(
        default=DEFAULT_PRECISION,
        metadata=_help(
            "Repeat each stage until the 95 %% interval of its median is within this fraction of it (0.03: ±3 %%), "
            "or until --max-repeats or --budget-s; 0 turns the target off."
        ),
    )
    warmup: int = field(
        default=DEFAULT_WARMUP,
        metadata=_help(
            "Warm-up runs per point (on the CPU, eager: per head, at its largest N); fewer when one run exceeds the "
            "budget."
        ),
    )
    min_repeats: int = field(
        default=DEFAULT_MIN_REPEATS,
        metadata=_help(
            "Timed repeats per stage that the budget cannot cut (6: the fewest with a 95 %% interval of the median)."
        ),
    )
    max_repeats: int = field(default=DEFAULT_MAX_REPEATS, metadata=_help("Cap on timed repeats per stage."))
    min_block_ms: float = field(
        default=DEFAULT_MIN_BLOCK_MS,
        metadata=_help(
            "A stage faster than this is timed in blocks of back-to-back calls lasting about this long, each repeat "
            "their mean (as timeit does); 0 (the default): one call per repeat."
        ),
    )
    seed: int = field(default=0, metadata=_help("Seed of boxes, features and weights."))
    trunk: str | None = field(
        default=None,
        metadata=_help(
            f"Widths of FPN and box tower: {', '.join(TRUNKS)}. Default: {DEFAULT_TRUNK} (the paper's); {CPU_TRUNK} "
            "on the CPU."
        ),
    )
    schedule: str = field(
        default=DEFAULT_SCHEDULE,
        metadata=_help(
            "interleaved: cycles of one repeat of every measurement and of a drift probe, in a shuffled order each "
            "cycle, so that drift over the run moves every point alike; sequential: one measurement's repeats after "
            "another (the order before cycles, kept to compare)."
        ),
    )
    prime: bool = field(
        default=DEFAULT_PRIME,
        metadata=_help("An untimed call before every timed one (caches warmed by the stage itself)."),
    )
    runs: int = field(
        default=1,
        metadata=_help(
            "Run the whole sweep this many times; stability.csv and the console say what the later runs repeated "
            "(points agreeing in ms and in ratio to the probe, exponents, verdicts)."
        ),
    )
    probe_side: int | None = field(
        default=None,
        metadata=_help(
            "The drift probe's image side (a 3x3 64-channel convolution). Default: sized to the sweep's median "
            "measurement; give the side a run's meta.json records to compare ratio_to_ref across commands."
        ),
    )
    compile: bool = field(default=False, metadata=_help("torch.compile the heads' stages.", "--compile"))
    profile: bool = field(default=False, metadata=_help("Write profiler traces and a per-operator table.", "--profile"))
    end_to_end: bool = field(default=True, metadata=_help("Also time the whole model per variant at the largest N."))
    peers: bool = field(
        default=False,
        metadata=_help(
            "Also time the floors and peers of --check (roi_align alone, plain formulation, blender, torch.compile, "
            "torchvision's Mask R-CNN head, old vs new paste) at the largest N; the report shows them.",
            "--peers",
        ),
    )


def make_config(request: SweepRequest | None = None, /, **given: Any) -> SweepConfig:
    """Validate a SweepRequest (with `given` fields over it, by name) into a SweepConfig; every error is a
    BmbenchError naming the bad input. `image_size`, `trunk` and `values` None: the paper's setting (1088x800, r50,
    the axis defaults) on CUDA, the CPU's sized defaults (CPU_IMAGE_SIZE, CPU_TRUNK, CPU_AXIS_DEFAULTS) on the CPU."""
    r = replace(request or SweepRequest(), **given)
    axis = parse_axis(r.vary)
    resolved = resolve_device(r.device)
    on_cpu = resolved.type == "cpu"
    image_size = r.image_size if r.image_size is not None else CPU_IMAGE_SIZE if on_cpu else DEFAULT_IMAGE_SIZE
    trunk = r.trunk if r.trunk is not None else CPU_TRUNK if on_cpu else DEFAULT_TRUNK
    if r.variants is None:
        chosen = [(name, spec) for name in FAMILY_PRESETS for spec in parse_specs(name)]
    else:
        chosen = [(spec.name, spec) for spec in parse_specs(r.variants)]
    if len({label for label, _ in chosen}) != len(chosen):
        raise BmbenchError(f"--variants {r.variants!r} names a variant twice")
    if trunk not in TRUNKS:
        raise BmbenchError(f"--trunk: unknown trunk {trunk!r} (known: {', '.join(TRUNKS)})")
    if not r.budget_s > 0:
        raise BmbenchError(f"--budget-s must be > 0, got {r.budget_s}")
    if r.warmup < 0:
        raise BmbenchError(f"--warmup must be >= 0, got {r.warmup}")
    if r.max_repeats < 1:
        raise BmbenchError(f"--max-repeats must be >= 1, got {r.max_repeats}")
    if not 1 <= r.min_repeats <= r.max_repeats:
        raise BmbenchError(f"--min-repeats must be in 1..--max-repeats ({r.max_repeats}), got {r.min_repeats}")
    if not 0 <= r.min_block_ms <= 1000:
        raise BmbenchError(f"--min-block-ms must be in [0, 1000] (0: one call per repeat), got {r.min_block_ms}")
    if not 0 <= r.precision < 1:
        raise BmbenchError(f"--precision must be in [0, 1) (0.03 is ±3 %), got {r.precision}")
    if r.runs < 1:
        raise BmbenchError(f"--runs must be >= 1, got {r.runs}")
    if r.probe_side is not None and not 8 <= r.probe_side <= 1024:
        raise BmbenchError(f"--probe-side must be in 8..1024 pixels, got {r.probe_side}")
    if r.schedule not in SCHEDULES:
        raise BmbenchError(f"--schedule: unknown schedule {r.schedule!r} (use {' or '.join(SCHEDULES)})")
    threads = default_threads() if r.threads is None else r.threads
    if threads < 1:
        raise BmbenchError(f"--threads must be >= 1, got {threads}")
    if threads > default_threads():
        # oversubscribed threads stall each other at every parallel region: the times would measure contention
        # (85x slower with 1000 threads on 2 cores), not the head
        raise BmbenchError(
            f"--threads {threads}: this process may use {default_threads()} cores; more threads than cores time "
            f"contention, not the head (use at most {default_threads()})"
        )
    resolve_dtype(r.dtype, resolved)
    return SweepConfig(
        variants=tuple(chosen),
        axis=axis,
        values=tuple(parse_values(r.values, axis, device=resolved)),
        instances=tuple(parse_instances(r.instances)),
        image_size=parse_image_size(image_size),
        device=resolved,
        dtype=r.dtype,
        threads=threads,
        budget_s=r.budget_s,
        warmup=r.warmup,
        min_repeats=r.min_repeats,
        max_repeats=r.max_repeats,
        min_block_ms=r.min_block_ms,
        precision=r.precision,
        schedule=r.schedule,
        prime=r.prime,
        runs=r.runs,
        probe_side=r.probe_side,
        seed=r.seed,
        trunk=trunk,
        compile=r.compile,
        profile=r.profile,
        end_to_end=r.end_to_end,
        peers=r.peers,
    )
