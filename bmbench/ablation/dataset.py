"""The suite's dataset: prepared once before any cell (generated, for a synthetic one, and checked), the split its
cells are scored on, the reference masks scored on that split (``references.csv``), and its identity, recorded
with each finished cell and checked before the cell is reused.

Before the cells, ``write_references`` scores the reference masks (bmbench.evaluation.reference_masks: masks built from
the ground truth) on the suite's val split, so that the report can say how much of a mask AP the data leaves to a
head at each resolution.

A cell id hashes the dataset's settings (its root path, for a COCO-format one), not its content: the same id then
stands for other data once the annotations or images change. So each result.json also records the data identity
that the shared-trunk cache keys on (bmbench.training.trunk.data_identity: the annotation file's content, and the
name, size and modification time of every image) for the train and the val split, and a finished cell whose
recorded identity differs from the data's now runs again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from bmbench.ablation.suite import DatasetSpec, SuiteSpec
from bmbench.data.coco import check_split
from bmbench.data.synth import dataset_name, default_dataset_dir, ensure_default_dataset
from bmbench.errors import BmbenchError
from bmbench.evaluation.evaluate import evaluate_reference
from bmbench.evaluation.reference_masks import REFERENCES
from bmbench.results import write_table
from bmbench.schema import REFERENCES_TABLE
from bmbench.training.trunk import data_identity


def prepare_data(suite: SuiteSpec, device: str) -> Path:
    """The suite's dataset folder, generated once for a synthetic one (in $BMBENCH_DATA or results/data), and its
    train and val splits checked as every reader checks them. Runs in the driver before any cell, so that cells
    never race to generate it and a broken file fails once, here, not in every cell after its training."""
    data = suite.dataset
    if data.kind == "synthetic":
        options = {} if data.difficulty is None else {"difficulty": data.difficulty}
        root = ensure_default_dataset(num_images=data.images, size=data.size, seed=data.seed, **options)
        splits: tuple[str, ...] = ("train", "val")
    else:
        root = Path(data.root).expanduser()
        if data.train not in ("train", "train2017"):
            raise BmbenchError(
                f"{suite.path}: dataset.train: training reads the 'train' split only, got {data.train!r}"
            )
        splits = (data.train, data.val)
    for split in splits:
        check_split(root, split)  # the readers' own check, images included: bad files fail before any cell trains
    return root.resolve()


def val_split(dataset: DatasetSpec) -> str:
    """The split a suite's cells are scored on."""
    return "val" if dataset.kind == "synthetic" else dataset.val


def write_references(suite: SuiteSpec, suite_dir: Path, data_dir: Path) -> None:
    """Score every reference mask kind on the suite's val split and write ``references.csv``/``.parquet`` in
    `suite_dir` (one row per kind: ``reference`` and its metrics, as the summary stores them). Malformed ground
    truth raises BmbenchError here, before any cell trains."""
    split = val_split(suite.dataset)
    scoring = {"evaluator": suite.eval.evaluator, "max_dets": suite.eval.max_dets}  # the cells' rules (eval:)
    rows = [
        {"reference": kind, "split": split, **evaluate_reference(kind, data_dir, split=split, **scoring)}
        for kind in REFERENCES
    ]
    write_table(pd.DataFrame(rows), suite_dir / REFERENCES_TABLE.stem)


def train_split(suite: SuiteSpec) -> str:
    """The split a suite's cells train on."""
    return "train" if suite.dataset.kind == "synthetic" else str(suite.dataset.train)


def data_folder(suite: SuiteSpec) -> Path | None:
    """The suite's dataset folder as it is now, without generating anything: a COCO-format root, or the synthetic
    dataset's cache folder when it has been generated (None when not: it is generated, byte for byte the same,
    from the settings the cell id holds)."""
    data = suite.dataset
    if data.kind != "synthetic":
        return Path(str(data.root)).expanduser().resolve()
    options = {} if data.difficulty is None else {"difficulty": data.difficulty}
    name = dataset_name(num_images=int(data.images or 0), size=int(data.size or 0), seed=int(data.seed or 0), **options)
    folder = default_dataset_dir() / name
    return folder.resolve() if (folder / "annotations").is_dir() else None


def suite_data_id(suite: SuiteSpec, data_dir: Path) -> str:
    """One hash of the data identity of the suite's train and val splits under `data_dir`. A split that cannot be
    found raises BmbenchError (bmbench.data.coco.find_split's message)."""
    parts = [f"{split}:{data_identity(data_dir, split)}" for split in (train_split(suite), val_split(suite.dataset))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def current_data_id(suite: SuiteSpec) -> str | None:
    """The suite's data identity now, or None when a synthetic dataset has not been generated yet."""
    folder = data_folder(suite)
    return None if folder is None else suite_data_id(suite, folder)
