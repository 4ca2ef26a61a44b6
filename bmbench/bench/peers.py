"""Floors and peers of the mask branch, timed side by side in one process for `bmbench speed --check`.

One ratio table: each row is a stage measured alone on the same inputs, with its median's interval and its ratio
to a reference row. Letters: N instances, K bases, M attention side, R mask side, H×W the image.

- merge floor: ``roi_align`` of the bases alone (no attention, no blending), the plain formulation
  (roi_align → interpolate → softmax → multiply-sum), our blender and ``torch.compile`` of it, at K=4, M=7, R=56;
- Mask R-CNN head: ours beside torchvision's ``MaskRCNNHeads`` + ``MaskRCNNPredictor`` with our weights copied in,
  on the same pooled RoIs;
- paste: the whole-image paste it replaced beside the paste inside each box, on the blender's logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from bmbench.bench.formulations import blend_plain
from bmbench.bench.timer import Measurement, Timer
from bmbench.bench.workload import MaskBranchWorkload
from bmbench.models.heads.base import roi_align_stride4
from bmbench.models.heads.blendmask import blend
from bmbench.models.heads.maskrcnn import MaskRCNNConvUpsampleHead
from bmbench.models.paste import paste_roi_masks, paste_roi_masks_whole_image

PEER_COLUMNS = (
    "check",  # merge floor, Mask R-CNN head or paste
    "row",  # what was timed
    "reference",  # the row its ratio divides by
    "instances",
    "median_ms",
    "ci_low_ms",
    "ci_high_ms",
    "n",
    "precise",
    "ratio",  # median / the reference row's median
    "equivalent",  # the row's output equals its reference's (None where not comparable, e.g. roi_align alone)
    "status",
    "error",
)
ROI_ALIGN, PLAIN, BLENDER, COMPILED = "roi_align alone", "plain formulation", "our blender", "torch.compile(blender)"
OURS_RCNN, TORCHVISION_RCNN = "our Mask R-CNN head", "torchvision MaskRCNNHeads + MaskRCNNPredictor"
OLD_PASTE, NEW_PASTE = "paste over the whole image (before)", "paste inside the box"
ROWS = (ROI_ALIGN, PLAIN, BLENDER, COMPILED, OURS_RCNN, TORCHVISION_RCNN, OLD_PASTE, NEW_PASTE)


def torchvision_mask_head(head: MaskRCNNConvUpsampleHead) -> tuple[MaskRCNNHeads, MaskRCNNPredictor]:
    """torchvision's heads and predictor carrying ``head``'s weights (same widths, in eval mode, same device)."""
    convs = [m for m in head.convs if isinstance(m, torch.nn.Conv2d)]
    heads = MaskRCNNHeads(convs[0].in_channels, [conv.out_channels for conv in convs], 1)
    predictor = MaskRCNNPredictor(head.deconv.in_channels, head.deconv.out_channels, head.logits.out_channels)
    with torch.no_grad():
        for ours, block in zip(convs, heads, strict=True):
            block[0].load_state_dict(ours.state_dict())
        predictor.conv5_mask.load_state_dict(head.deconv.state_dict())
        predictor.mask_fcn_logits.load_state_dict(head.logits.state_dict())
    weight = head.logits.weight
    return heads.eval().to(weight.device, weight.dtype), predictor.eval().to(weight.device, weight.dtype)


def _same(a: Tensor, b: Tensor) -> bool:
    if a.dtype == torch.bool:
        return bool(torch.equal(a, b))
    scale = b.float().abs().max().item() or 1.0
    tolerance = 1e-4 if b.dtype == torch.float32 else 5e-2
    return (a.float() - b.float()).abs().max().item() <= tolerance * scale


def _row(check: str, row: str, reference: str, num: int) -> dict[str, Any]:
    return {"check": check, "row": row, "reference": reference, "instances": num, "equivalent": None}


PEER_ROUNDS = 3  # alternating passes over the rows, repeats pooled: a drift of the machine lands on every row alike


def _measure(
    timer: Timer, fn: Callable[[], Tensor], before: Measurement | None, share: float
) -> tuple[Measurement | None, Tensor | None, str]:
    """One round of a row, pooled with `before`: the first round makes its first call (the output to compare; for
    torch.compile, its compilation) and warms up as the timer says; later rounds time at once, as the sweep's do.
    Returns the Measurement and that output, or the error that stopped it."""
    try:
        with torch.inference_mode():
            if before is None:
                out = fn()  # also the first (compiling) call of torch.compile
                return timer.measure_fn(fn, share=share), out, ""
            return timer.measure_fn(fn, warmup=0, before=before, share=share), None, ""
    except Exception as err:  # noqa: BLE001 - e.g. torch.compile without a working compiler
        return None, None, f"{type(err).__name__}: {err}".splitlines()[0][:300]


def _timed_rows(
    timer: Timer, jobs: list[tuple[dict[str, Any], Callable[[], Tensor] | None, Tensor | None]], rounds: int
) -> list[dict[str, Any]]:
    """Time every job (its row record, its callable or None when skipped, the output it must equal or None) in
    `rounds` alternating passes, each with 1/rounds of the budget and cap, repeats pooled across passes."""
    measured: list[Measurement | None] = [None] * len(jobs)
    errors = [""] * len(jobs)
    outputs: list[Tensor | None] = [None] * len(jobs)
    for _ in range(rounds):
        for index, (_, fn, _) in enumerate(jobs):
            if fn is None or errors[index]:
                continue
            measured[index], out, errors[index] = _measure(timer, fn, measured[index], 1 / rounds)
            if out is not None:  # the first round's
                outputs[index] = out
    rows = []
    for (record, fn, expected), measurement, error, out in zip(jobs, measured, errors, outputs, strict=True):
        if fn is None:
            rows.append(record)
            continue
        if measurement is None:
            rows.append(record | {"status": "error", "error": error})
            continue
        low, high = measurement.ci_ms
        record = record | {"median_ms": measurement.median_ms, "ci_low_ms": low, "ci_high_ms": high}
        record |= {"n": measurement.n, "precise": measurement.precise, "status": "ok", "error": ""}
        if expected is not None and out is not None:
            record["equivalent"] = _same(out, expected)
        rows.append(record)
    return rows


def peer_rows(
    blender: MaskBranchWorkload,
    rcnn: MaskBranchWorkload,
    timer: Timer,
    *,
    compile: bool = True,
    rounds: int = PEER_ROUNDS,
) -> list[dict[str, Any]]:
    """Every row of the ratio table (ROWS), on the blender workload (K=4, M=7, R=56) and the Mask R-CNN one, timed
    in `rounds` alternating passes (see `_timed_rows`)."""
    head, instances = blender.head, blender.instances
    num, M, R = len(instances), head.M, head.R
    bases, params = blender.merge_inputs()
    rois = instances.rois
    # Mask R-CNN: both heads on the same pooled RoIs (the pooler is the same torchvision MultiScaleRoIAlign).
    rcnn_head: MaskRCNNConvUpsampleHead = rcnn.head  # type: ignore[assignment]
    levels, image_size = rcnn_head.bottom(rcnn.features, rcnn.image_size)
    labels = rcnn.instances.labels
    picked = torch.arange(len(labels), device=labels.device)
    heads, predictor = torchvision_mask_head(rcnn_head)
    with torch.inference_mode():
        ours = blend(bases, params, rois, M=M, R=R)
        pooled = rcnn_head.pooler(levels, [rcnn.instances.rois[:, 1:]], [tuple(image_size)])  # (N, C, R/2, R/2)
        theirs = predictor(heads(pooled))[picked, labels]
        pasted = paste_roi_masks(ours, rois[:, 1:], blender.image_size)
    floor = "merge floor"
    jobs: list[tuple[dict[str, Any], Callable[[], Tensor] | None, Tensor | None]] = [
        (_row(floor, ROI_ALIGN, ROI_ALIGN, num), lambda: roi_align_stride4(bases, rois, R), None)
    ]
    for name, fn in ((PLAIN, blend_plain), (BLENDER, blend), (COMPILED, torch.compile(blend) if compile else None)):
        if fn is None:
            jobs.append(
                (_row(floor, name, ROI_ALIGN, num) | {"status": "skipped", "error": "--compile off"}, None, None)
            )
            continue
        jobs.append((_row(floor, name, ROI_ALIGN, num), lambda fn=fn: fn(bases, params, rois, M=M, R=R), ours))
    rcnn_check, count = "Mask R-CNN head", len(labels)
    jobs.append(
        (_row(rcnn_check, OURS_RCNN, TORCHVISION_RCNN, count), lambda: rcnn_head.mask_logits(pooled, labels), theirs)
    )
    jobs.append(
        (
            _row(rcnn_check, TORCHVISION_RCNN, TORCHVISION_RCNN, count),
            lambda: predictor(heads(pooled))[picked, labels],
            None,
        )
    )
    # Paste: the blender's logits into the image, both ways.
    for name, fn in ((OLD_PASTE, paste_roi_masks_whole_image), (NEW_PASTE, paste_roi_masks)):
        jobs.append(
            (_row("paste", name, NEW_PASTE, num), lambda fn=fn: fn(ours, rois[:, 1:], blender.image_size), pasted)
        )
    rows = _timed_rows(timer, jobs, rounds)
    medians = {row["row"]: row.get("median_ms", float("nan")) for row in rows}
    for row in rows:
        row["ratio"] = row.get("median_ms", float("nan")) / medians[row["reference"]]
        for column in PEER_COLUMNS:
            row.setdefault(column, float("nan"))
    return [{column: row[column] for column in PEER_COLUMNS} for row in rows]
