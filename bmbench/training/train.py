"""Training for AP: the `joint` and `shared-trunk` protocols, seeded (deterministic on the CPU), with checkpoints.

- `joint`: backbone, FPN, detector and mask head train together on FCOS + mask losses, as the papers do.
- `shared-trunk`: backbone + FPN + detector train once on the FCOS losses; the result is cached under a key of
  everything that changes it (dataset, trunk, image size, steps, lr, batch, seed) and reused by every variant.
  Then only the variant's mask head trains, on the frozen trunk's features (trunk in eval mode, no gradients).

Both protocols add, by default, an auxiliary semantic-segmentation loss on P3 (per-class foreground at stride 8,
through a small training-only head that is then discarded), as BlendMask and YOLACT train with one. Trained from
scratch on a CPU budget, the detection losses alone leave P3 with little pixel-level shape information, and the
mask heads then learn little more than an average shape on the frozen features.

Letters: B images per step, as in bmbench.models.losses.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bmbench.data.coco import CocoInstanceDataset
from bmbench.data.stream import dataset_stream
from bmbench.device import resolve_device
from bmbench.errors import BmbenchError
from bmbench.results import EventHook, check_out_dir, emit, run_metadata, write_json, write_table
from bmbench.training.checkpoint import CHECKPOINT_FILE, save_checkpoint, snapshot_path
from bmbench.training.config import TrainConfig, check_config, loop_options
from bmbench.training.init import check_init, load_init
from bmbench.training.loop import Batch, optimise, training_batches
from bmbench.training.steps import joint_step, mask_step, semantic_head_parts
from bmbench.training.trunk import data_identity, default_trunk_cache, one_time_trunk
from bmbench.variants import VariantSpec, build_segmenter, parse_spec

LOG_STEM = "train_log"
PRETRAIN_STREAM_OFFSET = 10_000  # finetune: the pretraining draws stream seeds from here, apart from the cells'


@dataclass
class TrainResult:
    """What `train` produced."""

    checkpoint: Path  # the checkpoint file
    log: Path  # the train log table (CSV; a Parquet twin sits beside it)
    metrics: dict[str, Any] = field(default_factory=dict)  # timings, throughput, final losses, trunk cache use


def train(
    spec: VariantSpec | str,
    config: TrainConfig | None = None,
    *,
    data_dir: Path | None = None,
    out: Path,
    device: str = "auto",
    trunk_cache: Path | None = None,
    log_every: int = 10,
    snapshots: tuple[int, ...] = (),
    events: EventHook | None = None,
) -> TrainResult:
    """Train `spec` as `config` says on the train split of `data_dir` (default: the synthetic default dataset) and
    write ``out/checkpoint.pt``, ``out/train_log.csv`` (+ .parquet) and ``out/meta.json``.

    `config` None: TrainConfig's defaults. Every input is checked before anything is written; bad input raises
    BmbenchError. Returns the checkpoint and log paths and metrics: ``train_s``, ``train_images_per_s`` (the
    mask-head stage under shared-trunk), ``trunk_reused``, ``trunk_train_s``, ``trunk_images_per_s``,
    ``final_loss_*``. `events` receives each stage's progress (bmbench.results.Event), notes before one-time
    stages, and each log row (every `log_every` steps). At each step in `snapshots` (but the last) the model is
    also saved as ``out/checkpoint-<step>.pt`` (snapshot_path), for learning curves.
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    config = TrainConfig() if config is None else config
    check_config(config)
    if not isinstance(log_every, int) or log_every < 1:
        raise BmbenchError(f"log_every must be a positive integer, got {log_every!r}")
    check_init(config.init)
    torch_device = resolve_device(device)
    out = check_out_dir(Path(out))
    if trunk_cache is not None:
        check_out_dir(Path(trunk_cache), "--trunk-cache")
    if data_dir is None:
        from bmbench.data.synth import ensure_default_dataset

        data_dir = ensure_default_dataset()
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise BmbenchError(f"data directory {data_dir} does not exist")
    dataset = CocoInstanceDataset(data_dir, "train", image_size=config.image_size, flip=config.flip, seed=config.seed)
    config = config.resolved(image_size=dataset.image_size)
    data_id = data_identity(data_dir)

    if any(not 1 <= it <= config.iters for it in snapshots):
        raise BmbenchError(f"snapshot steps must lie in 1..{config.iters}, got {list(snapshots)}")
    torch.manual_seed(config.seed)  # the trunk is built first, so its initialisation is the same for every variant
    model = build_segmenter(spec, trunk=config.trunk, num_classes=dataset.num_classes).to(torch_device)
    log: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    if config.init is not None:  # before the one-time stage: the trunk and the pretraining start from it too
        report = load_init(model.backbone, config.init)
        emit(events, "init", "note", message=report.summary())
        metrics["init"] = asdict(report)

    def batches(seed: int) -> Iterator[Batch]:  # a synthetic dataset's stream of new scenes, else its train split
        stream = dataset_stream(data_dir, batch_size=config.batch_size, image_size=config.image_size, seed=seed)
        if config.stream and stream is not None:
            return stream
        return training_batches(dataset, batch_size=config.batch_size, seed=seed)

    one_time = {"device": torch_device, "log_every": log_every, "events": events}
    cache = default_trunk_cache() if trunk_cache is None else Path(trunk_cache)
    if config.protocol in ("shared-trunk", "finetune"):
        # the one-time stage's scenes: the trunk's own seed (shared-trunk), the pretraining's (finetune), kept
        # apart from every cell's (seed + 1) by PRETRAIN_STREAM_OFFSET
        first = config.seed if config.protocol == "shared-trunk" else PRETRAIN_STREAM_OFFSET + config.pretrain_seed
        record = one_time_trunk(
            model, dataset, config=config, data_id=data_id, batches=batches(first), cache=cache, **one_time
        )
        log += record["log"]
        metrics |= {"trunk_reused": record["reused"], "trunk_key": record["key"], **record["metrics"]}
    if config.protocol == "shared-trunk":
        for parameter in model.trunk_parameters():
            parameter.requires_grad_(False)
        model.backbone.eval()
        model.detector.eval()
        model.mask_head.train()
        step, parameters, stage = (
            mask_step(model, config.image_size, config.max_mask_positives),
            list(model.mask_head.parameters()),
            "mask",
        )
    else:
        model.train()
        semantic_head, extra = semantic_head_parts(config, dataset.num_classes, torch_device)
        step = joint_step(model, config.image_size, config.max_mask_positives, semantic_head)
        parameters, stage = list(model.parameters()) + extra, config.protocol

    def save_snapshot(it: int) -> None:
        if it in snapshots and it != config.iters:
            out.mkdir(parents=True, exist_ok=True)
            save_checkpoint(
                snapshot_path(out, it), spec=spec, config=config, dataset=dataset, data_id=data_id, model=model,
                metrics={"iter": it},
            )  # fmt: skip

    rows, timing = optimise(
        step,
        parameters,
        batches(config.seed + 1),
        stage=stage,
        iters=config.iters,
        lr=config.lr,
        device=torch_device,
        **loop_options(config),
        log_every=log_every,
        events=events,
        on_step=save_snapshot if snapshots else None,
    )
    log += rows
    last = rows[-1]
    metrics |= {"train_s": timing["seconds"], "train_images_per_s": timing["images_per_s"]}
    metrics |= {f"final_{k}": v for k, v in last.items() if k.startswith("loss_")}

    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        out / CHECKPOINT_FILE, spec=spec, config=config, dataset=dataset, data_id=data_id, model=model, metrics=metrics
    )
    write_table(pd.DataFrame(log), out / LOG_STEM)
    meta = run_metadata(device=torch_device, spec=str(spec), data_dir=str(data_dir), config=asdict(config))
    write_json(out / "meta.json", meta | {"metrics": metrics})
    return TrainResult(out / CHECKPOINT_FILE, (out / LOG_STEM).with_suffix(".csv"), metrics)
