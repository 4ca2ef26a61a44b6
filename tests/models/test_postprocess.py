"""Post-processing: FCOS decoding, threshold, NMS and top-k on constructed outputs; oracle locations; paste back
into the original image against the stride-4 paste it generalises."""

from __future__ import annotations

import torch

from bmbench.models.fcos import DetectorOutputs, level_points
from bmbench.models.losses import assign_fcos_targets, level_size_ranges
from bmbench.models.paste import paste_full_masks, paste_roi_masks
from bmbench.models.postprocess import (
    Detections,
    detect,
    merge_detections,
    oracle_locations,
    paste_in_original,
    resample_full_logits,
)
from bmbench.variants import build_segmenter, parse_spec

SHAPES_64 = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]  # P3–P7 of a 64×64 image
P = sum(h * w for h, w in SHAPES_64)


def _outputs(cls: torch.Tensor, ltrb: torch.Tensor, ctr: torch.Tensor, params: torch.Tensor):
    """Per-location tensors (B, P, X) -> per-level maps (B, X, H_l, W_l)."""

    def split(x: torch.Tensor) -> list[torch.Tensor]:
        parts = x.split([h * w for h, w in SHAPES_64], dim=1)
        return [p.transpose(1, 2).reshape(x.shape[0], -1, h, w) for p, (h, w) in zip(parts, SHAPES_64, strict=True)]

    return DetectorOutputs(split(cls), split(ltrb), split(ctr), []), split(params)


def test_detect_decodes_thresholds_and_suppresses() -> None:
    points = level_points(SHAPES_64)
    cls = torch.full((1, P, 3), -10.0)
    ltrb = torch.zeros((1, P, 4))
    params = torch.arange(P, dtype=torch.float32)[None, :, None].expand(1, P, 2).clone()
    # Locations 9 (12, 12) and 10 (20, 12) of P3 predict nearly the same box of class 1; location 20 another class.
    for loc, prob in ((9, 0.9), (10, 0.8), (20, 0.7)):
        cls[0, loc, 1 if loc < 20 else 2] = torch.logit(torch.tensor(prob))
    ltrb[0, 9] = torch.tensor([10.0, 10, 10, 10])  # box [2, 2, 22, 22]
    ltrb[0, 10] = torch.tensor([17.0, 10, 3, 10])  # box [3, 2, 23, 22]: IoU > 0.6 with the first
    ltrb[0, 20] = torch.tensor([100.0, 5, 5, 5])  # clipped at x = 0 by the image
    outputs, level_params = _outputs(cls, ltrb, torch.full((1, P, 1), 20.0), params)
    (det,) = detect(outputs, level_params, points, [(64, 64)])
    assert det.locations.tolist() == [9, 20]
    assert det.labels.tolist() == [1, 2]
    assert torch.allclose(det.scores, torch.tensor([0.9, 0.7]).sqrt(), atol=1e-4)
    assert torch.equal(det.boxes[0], torch.tensor([2.0, 2, 22, 22]))
    assert det.boxes[1, 0] == 0  # clipped
    assert det.params[:, 0].tolist() == [9.0, 20.0]
    (capped,) = detect(outputs, level_params, points, [(64, 64)], max_detections=1)
    assert capped.locations.tolist() == [9]
    (none,) = detect(outputs, level_params, points, [(64, 64)], score_threshold=0.95)
    assert len(none.boxes) == 0 and none.params.shape == (0, 2)


def test_detect_keeps_the_top_k_of_each_level_by_class_times_centerness() -> None:
    """AdelaiDet's FCOSOutputs: threshold on the class probability, top-k per level by class × centerness."""
    points = level_points(SHAPES_64)
    cls = torch.full((1, P, 2), -10.0)
    ctr = torch.full((1, P, 1), 20.0)  # centerness ~1 unless set
    ltrb = torch.full((1, P, 4), 2.0)  # small boxes: nothing overlaps, NMS keeps all
    # P3 (locations 0-63): 3 has the higher class probability but a low centerness, so 5 ranks first on P3.
    for loc, prob, centerness in ((3, 0.9, 0.2), (5, 0.6, 1.0), (7, 0.3, 1.0), (64, 0.2, 1.0), (65, 0.1, 1.0)):
        cls[0, loc, 0] = torch.logit(torch.tensor(prob))
        ctr[0, loc, 0] = torch.logit(torch.tensor(centerness))
    outputs, level_params = _outputs(cls, ltrb, ctr, torch.zeros(1, P, 2))

    def kept(**kwargs: object) -> list[int]:
        (det,) = detect(outputs, level_params, points, [(64, 64)], **kwargs)
        return det.locations.tolist()

    # One per level: P3's best by class × centerness (5: 0.6 > 0.9 × 0.2) and P4's best (64); overall top-1 would
    # keep P3 alone.
    assert kept(pre_nms_top_k=1) == [5, 64]
    assert kept(pre_nms_top_k=2) == [5, 7, 64, 65]  # 3 is P3's third; by score: sqrt 0.6, 0.3, 0.2, 0.1
    assert kept(pre_nms_top_k=2, max_detections=3) == [5, 7, 64]  # the final cap, by score
    # Location 3 passes the threshold on its class probability (0.9 > 0.25) but not on class × centerness (0.18).
    assert 3 in kept(score_threshold=0.25) and 3 not in kept(score_threshold=0.25, threshold_with_centerness=True)
    (det,) = detect(outputs, level_params, points, [(64, 64)])
    assert det.locations.tolist() == [5, 7, 64, 3, 65]
    assert torch.allclose(det.scores, torch.tensor([0.6, 0.3, 0.2, 0.18, 0.1]).sqrt(), atol=1e-4)


def test_oracle_location_is_a_training_positive() -> None:
    points = level_points(SHAPES_64)
    boxes = torch.tensor([[2.0, 3, 20, 17], [10, 6, 60, 58], [30, 30, 34, 36]])
    assigned = assign_fcos_targets(
        points, [{"boxes": boxes, "labels": torch.tensor([0, 1, 2])}], size_ranges=level_size_ranges(64)
    )
    locations = oracle_locations(boxes, points, 64)
    assert assigned.matched[0, locations].tolist() == [0, 1, 2]
    for g in (0, 1, 2):  # the most central of the box's positives
        assert assigned.centerness[0, locations[g]] == assigned.centerness[0][assigned.matched[0] == g].max()
    assert locations[2] == 4 * 8 + 3  # the 4×6 box's only positive: the P3 location nearest (32, 33), (28, 36)


def test_resample_full_logits_at_scale_one_matches_stride4_paste() -> None:
    logits = torch.randn(3, 16, 16)
    boxes = torch.tensor([[0.0, 0, 64, 64], [5, 9, 40, 30], [20, 2, 63, 50]])
    reference = paste_full_masks(logits, boxes, (64, 64))
    ours = paste_in_original(logits, boxes, mask_form="full", orig_size=(64, 64), scale=1.0)
    assert torch.equal(ours, reference)
    assert resample_full_logits(logits, (64, 64), 1.0).shape == (3, 64, 64)


def test_paste_in_original_scales_boxes_back() -> None:
    logits = torch.full((1, 8, 8), 5.0)  # everything inside the box is foreground
    boxes = torch.tensor([[8.0, 4, 24, 20]])  # in the model's image, scale 0.5 of the original
    roi = paste_in_original(logits, boxes, mask_form="roi", orig_size=(80, 100), scale=0.5)
    assert roi.shape == (1, 80, 100)
    assert torch.equal(roi, paste_roi_masks(logits, boxes * 2, (80, 100)))
    ys, xs = roi[0].nonzero().unbind(1)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (16, 47, 8, 39)
    full = paste_in_original(torch.full((1, 16, 16), 5.0), boxes, mask_form="full", orig_size=(80, 100), scale=0.5)
    assert full.shape == (1, 80, 100) and torch.equal(full, roi)


def test_merge_detections_splits_per_image() -> None:
    model = build_segmenter(parse_spec("blendmask:K=2,M=2,R=8"), num_classes=2).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
        params = torch.randn(3, model.mask_head.num_params)
        detections = [
            Detections(
                torch.tensor([[0.0, 0, 10, 10], [5, 5, 30, 40]]),
                torch.ones(2),
                torch.zeros(2).long(),
                params[:2],
                torch.zeros(2).long(),
            ),
            Detections(
                torch.tensor([[1.0, 2, 30, 20]]), torch.ones(1), torch.ones(1).long(), params[2:], torch.zeros(1).long()
            ),
        ]
        logits = merge_detections(model.mask_head, out.bottom, detections)
    assert [tuple(x.shape) for x in logits] == [(2, 8, 8), (1, 8, 8)]
    with torch.no_grad():
        alone = model.mask_head.merge(out.bottom, params[2:], torch.tensor([[1.0, 1, 2, 30, 20]]), torch.ones(1).long())
    assert torch.allclose(logits[1], alone, atol=1e-6)
