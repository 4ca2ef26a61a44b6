"""A cell: a suite's unit of work (variant x seed), its id (a hash of its resolved config), the suite's cells in
order, and a finished cell's record on disk (``result.json``), read back here. Which cells run is planned in
bmbench.ablation.plan; executors (bmbench.ablation.executors) run them into records, and the driver
(bmbench.ablation.driver) writes them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bmbench
from bmbench.ablation.suite import DatasetSpec, EvalSpec, SuiteSpec, dataset_dict, eval_dict, speed_dict, train_dict
from bmbench.bench.options import SweepConfig
from bmbench.training.config import TrainConfig
from bmbench.variants import VariantSpec, family_origin

RESULT_FILE = "result.json"
DATA_ID_KEY = "data_id"  # result.json: the identity of the data the cell was measured on
PREVIOUS_SUFFIX = ".previous"  # .<cell-id>.previous/: a finished folder kept until its rerun has finished
CELL_ID_LENGTH = 12  # hex digits of the config hash: 48 bits, no collision in any grid we would run


@dataclass(frozen=True)
class Cell:
    """One variant with one seed under a suite's settings: the unit that trains, evaluates and is timed."""

    suite: str  # the suite's name (not part of the id: the same cell in two suites has the same id)
    spec: VariantSpec  # the mask head
    seed: int  # seeds the model's initialisation and the data order
    dataset: DatasetSpec  # what it trains and evaluates on
    train: TrainConfig  # how it trains (the suite's; `seed` below replaces its seed)
    eval: EvalSpec  # how AP is measured
    speed: SweepConfig  # how its mask branch is timed (the suite's speed settings)

    def config(self) -> dict[str, Any]:
        """The resolved config that the id hashes: everything that changes the cell's results but the data's
        content, which the dataset's root path does not pin: its identity (bmbench.ablation.dataset) is recorded
        in result.json and checked whenever the cell would be reused."""
        return {
            "bmbench": bmbench.__version__,
            "spec": str(self.spec),
            "seed": self.seed,
            "dataset": dataset_dict(self.dataset),
            "train": train_dict(self.train),
            "eval": eval_dict(self.eval),
            "speed": speed_dict(self.speed),
        } | _plugin_identity(self.spec)

    @property
    def cell_id(self) -> str:
        text = json.dumps(self.config(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:CELL_ID_LENGTH]


def _plugin_identity(spec: VariantSpec) -> dict[str, Any]:
    """A plugin family's package, version and source digest, for the cell's config (so its id): a changed plugin
    makes new cells instead of reusing old ones. Built-in families add nothing (their ids stay as they were)."""
    plugin = family_origin(spec.family).identity()
    return {"plugin": plugin} if plugin is not None else {}


def expand_cells(suite: SuiteSpec) -> list[Cell]:
    """Every variant of the suite (grid first, then fixed variants) with each of its seeds, in that order."""
    return [
        Cell(suite.name, spec, seed, suite.dataset, suite.train, suite.eval, suite.speed)
        for spec, seeds in zip(suite.specs, suite.spec_seeds, strict=True)
        for seed in seeds
    ]


def previous_dir(cell_dir: Path) -> Path:
    """Where a finished cell's folder waits while the cell runs again (bmbench.ablation.previous)."""
    return cell_dir.parent / f".{cell_dir.name}{PREVIOUS_SUFFIX}"


def read_result(cell_dir: Path) -> dict[str, Any] | None:
    """A cell's result.json, else the one of its finished folder set aside while it runs again (so that a rerun
    cut short keeps its old result), or None when neither is there (or readable, which atomic writes should make
    impossible)."""
    for folder in (cell_dir, previous_dir(cell_dir)):
        try:
            return json.loads((folder / RESULT_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
    return None
