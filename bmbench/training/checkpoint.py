"""The checkpoint format that bmbench.training.train writes and evaluation reads: the format tag, loading with
checks, and rebuilding the model it describes."""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bmbench.data.coco import CocoInstanceDataset
from bmbench.errors import BmbenchError
from bmbench.models.segmenter import InstanceSegmenter
from bmbench.results import write_torch
from bmbench.training.config import TrainConfig
from bmbench.variants import VariantSpec, build_segmenter, parse_spec

CHECKPOINT_FORMAT = "bmbench-checkpoint/1"
CHECKPOINT_FILE = "checkpoint.pt"
_CHECKPOINT_KEYS = ("spec", "trunk", "num_classes", "label_to_category_id", "config", "model")


def snapshot_path(out: Path, step: int) -> Path:
    """Where `train` saves the model at an intermediate `step` (for learning curves)."""
    return Path(out) / f"checkpoint-{step}.pt"


def save_checkpoint(
    path: Path,
    *,
    spec: VariantSpec,
    config: TrainConfig,
    dataset: CocoInstanceDataset,
    data_id: str,
    model: InstanceSegmenter,
    metrics: dict[str, Any],
) -> None:
    """Write the checkpoint of a trained `model` atomically: its spec, config, classes, data identity, weights. A full
    or read-only disk raises DiskError and leaves no partial file."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "spec": str(spec),
        "trunk": config.trunk,
        "num_classes": dataset.num_classes,
        "label_to_category_id": list(dataset.label_to_category_id),
        "class_names": list(dataset.class_names),
        "config": asdict(config),
        "data_id": data_id,
        "model": model.state_dict(),
        "metrics": metrics,
    }
    write_torch(path, checkpoint)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by bmbench.training.train; a missing, unreadable or foreign file raises BmbenchError."""
    path = Path(path)
    if not path.is_file():
        raise BmbenchError(f"checkpoint {path} not found")
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle before refusing it: one line is ours
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever torch.load raises, the file is not a usable checkpoint
        raise BmbenchError(f"checkpoint {path} is corrupted or not a torch file ({type(err).__name__})") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise BmbenchError(f"{path} is not a bmbench checkpoint (expected format {CHECKPOINT_FORMAT})")
    missing = [key for key in _CHECKPOINT_KEYS if key not in state]
    if missing:
        raise BmbenchError(f"checkpoint {path} lacks {', '.join(missing)}")
    _check_finite(state["model"], path)
    return state


def _check_finite(weights: Any, path: Path) -> None:
    """Refuse weights holding NaN or infinities (a diverged training): they would score AP 0 as if measured."""
    if not isinstance(weights, dict):
        raise BmbenchError(f"checkpoint {path}: its model weights are not a state dict")
    tensors = {name: value for name, value in weights.items() if torch.is_tensor(value) and value.is_floating_point()}
    bad = [name for name, value in tensors.items() if not bool(torch.isfinite(value).all())]
    if bad:
        raise BmbenchError(
            f"checkpoint {path}: {len(bad)} of its {len(tensors)} weight tensors hold NaN or infinite values "
            f"(first: {bad[0]}); the training diverged, so it cannot be scored (retrain, e.g. with a lower --lr)"
        )


def model_from_checkpoint(state: dict[str, Any], path: Path) -> InstanceSegmenter:
    """Rebuild the model a checkpoint describes and load its weights."""
    model = build_segmenter(parse_spec(state["spec"]), trunk=state["trunk"], num_classes=state["num_classes"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise BmbenchError(f"checkpoint {path}: weights do not fit {state['spec']} ({first})") from err
    return model
