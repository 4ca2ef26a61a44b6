"""The shared trunk's cache: the key of everything that changes a trained trunk, where trunks are cached, and the
cached file's format, and `shared_trunk`, which trains a trunk once and caches it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bmbench.data.coco import CocoInstanceDataset, find_split
from bmbench.errors import BmbenchError
from bmbench.models.segmenter import InstanceSegmenter
from bmbench.results import atomic_path
from bmbench.training.config import TrainConfig, _loop_options
from bmbench.training.loop import optimise, training_batches
from bmbench.training.steps import _semantic_head, detector_step

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


def shared_trunk(
    model: InstanceSegmenter,
    dataset: CocoInstanceDataset,
    *,
    config: TrainConfig,
    data_id: str,
    cache: Path,
    device: torch.device,
    log_every: int,
    progress: bool,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Load the cached trunk for this key into `model`, training and caching it first when absent. A file lock
    makes concurrent runs train it once. Returns the trunk's record (key, log, metrics, whether it was reused)."""
    key = trunk_key(data_id, config, dataset.num_classes)
    path = Path(cache) / f"trunk-{config.trunk}-{key}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        reused = path.is_file()
        if not reused:
            model.train()
            batches = training_batches(dataset, batch_size=config.batch_size, seed=config.seed)
            semantic_head, extra = _semantic_head(config, dataset.num_classes, device)
            step = detector_step(model, config.image_size, semantic_head)
            rows, timing = optimise(
                step,
                model.trunk_parameters() + extra,
                batches,
                stage="trunk",
                iters=config.trunk_iters,
                lr=config.trunk_lr,
                device=device,
                **_loop_options(config),
                log_every=log_every,
                progress=progress,
                on_log=on_log,
            )
            record = {
                "format": TRUNK_FORMAT,
                "key": key,
                "config": asdict(config),
                "data_id": data_id,
                "num_classes": dataset.num_classes,
                "backbone": model.backbone.state_dict(),
                "detector": model.detector.state_dict(),
                "log": rows,
                "metrics": {"trunk_train_s": timing["seconds"], "trunk_images_per_s": timing["images_per_s"]},
            }
            with atomic_path(path) as tmp:
                torch.save(record, tmp)
        state = load_trunk(path)
    model.backbone.load_state_dict(state["backbone"])
    model.detector.load_state_dict(state["detector"])
    return {"key": key, "path": path, "reused": reused, "log": state["log"], "metrics": state["metrics"]}
