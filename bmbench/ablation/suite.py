"""Ablation suites: frozen dataclasses, one strict YAML loader, and the grid's expansion into variant specs.

A suite file (every section but ``grid``/``variants`` may be omitted; the defaults are the dataclass defaults:
DatasetSpec, bmbench.training.config.TrainConfig, EvalSpec, bmbench.bench.options.SweepConfig)::

    name: quick                      # default: the file's stem
    dataset: {kind: synthetic, images: 400, size: 256, seed: 0}
             # or {kind: coco, root: /data/coco, train: train2017, val: val2017}
    train: {protocol: shared-trunk, iters: 300, batch_size: 8, lr: 0.002, trunk: small, image_size: 256,
            trunk_iters: 600}    # any TrainConfig field but seed; image_size default: the dataset's side
    seeds: [0]                       # each cell = one variant x one seed
    grid:                            # each entry expands as a product; invalid combinations are skipped and listed
      - {family: blendmask, K: [1, 4], M: [1, 7], R: [28, 56]}
      - {family: blendmask, K: [4], M: [1, 7], R: [56], seeds: [0, 1, 2]}   # an entry may give its own seeds
    variants: [yolact, centermask, maskrcnn]   # fixed extra variants: presets or spec strings
    plugins: [mypkg.heads]           # modules whose BMBENCH_HEADS families the grid may name (docs/plugins.md)
    eval: {boxes: predicted}         # predicted | oracle
    speed: {instances: [1, 10, 100], image_size: 1088x800, trunk: r50, dtype: fp32, budget_s: 0.25}
                                     # image_size is W x H, as in `bmbench speed --image-size`

Every error is one ``BmbenchError`` that names the file and the key path: ``suites/x.yaml: grid[0].M: ...``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from bmbench.ablation.fields import (
    Errors,
    UniqueKeyLoader,
    describe_value,
    field_int_list,
    field_mapping,
    field_str,
    format_size,
    load_dataclass,
)
from bmbench.bench.options import SUITE_SPEED_FIELDS, SweepConfig
from bmbench.data.scenes import DIFFICULTIES
from bmbench.errors import BmbenchError
from bmbench.evaluation.cocoeval import EVALUATORS, MAX_DETS
from bmbench.evaluation.evaluate import BoxSource
from bmbench.training.config import TrainConfig, image_size_for
from bmbench.variants import FAMILIES, VariantSpec, load_plugins, parse_spec

DatasetKind = Literal["synthetic", "coco"]
DATASET_KINDS: tuple[str, ...] = get_args(DatasetKind)
# the training fields a suite's train: section had first; cell ids always hash them (see train_dict)
SUITE_TRAIN_IDENTITY = ("protocol", "iters", "batch_size", "lr", "trunk", "image_size", "trunk_iters")
DATASET_KEYS = {"synthetic": ("images", "size", "seed", "difficulty"), "coco": ("root", "train", "val")}  # besides kind
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class DatasetSpec:
    """Where the cells train and evaluate: the embedded synthetic shapes, or a COCO-format folder."""

    kind: DatasetKind = "synthetic"  # synthetic | coco
    images: int | None = field(default=400, metadata={"minimum": 2})  # synthetic: images over both splits (1/4 val)
    size: int | None = field(default=256, metadata={"minimum": 64})  # synthetic: image side in pixels
    seed: int | None = 0  # synthetic: generator seed
    difficulty: str | None = field(default=None, metadata={"choices": tuple(DIFFICULTIES)})  # synthetic; None: light
    root: str | None = None  # coco: folder holding annotations/instances_{split}.json and {split}/ images
    train: str | None = None  # coco: training split name, e.g. train2017
    val: str | None = None  # coco: validation split name, e.g. val2017


@dataclass(frozen=True)
class EvalSpec:
    """How AP is measured. A field whose metadata has a "help" is also an option of `bmbench evaluate`, with that
    help (bmbench.cli.options generates them)."""

    # predicted (the detector's boxes) | oracle (ground-truth boxes: masks alone)
    boxes: BoxSource = field(
        default="predicted",
        metadata={"help": f"{' | '.join(get_args(BoxSource))}: the detector's boxes, or ground-truth boxes."},
    )
    evaluator: str = field(  # pycocotools | faster
        default="pycocotools",
        metadata={
            "choices": EVALUATORS,
            "help": f"{' | '.join(EVALUATORS)}: COCOeval implementation (the same numbers; faster needs the faster "
            "extra: pip install 'bmbench\\[faster]').",  # rich markup would eat a bare [faster]
        },
    )
    max_dets: int = field(  # detections per image kept and scored
        default=MAX_DETS,
        metadata={
            "minimum": 1,
            "help": "Detections kept per image, in post-processing and in COCOeval's maxDets (COCO: 100).",
        },
    )
    # learning curve: each cell is also evaluated at these percentages of its schedule (100: the final model)
    curve: tuple[int, ...] = field(default=(25, 50, 100), metadata={"minimum": 1, "sorted": True})


@dataclass(frozen=True)
class GridEntry:
    """One grid entry: a family and, per axis, the values to take the product over (omitted: family default)."""

    family: str  # a key of bmbench.variants.FAMILIES
    axes: tuple[tuple[str, tuple[int, ...]], ...]  # ((axis, values), ...) in the family's field order
    seeds: tuple[int, ...] | None = None  # this entry's seeds (None: the suite's), e.g. more seeds where it counts


@dataclass(frozen=True)
class SuiteSpec:
    """A whole suite as loaded: its sections, plus the grid expanded into variant specs."""

    name: str  # the suite's name: the folder under --out
    path: str  # the file it was loaded from, for messages
    dataset: DatasetSpec  # the data every cell trains and evaluates on
    train: TrainConfig  # training settings shared by every cell (its seed: each cell's own)
    seeds: tuple[int, ...]  # one cell per variant per seed
    grid: tuple[GridEntry, ...]  # the grid entries as written
    variants: tuple[str, ...]  # the fixed extra variants as written
    eval: EvalSpec  # evaluation settings
    speed: SweepConfig  # timing settings (the SUITE_SPEED_FIELDS of it; each cell sets the rest)
    specs: tuple[VariantSpec, ...]  # the grid's valid combinations, then the fixed variants, without duplicates
    spec_seeds: tuple[tuple[int, ...], ...]  # each spec's seeds, in the order of specs
    skipped: tuple[str, ...]  # the grid's invalid combinations, each "spec-ish: reason"
    plugins: tuple[str, ...] = ()  # modules loaded for their head families before the grid was read

    def resolved(self) -> dict[str, Any]:
        """The suite as plain data with every default filled in (for meta.json)."""
        return {
            "name": self.name,
            "path": self.path,
            "dataset": dataset_dict(self.dataset),
            "train": train_dict(self.train),
            "seeds": list(self.seeds),
            "grid": [
                {"family": e.family, **{k: list(v) for k, v in e.axes}} | ({"seeds": list(e.seeds)} if e.seeds else {})
                for e in self.grid
            ],
            "variants": list(self.variants),
            "eval": eval_dict(self.eval),
            "speed": speed_dict(self.speed),
            "specs": [str(spec) for spec in self.specs],
            "skipped": list(self.skipped),
        } | ({"plugins": list(self.plugins)} if self.plugins else {})


def speed_dict(speed: SweepConfig) -> dict[str, Any]:
    """A suite's speed settings as plain data (its SUITE_SPEED_FIELDS), the image size written back as ``WxH``."""
    values = {name: getattr(speed, name) for name in SUITE_SPEED_FIELDS}
    return values | {"instances": list(speed.instances), "image_size": format_size(speed.image_size)}


def train_dict(train: TrainConfig) -> dict[str, Any]:
    """A suite's training settings as plain data: the fields a suite sets (SUITE_TRAIN_IDENTITY), then any other
    field that differs from its default. Cell ids hash this, so adding a field with a default keeps old ids; a
    changed default must come with a new bmbench.__version__ (which the ids hash too), or old cells are reused."""
    return _identity(train, SUITE_TRAIN_IDENTITY, exclude=("seed",))


def eval_dict(spec: EvalSpec) -> dict[str, Any]:
    """A suite's evaluation settings for cell ids (as train_dict: the original field, then non-default ones)."""
    return _identity(spec, ("boxes",)) | ({"curve": list(spec.curve)} if spec.curve != EvalSpec.curve else {})


def dataset_dict(dataset: DatasetSpec) -> dict[str, Any]:
    """A suite's dataset as plain data for cell ids (as train_dict: the original fields, then non-default ones)."""
    return _identity(dataset, ("kind", "images", "size", "seed", "root", "train", "val"))


def _identity(config: Any, always: tuple[str, ...], exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    default = type(config)()
    values = {name: getattr(config, name) for name in always}
    for item in fields(config):
        name = item.name
        if name not in values and name not in exclude and getattr(config, name) != getattr(default, name):
            values[name] = getattr(config, name)
    return values


def _load_dataset(err: Errors, raw: Any) -> DatasetSpec:
    if raw is None:
        return DatasetSpec()
    field_mapping(err, "dataset", raw, tuple(f.name for f in fields(DatasetSpec)))
    kind = field_str(err, "dataset.kind", raw.get("kind", "synthetic"), DATASET_KINDS)
    own = DATASET_KEYS[kind]
    for key in raw:
        if key != "kind" and key not in own:
            raise err(f"dataset.{key}", f"not a key of kind {kind} (its keys: kind, {', '.join(own)})")
    if kind == "synthetic":
        return load_dataclass(err, "dataset", raw, DatasetSpec)
    for key in own:
        if key not in raw:
            raise err(f"dataset.{key}", "missing (kind coco needs root, train and val)")
    none = {"images": None, "size": None, "seed": None}
    return load_dataclass(err, "dataset", raw, DatasetSpec, base=DatasetSpec(kind="coco", **none))


def _load_train(err: Errors, raw: Any, dataset: DatasetSpec) -> TrainConfig:
    # The image size follows the dataset: a synthetic one's side (rounded up to x32); a COCO one's, when training
    # reads its images (TrainConfig.image_size None).
    base = TrainConfig(image_size=None if dataset.size is None else image_size_for(dataset.size))
    keys = tuple(f.name for f in fields(TrainConfig) if f.name != "seed")  # seeds: come from the suite's seeds
    return load_dataclass(err, "train", raw, TrainConfig, keys=keys, base=base)


def _load_grid_entry(err: Errors, key: str, raw: Any) -> GridEntry:
    if not isinstance(raw, dict):
        raise err(key, f"expected a mapping with a family and K/M/R/S lists, got {describe_value(raw)}")
    if "family" not in raw:
        raise err(f"{key}.family", "missing")
    family = raw["family"]
    if not isinstance(family, str) or family not in FAMILIES:
        load_plugins()  # an installed plugin's family is found by its entry point
    if not isinstance(family, str) or family not in FAMILIES:
        raise err(
            f"{key}.family",
            f"unknown family {family!r} (known: {', '.join(FAMILIES)}); a plugin's family needs its package "
            "installed (a bmbench.heads entry point) or its module in the suite's plugins: list",
        )
    own = tuple(FAMILIES[family].defaults)
    axes = []
    for axis in raw:
        if axis not in ("family", "seeds") and axis not in own:
            raise err(f"{key}.{axis}", f"not a field of family {family} (its fields: {', '.join(own)})")
    for axis in own:
        if axis in raw:
            axes.append((axis, field_int_list(err, f"{key}.{axis}", raw[axis], minimum=1)))
    seeds = field_int_list(err, f"{key}.seeds", raw["seeds"]) if "seeds" in raw else None
    return GridEntry(family=family, axes=tuple(axes), seeds=seeds)


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
    sections = ("name", "dataset", "train", "seeds", "grid", "variants", "eval", "speed", "plugins")
    field_mapping(err, "", raw, sections)
    plugins = _load_plugins(err, raw.get("plugins", []))

    name = field_str(err, "name", raw.get("name", path.stem))
    if not _NAME_RE.match(name):
        raise err("name", f"expected letters, digits, '.', '_' or '-' (it names a folder), got {name!r}")

    grid_raw = raw.get("grid", [])
    if not isinstance(grid_raw, list):
        raise err("grid", f"expected a list of entries, got {describe_value(grid_raw)}")
    if "grid" in raw and not grid_raw:
        raise err("grid", "empty grid (give at least one entry, or leave grid out and list variants)")
    grid = tuple(_load_grid_entry(err, f"grid[{i}]", entry) for i, entry in enumerate(grid_raw))

    variants_raw = raw.get("variants", [])
    if not isinstance(variants_raw, list) or not all(isinstance(v, str) for v in variants_raw):
        raise err("variants", f"expected a list of presets or spec strings, got {describe_value(variants_raw)}")
    fixed = []
    for i, text in enumerate(variants_raw):
        try:
            fixed.append(parse_spec(text))
        except BmbenchError as why:
            raise err(f"variants[{i}]", str(why)) from None

    seeds = field_int_list(err, "seeds", raw.get("seeds", [0]))
    chosen: dict[VariantSpec, list[int]] = {}  # spec -> its seeds; a spec in two entries runs each seed once
    skipped: list[str] = []
    for i, entry in enumerate(grid):
        valid, invalid = expand_entry(entry)
        if not valid:
            reason = invalid[0].rsplit(": ", 1)[-1]
            raise err(f"grid[{i}]", f"no valid combination ({reason})")
        for spec in valid:
            chosen.setdefault(spec, []).extend(s for s in entry.seeds or seeds if s not in chosen.get(spec, []))
        skipped += invalid
    for spec in fixed:  # a fixed variant that the grid already holds runs once
        chosen.setdefault(spec, []).extend(s for s in seeds if s not in chosen.get(spec, []))
    if not chosen:
        raise err("grid", "empty grid: no variants to run (give grid entries or variants)")

    dataset = _load_dataset(err, raw.get("dataset"))
    return SuiteSpec(
        name=name,
        path=str(path),
        dataset=dataset,
        train=_load_train(err, raw.get("train"), dataset),
        seeds=seeds,
        grid=grid,
        variants=tuple(variants_raw),
        eval=load_dataclass(err, "eval", raw.get("eval"), EvalSpec),
        speed=load_dataclass(err, "speed", raw.get("speed"), SweepConfig, keys=SUITE_SPEED_FIELDS),
        specs=tuple(chosen),
        spec_seeds=tuple(tuple(sorted(values)) for values in chosen.values()),
        skipped=tuple(skipped),
        plugins=plugins,
    )


def _load_plugins(err: Errors, raw: Any) -> tuple[str, ...]:
    """The suite's plugins: modules, each loaded now (its families registered) so that the grid may name them."""
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise err("plugins", f"expected a list of module names, got {describe_value(raw)}")
    for i, module in enumerate(raw):
        try:
            load_plugins([module])
        except BmbenchError as why:
            raise err(f"plugins[{i}]", str(why)) from None
    return tuple(raw)
