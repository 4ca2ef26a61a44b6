"""Evaluation for AP: inference with a trained checkpoint, NMS, paste, RLE, then COCOeval (segm and bbox).

Two box sources:

- ``predicted``: the detector's boxes after score threshold, class-wise NMS and top-100, as any user would get.
- ``oracle``: every (non-crowd) ground-truth box with its class and score 1. The instance parameters are read at
  the location that FCOS training assigns to the box with the highest centerness target, i.e. a location whose
  parameters the mask loss trained for this box (bmbench.models.postprocess.oracle_locations). Mask AP then
  measures mask quality alone; box AP is trivially ~1 and not meaningful in this mode.

Masks and boxes are mapped back to each original image's size before encoding. Letters as in
bmbench.models.postprocess.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal, get_args

import pandas as pd
import torch

from bmbench.data.coco import CocoInstanceDataset, check_split, collate
from bmbench.device import resolve_device, synchronize
from bmbench.errors import BmbenchError
from bmbench.evaluation.cocoeval import MAX_DETS, check_evaluator, check_max_dets
from bmbench.evaluation.reference_masks import check_reference, score_reference
from bmbench.evaluation.scoring import SCORE_PREFIXES, detections_to_coco, metrics_frame, score_detections
from bmbench.models.diagnostics import basis_correlation
from bmbench.models.fcos import level_points
from bmbench.models.losses import flatten_levels
from bmbench.models.postprocess import Detections, detect, merge_detections, oracle_locations, paste_in_original
from bmbench.models.segmenter import InstanceSegmenter
from bmbench.results import EventHook, emit, run_metadata, write_json, write_table, write_text
from bmbench.training.checkpoint import load_checkpoint, model_from_checkpoint

BoxSource = Literal["predicted", "oracle"]  # where the boxes that masks are scored on come from
BOX_SOURCES: tuple[str, ...] = get_args(BoxSource)
Source = Literal["checkpoint", "detections", "reference"]  # what evaluate_source scores
SOURCES: tuple[str, ...] = get_args(Source)
DETECTIONS_FILE = "detections.json"
METRICS_STEM = "metrics"


def oracle_detections(
    targets: list[dict[str, Any]], params: list[torch.Tensor], points: list[torch.Tensor], image_size: int
) -> list[Detections]:
    """Ground-truth boxes and classes with score 1, and the instance parameters at each box's location."""
    flat = flatten_levels(params)  # (B, P, D)
    results = []
    for b, target in enumerate(targets):
        boxes = target["boxes"].to(flat.device).float()
        locations = oracle_locations(boxes, points, image_size)
        scores = torch.ones(len(boxes), device=flat.device)
        results.append(Detections(boxes, scores, target["labels"].to(flat.device), flat[b, locations], locations))
    return results


@torch.inference_mode()
def predict(
    model: InstanceSegmenter,
    images: torch.Tensor,
    targets: list[dict[str, Any]],
    *,
    boxes: str,
    image_size: int,
    max_dets: int = MAX_DETS,
) -> list[tuple[Detections, torch.Tensor]]:
    """One batch: per image its detections (model pixels, at most `max_dets` predicted) and binary masks
    ``Tensor[N, H0, W0]`` in its original image."""
    out = model(images)
    points = level_points([tuple(x.shape[-2:]) for x in out.detections.class_logits], images.device)
    if boxes == "oracle":
        detections = oracle_detections(targets, out.params, points, image_size)
    else:
        sizes = [tuple(t["size"]) for t in targets]
        detections = detect(out.detections, out.params, points, sizes, max_detections=max_dets)
    logits = merge_detections(model.mask_head, out.bottom, detections)
    results = []
    for det, mask_logits, target in zip(detections, logits, targets, strict=True):
        masks = paste_in_original(
            mask_logits,
            det.boxes,
            mask_form=model.mask_head.mask_form,
            orig_size=tuple(target["orig_size"]),
            scale=target["scale"],
        )
        results.append((det, masks))
    return results


@torch.inference_mode()
def _bottom_correlation(model: InstanceSegmenter, images: torch.Tensor) -> float:
    bottom = model.mask_head.bottom(model.backbone(images), tuple(images.shape[-2:]))
    return basis_correlation(bottom)


def _original_boxes(boxes: torch.Tensor, scale: float, orig_size: tuple[int, int]) -> torch.Tensor:
    out = boxes.float() / scale
    out[:, 0::2] = out[:, 0::2].clamp(0, orig_size[1])
    out[:, 1::2] = out[:, 1::2].clamp(0, orig_size[0])
    return out


def _write_scores(out: Path, metrics: dict[str, Any], **columns: Any) -> None:
    frame = metrics_frame({k: v for k, v in metrics.items() if k.startswith(SCORE_PREFIXES)})
    extra = [
        {"iou_type": "run", "metric": k, "value": v} for k, v in metrics.items() if not k.startswith(SCORE_PREFIXES)
    ]
    frame = pd.concat([frame, pd.DataFrame(extra, columns=frame.columns)], ignore_index=True)
    for index, (name, value) in enumerate(columns.items()):
        frame.insert(index, name, value)
    write_table(frame, out / METRICS_STEM)


def evaluate(
    checkpoint: Path,
    data_dir: Path | None = None,
    *,
    boxes: str = "predicted",
    split: str = "val",
    device: str = "auto",
    out: Path | None = None,
    batch_size: int = 8,
    max_images: int | None = None,
    events: EventHook | None = None,
    evaluator: str = "pycocotools",
    max_dets: int = MAX_DETS,
) -> dict[str, Any]:
    """Evaluate a checkpoint on `split` of `data_dir` (default: the synthetic default dataset).

    Returns the COCO metrics (``mask_AP``, ``mask_AP50``, ``mask_AP75``, ``mask_APs/m/l``, ``box_AP`` …, in 0..1)
    plus ``inference_images_per_s`` (forward, post-processing, merge and paste; synchronised), ``eval_s`` (the
    whole call), ``num_images``, ``num_detections`` and ``bases_corr`` (:func:`basis_correlation` of the bottom
    module's maps on the first batch). With `out`, writes ``detections.json``,
    ``metrics.csv``/``.parquet`` and ``meta.json`` there. `evaluator` and `max_dets` as in
    :func:`bmbench.evaluation.scoring.score_detections`; `max_dets` also caps the predicted detections per image.
    """
    started = time.perf_counter()
    if boxes not in BOX_SOURCES:
        raise BmbenchError(f"unknown box source {boxes!r} (use {' or '.join(BOX_SOURCES)})")
    if batch_size < 1:
        raise BmbenchError(f"batch size must be positive, got {batch_size}")
    if max_images is not None and max_images < 1:
        raise BmbenchError(f"max_images must be positive, got {max_images}")
    check_evaluator(evaluator)
    check_max_dets(max_dets)
    torch_device = resolve_device(device)
    state = load_checkpoint(checkpoint)
    data_dir = _data_dir(data_dir)
    image_size = int(state["config"]["image_size"])
    dataset = CocoInstanceDataset(data_dir, split, image_size=image_size, flip=False)
    if list(dataset.label_to_category_id) != list(state["label_to_category_id"]):
        raise BmbenchError(
            f"{dataset.ann_file}: categories {dataset.label_to_category_id} differ from the checkpoint's "
            f"{state['label_to_category_id']}"
        )
    model = model_from_checkpoint(state, Path(checkpoint)).to(torch_device).eval()
    subset = dataset if max_images is None else torch.utils.data.Subset(dataset, range(min(max_images, len(dataset))))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    results: list[dict] = []
    image_ids: list[int] = []
    inference_s = 0.0
    first_batch: torch.Tensor | None = None
    emit(events, "evaluate", "start", total=len(subset), message=f"{boxes} boxes")
    for images, targets in loader:
        images = images.to(torch_device)
        first_batch = images if first_batch is None else first_batch
        synchronize(torch_device)
        tick = time.perf_counter()
        predictions = predict(model, images, targets, boxes=boxes, image_size=image_size, max_dets=max_dets)
        synchronize(torch_device)
        inference_s += time.perf_counter() - tick
        for (det, masks), target in zip(predictions, targets, strict=True):
            orig_size = tuple(target["orig_size"])
            results += detections_to_coco(
                target["image_id"],
                scores=det.scores.cpu(),
                labels=det.labels.cpu(),
                boxes=_original_boxes(det.boxes, target["scale"], orig_size).cpu(),
                masks=masks.cpu(),
                label_to_category_id=dataset.label_to_category_id,
            )
            image_ids.append(int(target["image_id"]))
        emit(events, "evaluate", "advance", completed=len(image_ids), total=len(subset))
    emit(events, "evaluate", "end", completed=len(image_ids), total=len(subset))
    metrics: dict[str, Any] = score_detections(
        dataset.ann_file, results, image_ids=image_ids, evaluator=evaluator, max_dets=max_dets
    )
    metrics |= {
        "inference_images_per_s": len(image_ids) / max(inference_s, 1e-9),
        "num_images": len(image_ids),
        "num_detections": len(results),
        "bases_corr": float("nan") if first_batch is None else _bottom_correlation(model, first_batch),
        "eval_s": time.perf_counter() - started,
    }
    if out is not None:
        out = Path(out)
        write_text(out / DETECTIONS_FILE, json.dumps(results, separators=(",", ":")))
        _write_scores(out, metrics, spec=state["spec"], boxes=boxes, split=split)
        meta = run_metadata(device=torch_device, checkpoint=str(checkpoint), data_dir=str(data_dir), split=split)
        write_json(
            out / "meta.json",
            meta
            | {"boxes": boxes, "spec": state["spec"], "evaluator": evaluator, "max_dets": max_dets, "metrics": metrics},
        )
    return metrics


def evaluate_detections(
    detections: Path,
    data_dir: Path | None = None,
    *,
    split: str = "val",
    out: Path | None = None,
    evaluator: str = "pycocotools",
    max_dets: int = MAX_DETS,
) -> dict[str, Any]:
    """Score a COCO results file (a JSON list of {image_id, category_id, score, bbox and/or segmentation}) against
    `split` of `data_dir`; with `out`, write ``metrics.csv``/``.parquet`` there. Returns the metrics. `evaluator`
    and `max_dets` as in :func:`bmbench.evaluation.scoring.score_detections`."""
    check_evaluator(evaluator)
    check_max_dets(max_dets)
    detections = Path(detections)
    if not detections.is_file():
        raise BmbenchError(f"detections file {detections} not found")
    data_dir = _data_dir(data_dir)
    ann_file = check_split(data_dir, split)[0]  # the dataset check every reader makes, images included
    metrics = score_detections(ann_file, detections, evaluator=evaluator, max_dets=max_dets)
    if out is not None:
        _write_scores(Path(out), metrics, detections=str(detections), split=split)
    return metrics


def evaluate_reference(
    kind: str,
    data_dir: Path | None = None,
    *,
    split: str = "val",
    out: Path | None = None,
    evaluator: str = "pycocotools",
    max_dets: int = MAX_DETS,
) -> dict[str, Any]:
    """Score reference masks `kind` (one of bmbench.evaluation.reference_masks.REFERENCES: masks built from the ground
    truth) on `split` of `data_dir`; with `out`, write ``metrics.csv``/``.parquet`` there. Returns the mask metrics.
    `evaluator` and `max_dets` as for a checkpoint, so that references and cells are scored alike. The split goes
    through the same dataset check as training and evaluation (its images too), so that a dataset they refuse is
    not scored here."""
    check_reference(kind)  # before the default dataset may be generated: bad input writes nothing
    check_evaluator(evaluator)
    check_max_dets(max_dets)
    ann_file = check_split(_data_dir(data_dir), split)[0]
    metrics = score_reference(ann_file, kind, evaluator=evaluator, max_dets=max_dets)
    if out is not None:
        _write_scores(Path(out), metrics, reference=kind, split=split)
    return metrics


def evaluate_source(
    kind: Source,
    source: Path | str,
    data_dir: Path | None = None,
    *,
    out: Path | None = None,
    boxes: str = "predicted",
    device: str = "auto",
    batch_size: int = 8,
    events: EventHook | None = None,
    split: str = "val",
    evaluator: str = "pycocotools",
    max_dets: int = MAX_DETS,
) -> dict[str, Any]:
    """Evaluate one source of masks, `kind` saying which: a checkpoint file (:func:`evaluate`, which alone takes
    `boxes`, `device`, `batch_size` and `events`), a COCO results file (:func:`evaluate_detections`) or a kind of
    reference masks (:func:`evaluate_reference`), each scored by the same rules. Returns the metrics."""
    scoring: dict[str, Any] = {"split": split, "evaluator": evaluator, "max_dets": max_dets}
    if kind == "reference":
        return evaluate_reference(str(source), data_dir, out=out, **scoring)
    if kind == "detections":
        return evaluate_detections(Path(source), data_dir, out=out, **scoring)
    if kind != "checkpoint":
        raise BmbenchError(f"unknown source kind {kind!r} (use {', '.join(SOURCES)})")
    run = {"boxes": boxes, "device": device, "batch_size": batch_size, "events": events}
    return evaluate(Path(source), data_dir, out=out, **run, **scoring)


def _data_dir(data_dir: Path | None) -> Path:
    if data_dir is None:
        from bmbench.data.synth import ensure_default_dataset

        return ensure_default_dataset()
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise BmbenchError(f"data directory {data_dir} does not exist")
    return data_dir
