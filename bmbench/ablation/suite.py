"""Ablation suites: frozen dataclasses, one strict YAML loader, and the grid's expansion into variant specs.

A suite file (every section but ``grid``/``variants`` may be omitted; the defaults are the dataclass defaults)::

    name: quick                      # default: the file's stem
    dataset: {kind: synthetic, images: 400, size: 256, seed: 0}
             # or {kind: coco, root: /data/coco, train: train2017, val: val2017}
    train: {protocol: shared-trunk, iters: 300, batch_size: 8, lr: 0.002, trunk: small, image_size: 256,
            trunk_iters: 600}    # image_size default: the synthetic size (rounded up to x32), else 256
    seeds: [0]
    grid:                            # each entry expands as a product; invalid combinations are skipped and listed
      - {family: blendmask, K: [1, 4], M: [1, 7], R: [28, 56]}
    variants: [yolact, centermask, maskrcnn]   # fixed extra variants: presets or spec strings
    eval: {boxes: predicted}         # predicted | oracle
    speed: {instances: [1, 10, 100], image_size: 1088x800, trunk: r50, dtype: fp32, budget_s: 0.25}
                                     # image_size is W x H, as in `bmbench speed --image-size`

Every error is one ``BmbenchError`` that names the file and the key path: ``suites/x.yaml: grid[0].M: ...``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from bmbench.ablation.fields import (
    Errors,
    UniqueKeyLoader,
    describe,
    field_int,
    field_int_list,
    field_mapping,
    field_positive,
    field_size,
    field_str,
    format_size,
)
from bmbench.bench.options import DEFAULT_BUDGET_S
from bmbench.device import DTYPES
from bmbench.errors import BmbenchError
from bmbench.models.backbone import TRUNKS
from bmbench.training.config import TrainConfig
from bmbench.variants import FAMILIES, VariantSpec, parse_spec

PROTOCOLS = ("shared-trunk", "joint")
BOX_SOURCES = ("predicted", "oracle")
DATASET_KINDS = ("synthetic", "coco")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class DatasetSpec:
    """Where the cells train and evaluate: the embedded synthetic shapes, or a COCO-format folder."""

    kind: str = "synthetic"  # synthetic | coco
    images: int | None = 400  # synthetic: images over both splits (a quarter go to val)
    size: int | None = 256  # synthetic: image side in pixels
    seed: int | None = 0  # synthetic: generator seed
    root: str | None = None  # coco: folder holding annotations/instances_{split}.json and {split}/ images
    train: str | None = None  # coco: training split name, e.g. train2017
    val: str | None = None  # coco: validation split name, e.g. val2017


@dataclass(frozen=True)
class TrainSpec:
    """How each cell's model is trained before it is evaluated (defaults: bmbench.training.train.TrainConfig's)."""

    protocol: str = TrainConfig.protocol  # shared-trunk (trunk trained once, then each mask head) | joint (end to end)
    iters: int = TrainConfig.iters  # optimiser steps per cell (shared-trunk: of the mask head)
    batch_size: int = TrainConfig.batch_size  # images per step
    lr: float = TrainConfig.lr  # AdamW peak learning rate (the shared trunk's too)
    trunk: str = TrainConfig.trunk  # backbone + FPN + detector widths, a key of bmbench.models.backbone.TRUNKS
    image_size: int = TrainConfig.image_size  # longer image side after resizing, a multiple of 32 (omitted: the
    # synthetic dataset's size rounded up to a multiple of 32, else 256)
    trunk_iters: int = TrainConfig.trunk_iters  # shared-trunk: steps of the trunk's one-time training


@dataclass(frozen=True)
class EvalSpec:
    """How AP is measured."""

    boxes: str = "predicted"  # predicted (the detector's boxes) | oracle (ground-truth boxes: masks alone)


@dataclass(frozen=True)
class SpeedSpec:
    """How the mask branch is timed (features of the right shapes, N boxes; the backbone is not run)."""

    instances: tuple[int, ...] = (1, 10, 100)  # N values; each becomes a summary column mask_ms_n{N}
    image_size: tuple[int, int] = (800, 1088)  # H, W of the timed image (written WxH: 1088x800)
    trunk: str = "r50"  # FPN/tower widths the timed mask head is built at (r50: the paper's)
    dtype: str = "fp32"  # fp32 | fp16 (CUDA only) | bf16
    budget_s: float = DEFAULT_BUDGET_S  # time budget of each point's timed repeats


@dataclass(frozen=True)
class GridEntry:
    """One grid entry: a family and, per axis, the values to take the product over (omitted: family default)."""

    family: str  # a key of bmbench.variants.FAMILIES
    axes: tuple[tuple[str, tuple[int, ...]], ...]  # ((axis, values), ...) in the family's field order


@dataclass(frozen=True)
class SuiteSpec:
    """A whole suite as loaded: its sections, plus the grid expanded into variant specs."""

    name: str  # the suite's name: the folder under --out
    path: str  # the file it was loaded from, for messages
    dataset: DatasetSpec  # the data every cell trains and evaluates on
    train: TrainSpec  # training settings shared by every cell
    seeds: tuple[int, ...]  # one cell per variant per seed
    grid: tuple[GridEntry, ...]  # the grid entries as written
    variants: tuple[str, ...]  # the fixed extra variants as written
    eval: EvalSpec  # evaluation settings
    speed: SpeedSpec  # timing settings
    specs: tuple[VariantSpec, ...]  # the grid's valid combinations, then the fixed variants, without duplicates
    skipped: tuple[str, ...]  # the grid's invalid combinations, each "spec-ish: reason"

    def resolved(self) -> dict[str, Any]:
        """The suite as plain data with every default filled in (for meta.json)."""
        return {
            "name": self.name,
            "path": self.path,
            "dataset": asdict(self.dataset),
            "train": asdict(self.train),
            "seeds": list(self.seeds),
            "grid": [{"family": e.family, **{k: list(v) for k, v in e.axes}} for e in self.grid],
            "variants": list(self.variants),
            "eval": asdict(self.eval),
            "speed": speed_dict(self.speed),
            "specs": [str(spec) for spec in self.specs],
            "skipped": list(self.skipped),
        }


def speed_dict(speed: SpeedSpec) -> dict[str, Any]:
    """A SpeedSpec as plain data, the image size written back as ``WxH``."""
    return asdict(speed) | {"instances": list(speed.instances), "image_size": format_size(speed.image_size)}


def _load_dataset(err: Errors, raw: Any) -> DatasetSpec:
    if raw is None:
        return DatasetSpec()
    field_mapping(err, "dataset", raw, ("kind", "images", "size", "seed", "root", "train", "val"))
    kind = field_str(err, "dataset.kind", raw.get("kind", "synthetic"), DATASET_KINDS)
    own = ("images", "size", "seed") if kind == "synthetic" else ("root", "train", "val")
    for key in raw:
        if key != "kind" and key not in own:
            raise err(f"dataset.{key}", f"not a key of kind {kind} (its keys: kind, {', '.join(own)})")
    if kind == "synthetic":
        default = DatasetSpec()
        return DatasetSpec(
            kind=kind,
            images=field_int(err, "dataset.images", raw.get("images", default.images), minimum=2),
            size=field_int(err, "dataset.size", raw.get("size", default.size), minimum=64),
            seed=field_int(err, "dataset.seed", raw.get("seed", default.seed)),
        )
    for key in own:
        if key not in raw:
            raise err(f"dataset.{key}", "missing (kind coco needs root, train and val)")
    return DatasetSpec(
        kind=kind,
        images=None,
        size=None,
        seed=None,
        root=field_str(err, "dataset.root", raw["root"]),
        train=field_str(err, "dataset.train", raw["train"]),
        val=field_str(err, "dataset.val", raw["val"]),
    )


def _load_train(err: Errors, raw: Any, dataset: DatasetSpec) -> TrainSpec:
    default = TrainSpec()
    raw = {} if raw is None else field_mapping(err, "train", raw, tuple(f.name for f in fields(TrainSpec)))
    image_size = default.image_size if dataset.size is None else -(-dataset.size // 32) * 32
    image_size = field_int(err, "train.image_size", raw.get("image_size", image_size), minimum=32)
    if image_size % 32:
        raise err("train.image_size", f"must be a multiple of 32, got {image_size}")
    return TrainSpec(
        protocol=field_str(err, "train.protocol", raw.get("protocol", default.protocol), PROTOCOLS),
        iters=field_int(err, "train.iters", raw.get("iters", default.iters), minimum=1),
        batch_size=field_int(err, "train.batch_size", raw.get("batch_size", default.batch_size), minimum=1),
        lr=field_positive(err, "train.lr", raw.get("lr", default.lr)),
        trunk=field_str(err, "train.trunk", raw.get("trunk", default.trunk), tuple(TRUNKS)),
        image_size=image_size,
        trunk_iters=field_int(err, "train.trunk_iters", raw.get("trunk_iters", default.trunk_iters), minimum=1),
    )


def _load_eval(err: Errors, raw: Any) -> EvalSpec:
    if raw is None:
        return EvalSpec()
    field_mapping(err, "eval", raw, ("boxes",))
    return EvalSpec(boxes=field_str(err, "eval.boxes", raw.get("boxes", EvalSpec.boxes), BOX_SOURCES))


def _load_speed(err: Errors, raw: Any) -> SpeedSpec:
    if raw is None:
        return SpeedSpec()
    default = SpeedSpec()
    field_mapping(err, "speed", raw, tuple(f.name for f in fields(SpeedSpec)))
    instances = field_int_list(err, "speed.instances", raw.get("instances", list(default.instances)), minimum=1)
    return SpeedSpec(
        instances=tuple(sorted(instances)),
        image_size=field_size(err, "speed.image_size", raw.get("image_size", format_size(default.image_size))),
        trunk=field_str(err, "speed.trunk", raw.get("trunk", default.trunk), tuple(TRUNKS)),
        dtype=field_str(err, "speed.dtype", raw.get("dtype", default.dtype), tuple(DTYPES)),
        budget_s=field_positive(err, "speed.budget_s", raw.get("budget_s", default.budget_s)),
    )


def _load_grid_entry(err: Errors, key: str, raw: Any) -> GridEntry:
    if not isinstance(raw, dict):
        raise err(key, f"expected a mapping with a family and K/M/R/S lists, got {describe(raw)}")
    if "family" not in raw:
        raise err(f"{key}.family", "missing")
    family = raw["family"]
    if not isinstance(family, str) or family not in FAMILIES:
        raise err(f"{key}.family", f"unknown family {family!r} (known: {', '.join(FAMILIES)})")
    own = tuple(FAMILIES[family].defaults)
    axes = []
    for axis in raw:
        if axis != "family" and axis not in own:
            raise err(f"{key}.{axis}", f"not a field of family {family} (its fields: {', '.join(own)})")
    for axis in own:
        if axis in raw:
            axes.append((axis, field_int_list(err, f"{key}.{axis}", raw[axis], minimum=1)))
    return GridEntry(family=family, axes=tuple(axes))


def expand_entry(entry: GridEntry) -> tuple[list[VariantSpec], list[str]]:
    """The product of an entry's axes: (valid specs in product order, invalid combinations with their reason)."""
    defaults = dict(FAMILIES[entry.family].defaults)
    names = [axis for axis, _ in entry.axes]
    specs, skipped = [], []
    for values in itertools.product(*(values for _, values in entry.axes)):
        params = defaults | dict(zip(names, values, strict=True))
        try:
            specs.append(VariantSpec(entry.family, **params))
        except BmbenchError as why:
            text = ",".join(f"{k}={v}" for k, v in params.items())
            skipped.append(f"{entry.family}:{text}: {why}")
    return specs, skipped


def load_suite(path: Path | str) -> SuiteSpec:
    """Load and validate a suite file; any problem raises one BmbenchError naming the file and the key path."""
    path = Path(path)
    err = Errors(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise err("", "no such file") from None
    except OSError as why:
        raise err("", f"cannot read: {why.strerror or why}") from None
    try:
        raw = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as why:
        mark = getattr(why, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(why, "problem", None) or str(why).splitlines()[0]
        raise err("", f"malformed YAML: {where}{problem}") from None
    if raw is None:
        raise err("", "empty file (a suite needs at least a grid or variants)")
    sections = ("name", "dataset", "train", "seeds", "grid", "variants", "eval", "speed")
    field_mapping(err, "", raw, sections)

    name = field_str(err, "name", raw.get("name", path.stem))
    if not _NAME_RE.match(name):
        raise err("name", f"expected letters, digits, '.', '_' or '-' (it names a folder), got {name!r}")

    grid_raw = raw.get("grid", [])
    if not isinstance(grid_raw, list):
        raise err("grid", f"expected a list of entries, got {describe(grid_raw)}")
    if "grid" in raw and not grid_raw:
        raise err("grid", "empty grid (give at least one entry, or leave grid out and list variants)")
    grid = tuple(_load_grid_entry(err, f"grid[{i}]", entry) for i, entry in enumerate(grid_raw))

    variants_raw = raw.get("variants", [])
    if not isinstance(variants_raw, list) or not all(isinstance(v, str) for v in variants_raw):
        raise err("variants", f"expected a list of presets or spec strings, got {describe(variants_raw)}")
    fixed = []
    for i, text in enumerate(variants_raw):
        try:
            fixed.append(parse_spec(text))
        except BmbenchError as why:
            raise err(f"variants[{i}]", str(why)) from None

    specs: list[VariantSpec] = []
    skipped: list[str] = []
    for i, entry in enumerate(grid):
        valid, invalid = expand_entry(entry)
        if not valid:
            reason = invalid[0].rsplit(": ", 1)[-1]
            raise err(f"grid[{i}]", f"no valid combination ({reason})")
        specs += valid
        skipped += invalid
    specs += fixed
    specs = list(dict.fromkeys(specs))  # a fixed variant that the grid already holds runs once
    if not specs:
        raise err("grid", "empty grid: no variants to run (give grid entries or variants)")

    dataset = _load_dataset(err, raw.get("dataset"))
    return SuiteSpec(
        name=name,
        path=str(path),
        dataset=dataset,
        train=_load_train(err, raw.get("train"), dataset),
        seeds=field_int_list(err, "seeds", raw.get("seeds", [0])),
        grid=grid,
        variants=tuple(variants_raw),
        eval=_load_eval(err, raw.get("eval")),
        speed=_load_speed(err, raw.get("speed")),
        specs=tuple(specs),
        skipped=tuple(skipped),
    )
