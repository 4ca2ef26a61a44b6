"""The identity of a suite's data, recorded with each finished cell and checked before the cell is reused.

A cell id hashes the dataset's settings (its root path, for a COCO-format one), not its content: the same id then
stands for other data once the annotations or images change. So each result.json also records the data identity
that the shared-trunk cache keys on (bmbench.training.trunk.data_identity: the annotation file's content, and the
name, size and modification time of every image) for the train and the val split, and a finished cell whose
recorded identity differs from the data's now runs again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from bmbench.ablation.runner import val_split
from bmbench.ablation.suite import SuiteSpec
from bmbench.data.synth import dataset_name, default_dataset_dir
from bmbench.training.trunk import data_identity


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
