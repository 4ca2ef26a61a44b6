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

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bmbench.data.coco import CocoInstanceDataset
from bmbench.device import resolve_device
from bmbench.errors import BmbenchError
from bmbench.results import EventHook, check_out_dir, run_metadata, write_json, write_table
from bmbench.training.checkpoint import CHECKPOINT_FILE, save_checkpoint
from bmbench.training.config import TrainConfig, check_config, loop_options
from bmbench.training.loop import optimise, training_batches
from bmbench.training.steps import joint_step, mask_step, semantic_head_parts
from bmbench.training.trunk import data_identity, default_trunk_cache, shared_trunk
from bmbench.variants import VariantSpec, build_segmenter, parse_spec

LOG_STEM = "train_log"


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
    events: EventHook | None = None,
) -> TrainResult:
    """Train `spec` as `config` says on the train split of `data_dir` (default: the synthetic default dataset) and
    write ``out/checkpoint.pt``, ``out/train_log.csv`` (+ .parquet) and ``out/meta.json``.

    `config` None: TrainConfig's defaults. Every input is checked before anything is written; bad input raises
    BmbenchError. Returns the checkpoint and log paths and metrics: ``train_s``, ``train_images_per_s`` (the
    mask-head stage under shared-trunk), ``trunk_reused``, ``trunk_train_s``, ``trunk_images_per_s``,
    ``final_loss_*``. `events` receives each stage's progress (bmbench.results.Event), notes before one-time
    stages, and each log row (every `log_every` steps).
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    config = TrainConfig() if config is None else config
    check_config(config)
    if not isinstance(log_every, int) or log_every < 1:
        raise BmbenchError(f"log_every must be a positive integer, got {log_every!r}")
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

    torch.manual_seed(config.seed)  # the trunk is built first, so its initialisation is the same for every variant
    model = build_segmenter(spec, trunk=config.trunk, num_classes=dataset.num_classes).to(torch_device)
    log: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    if config.protocol == "shared-trunk":
        record = shared_trunk(
            model,
            dataset,
            config=config,
            data_id=data_id,
            cache=default_trunk_cache() if trunk_cache is None else Path(trunk_cache),
            device=torch_device,
            log_every=log_every,
            events=events,
        )
        log += record["log"]
        metrics |= {"trunk_reused": record["reused"], "trunk_key": record["key"], **record["metrics"]}
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
        step, stage = joint_step(model, config.image_size, config.max_mask_positives, semantic_head), "joint"
        parameters = list(model.parameters()) + extra
    batches = training_batches(dataset, batch_size=config.batch_size, seed=config.seed + 1)
    rows, timing = optimise(
        step,
        parameters,
        batches,
        stage=stage,
        iters=config.iters,
        lr=config.lr,
        device=torch_device,
        **loop_options(config),
        log_every=log_every,
        events=events,
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
