"""The shared trunk's cache: the key of everything that changes a trained trunk, where trunks are cached, and the
cached file's format; and `one_time_trunk`: the shared-trunk protocol's detector trained once, or the finetune
protocol's model pretrained jointly once (of which the backbone and detector are kept), each cached.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bmbench.data.coco import CocoInstanceDataset, find_split
from bmbench.data.synth import synthetic_info
from bmbench.errors import BmbenchError
from bmbench.models.segmenter import InstanceSegmenter
from bmbench.results import EventHook, emit, file_lock, write_torch
from bmbench.training.config import TrainConfig, loop_options
from bmbench.training.init import load_init
from bmbench.training.loop import Batch, optimise
from bmbench.training.steps import detector_step, joint_step, semantic_head_parts
from bmbench.variants import build_segmenter, parse_spec

TRUNK_FORMAT = "bmbench-trunk/1"
TRUNK_RECIPE = 2  # bump when the trunk's training changes, so that older cached trunks are not reused (2: CE semantic)
NO_HEAD = "none"  # finetune's pretrain_head that pretrains without any mask head
STREAM_RECIPE = 1  # bump when bmbench.data.stream draws other scenes for the same settings


def data_identity(data_dir: Path, split: str = "train") -> str:
    """What makes a cached trunk valid for a dataset: a content hash of the split's annotation file, the name, size
    and modification time of every file in its image folder (a replaced image changes it without hashing
    gigabytes), and, for a synthetic dataset, the generator settings its training stream draws from."""
    ann_file, image_dir = find_split(data_dir, split)
    digest = hashlib.sha256()
    with open(ann_file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    for path in sorted(image_dir.iterdir()) if image_dir.is_dir() else []:
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    info = synthetic_info(Path(data_dir))
    if info is not None:
        digest.update(json.dumps({"stream": STREAM_RECIPE, **asdict(info)}, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def trunk_key(data_id: str, config: TrainConfig, num_classes: int) -> str:
    """Hash of everything that changes the one-time training: the shared trunk's (shared-trunk), or the joint
    pretraining's (finetune: its head and seed instead of the cell's seed)."""
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
    if config.protocol == "finetune":
        fields |= {"kind": "pretrain", "head": config.pretrain_head, "seed": config.pretrain_seed}
    if config.stream:
        fields["stream"] = True
    if config.init is not None:
        fields["init"] = config.init
    defaults = TrainConfig()
    # settings added to the key after trunks were first cached: named only when they differ from their default,
    # so that the keys of trunks cached before stay valid
    masked = config.protocol == "finetune" and config.pretrain_head != "none"  # only then has it a mask loss
    for name, short in (
        ("max_mask_positives", "positives"),
        ("semantic_loss", "semantic_loss"),
        ("semantic_level", "semantic_level"),
    ):
        if getattr(config, name) != getattr(defaults, name) and (masked or name != "max_mask_positives"):
            fields[short] = getattr(config, name)
    for name in ("warmup_iters", "weight_decay", "clip_norm"):  # the optimiser's: they change the trunk too
        if getattr(config, name) != getattr(defaults, name):
            fields[name] = getattr(config, name)
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


def _cached(path: Path, train_once: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """The cached record at `path`, made by `train_once` first when absent; a file lock makes concurrent runs make
    it once. Returns (record, whether it was reused)."""
    with file_lock(path.with_suffix(".lock")):
        reused = path.is_file()
        if not reused:
            record = train_once()
            write_torch(path, record)
        return load_trunk(path), reused


def _record(key: str, config: TrainConfig, data_id: str, num_classes: int, model: InstanceSegmenter) -> dict:
    return {
        "format": TRUNK_FORMAT,
        "key": key,
        "config": asdict(config),
        "data_id": data_id,
        "num_classes": num_classes,
        "backbone": model.backbone.state_dict(),
        "detector": model.detector.state_dict(),
    }


def _load_into(model: InstanceSegmenter, state: dict[str, Any], path: Path, reused: bool) -> dict[str, Any]:
    model.backbone.load_state_dict(state["backbone"])
    model.detector.load_state_dict(state["detector"])
    return {"key": state["key"], "path": path, "reused": reused, "log": state["log"], "metrics": state["metrics"]}


def one_time_trunk(
    model: InstanceSegmenter,
    dataset: CocoInstanceDataset,
    *,
    config: TrainConfig,
    data_id: str,
    batches: Iterator[Batch],
    cache: Path,
    device: torch.device,
    log_every: int,
    events: EventHook | None = None,
) -> dict[str, Any]:
    """Load the one-time stage's backbone + detector for this key into `model`, training and caching them first
    when absent. Returns its record (key, path, log, metrics, whether it was reused).

    - shared-trunk: `model`'s own backbone + detector, trained on the detection (and auxiliary semantic) losses.
    - finetune: a whole model with the mask head `config.pretrain_head` (seeded with `config.pretrain_seed`),
      trained jointly; only its backbone and detector are kept, so that every cell then trains a fresh mask head of
      its own spec and no head inherits weights fitted to another spec. With the head "none", the backbone and
      detector train on the detection and semantic losses alone (seeded as well): no mask head at all.
    """
    key = trunk_key(data_id, config, dataset.num_classes)
    pretrain = config.protocol == "finetune"
    stage = "pretrain" if pretrain else "trunk"
    path = Path(cache) / f"{stage}-{config.trunk}-{key}.pt"

    def train_once() -> dict[str, Any]:
        with_head = pretrain and config.pretrain_head != NO_HEAD
        what = f"joint steps with the {config.pretrain_head} head" if with_head else "steps of the detector"
        message = (
            f"{'pretraining once for finetune' if pretrain else 'training the shared trunk once'}: "
            f"{config.trunk_iters} {what}, {config.batch_size} images at {config.image_size} px, cached as {path}"
        )
        emit(events, stage, "note", total=config.trunk_iters, message=message)
        semantic_head, extra = semantic_head_parts(config, dataset.num_classes, device)
        trained, seed = model, config.seed
        if pretrain:
            torch.manual_seed(config.pretrain_seed)
            spec = parse_spec(config.pretrain_head if with_head else "maskrcnn")  # "none": its trunk alone trains
            trained, seed = (
                build_segmenter(spec, trunk=config.trunk, num_classes=dataset.num_classes),
                config.pretrain_seed,
            )
            if config.init is not None:
                load_init(trained.backbone, config.init)
            trained = trained.to(device)
            if with_head:
                step = joint_step(trained, config.image_size, config.max_mask_positives, semantic_head)
                parameters = list(trained.parameters())
            else:
                step = detector_step(trained, config.image_size, semantic_head)
                parameters = trained.trunk_parameters()
        else:
            step, parameters = detector_step(model, config.image_size, semantic_head), model.trunk_parameters()
        trained.train()
        rows, timing = optimise(
            step,
            parameters + extra,
            batches,
            stage=stage,
            iters=config.trunk_iters,
            lr=config.trunk_lr,
            device=device,
            **(loop_options(config) | {"seed": seed}),
            log_every=log_every,
            events=events,
        )
        metrics = {f"{stage}_train_s": timing["seconds"], f"{stage}_images_per_s": timing["images_per_s"]}
        return _record(key, config, data_id, dataset.num_classes, trained) | {"log": rows, "metrics": metrics}

    state, reused = _cached(path, train_once)
    return _load_into(model, state, path, reused)
