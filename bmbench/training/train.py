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

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bmbench.data.coco import CocoInstanceDataset
from bmbench.device import resolve_device
from bmbench.errors import BmbenchError
from bmbench.results import atomic_path, run_metadata, write_json, write_table
from bmbench.training.checkpoint import CHECKPOINT_FILE, CHECKPOINT_FORMAT
from bmbench.training.config import TrainConfig, _check_config, _loop_options
from bmbench.training.loop import optimise, training_batches
from bmbench.training.steps import _semantic_head, joint_step, mask_step
from bmbench.training.trunk import data_identity, default_trunk_cache, shared_trunk
from bmbench.variants import VariantSpec, build_segmenter, parse_spec

LOG_STEM = "train_log"


@dataclass
class TrainResult:
    """What `train` produced."""

    checkpoint: Path  # the checkpoint file
    log: Path  # the train log table (CSV; a Parquet twin sits beside it)
    metrics: dict[str, Any] = field(default_factory=dict)  # timings, throughput, final losses, trunk cache use


# --- losses of the three kinds of step --------------------------------------------------------------------------


# --- the shared trunk --------------------------------------------------------------------------------------------


# --- train -------------------------------------------------------------------------------------------------------


def train(
    spec: VariantSpec | str,
    data_dir: Path | None = None,
    *,
    out: Path,
    iters: int = TrainConfig.iters,
    batch_size: int = TrainConfig.batch_size,
    lr: float = TrainConfig.lr,
    protocol: str = TrainConfig.protocol,
    seed: int = TrainConfig.seed,
    device: str = "auto",
    trunk: str = TrainConfig.trunk,
    image_size: int = TrainConfig.image_size,
    trunk_iters: int = TrainConfig.trunk_iters,
    trunk_lr: float | None = None,
    trunk_cache: Path | None = None,
    max_mask_positives: int = TrainConfig.max_mask_positives,
    semantic_aux: bool = TrainConfig.semantic_aux,
    log_every: int = 10,
    progress: bool = False,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train `spec` on the train split of `data_dir` (default: the synthetic default dataset) and write
    ``out/checkpoint.pt``, ``out/train_log.csv`` (+ .parquet) and ``out/meta.json``.

    Every input is checked before anything is written; bad input raises BmbenchError. Returns the checkpoint and
    log paths and metrics: ``train_s``, ``train_images_per_s`` (the mask-head stage under shared-trunk),
    ``trunk_reused``, ``trunk_train_s``, ``trunk_images_per_s``, ``final_loss_*``. `on_log` receives each log
    row as it is made (every `log_every` steps); `progress` draws a rich progress bar on stderr.
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    config = TrainConfig(
        protocol=protocol,
        iters=iters,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        trunk=trunk,
        image_size=image_size,
        trunk_iters=trunk_iters,
        trunk_lr=lr if trunk_lr is None else trunk_lr,
        max_mask_positives=max_mask_positives,
        semantic_aux=semantic_aux,
    )
    _check_config(config)
    if not isinstance(log_every, int) or log_every < 1:
        raise BmbenchError(f"log_every must be a positive integer, got {log_every!r}")
    torch_device = resolve_device(device)
    if data_dir is None:
        from bmbench.data.synth import ensure_default_dataset

        data_dir = ensure_default_dataset()
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise BmbenchError(f"data directory {data_dir} does not exist")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BmbenchError(f"--out {out} exists and is not a directory")
    dataset = CocoInstanceDataset(data_dir, "train", image_size=image_size, flip=config.flip, seed=seed)
    data_id = data_identity(data_dir)

    torch.manual_seed(seed)  # the trunk is built first, so its initialisation is the same for every variant
    model = build_segmenter(spec, trunk=trunk, num_classes=dataset.num_classes).to(torch_device)
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
            progress=progress,
            on_log=on_log,
        )
        log += record["log"]
        metrics |= {"trunk_reused": record["reused"], "trunk_key": record["key"], **record["metrics"]}
        for parameter in model.trunk_parameters():
            parameter.requires_grad_(False)
        model.backbone.eval()
        model.detector.eval()
        model.mask_head.train()
        step, parameters, stage = (
            mask_step(model, image_size, max_mask_positives),
            list(model.mask_head.parameters()),
            "mask",
        )
    else:
        model.train()
        semantic_head, extra = _semantic_head(config, dataset.num_classes, torch_device)
        step, stage = joint_step(model, image_size, max_mask_positives, semantic_head), "joint"
        parameters = list(model.parameters()) + extra
    batches = training_batches(dataset, batch_size=batch_size, seed=seed + 1)
    rows, timing = optimise(
        step,
        parameters,
        batches,
        stage=stage,
        iters=iters,
        lr=lr,
        device=torch_device,
        **_loop_options(config),
        log_every=log_every,
        progress=progress,
        on_log=on_log,
    )
    log += rows
    last = rows[-1]
    metrics |= {"train_s": timing["seconds"], "train_images_per_s": timing["images_per_s"]}
    metrics |= {f"final_{k}": v for k, v in last.items() if k.startswith("loss_")}

    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "spec": str(spec),
        "trunk": trunk,
        "num_classes": dataset.num_classes,
        "label_to_category_id": list(dataset.label_to_category_id),
        "class_names": list(dataset.class_names),
        "config": asdict(config),
        "data_id": data_id,
        "model": model.state_dict(),
        "metrics": metrics,
    }
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / CHECKPOINT_FILE) as tmp:
        torch.save(checkpoint, tmp)
    write_table(pd.DataFrame(log), out / LOG_STEM)
    meta = run_metadata(device=torch_device, spec=str(spec), data_dir=str(data_dir), config=asdict(config))
    write_json(out / "meta.json", meta | {"metrics": metrics})
    return TrainResult(out / CHECKPOINT_FILE, (out / LOG_STEM).with_suffix(".csv"), metrics)
