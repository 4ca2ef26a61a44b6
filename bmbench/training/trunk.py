"""The shared trunk's cache: the key of everything that changes a trained trunk, where trunks are cached, and the
cached file's format. bmbench.training.train trains the trunk and stores it here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bmbench.data.coco import find_split
from bmbench.errors import BmbenchError

if TYPE_CHECKING:  # bmbench.training.train imports this module
    from bmbench.training.train import TrainConfig

TRUNK_FORMAT = "bmbench-trunk/1"
TRUNK_RECIPE = 1  # bump when the trunk's training changes, so that older cached trunks are not reused


def data_identity(data_dir: Path, split: str = "train") -> str:
    """A content hash of the split's annotation file: what makes a cached trunk valid for a dataset."""
    ann_file, _ = find_split(data_dir, split)
    digest = hashlib.sha256()
    with open(ann_file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def trunk_key(data_id: str, config: TrainConfig, num_classes: int) -> str:
    """Hash of everything that changes the shared trunk."""
    fields = {
        "recipe": TRUNK_RECIPE,
        "data": data_id,
        "trunk": config.trunk,
        "image_size": config.image_size,
        "iters": config.trunk_iters,
        "lr": config.trunk_lr,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "num_classes": num_classes,
        "flip": config.flip,
        "semantic": config.semantic_aux,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def default_trunk_cache() -> Path:
    """Where shared trunks are cached unless told otherwise: results/trunks under the working directory."""
    return Path("results") / "trunks"


def load_trunk(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise BmbenchError(f"{path}: cached trunk is unreadable ({type(err).__name__}); delete it to retrain") from err
    if not isinstance(state, dict) or state.get("format") != TRUNK_FORMAT:
        raise BmbenchError(f"{path}: not a bmbench trunk checkpoint; delete it to retrain")
    return state
