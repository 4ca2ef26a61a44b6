"""FCOS assignment (a hand-checked case and a loop reference), FCOS losses at their optimum, mask targets, the
mask loss's normalisation and positive sampling."""

from __future__ import annotations

import math

import pytest
import torch

from bmbench.models.fcos import DetectorOutputs, level_points
from bmbench.models.losses import (
    LEVEL_STRIDES,
    assign_fcos_targets,
    fcos_losses,
    first_of_each,
    full_mask_targets,
    level_size_ranges,
    mask_head_loss,
    mask_loss,
    roi_mask_targets,
    select_mask_positives,
    semantic_ce_loss,
    semantic_class_targets,
    semantic_targets,
)
from bmbench.variants import build_segmenter, parse_spec

SHAPES_64 = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]  # P3–P7 of a 64×64 image
P3_ONLY = [(0.0, math.inf)] + [(math.inf, math.inf)] * 4


def _target(boxes: list[list[float]], labels: list[int]) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}


def test_assignment_hand_checked_case() -> None:
    """Box A [0,0,24,24] (area 576) and box B [8,8,40,40] (area 1024) overlap; only P3 (stride 8, centres at
    4, 12, 20, ...) may hold positives. Centre sampling (1.5 strides = 12 px) gives A the 3×3 centres
    {4, 12, 20}² and B the 2×2 centres {20, 28}²; (20, 20) is claimed by both and goes to the smaller A."""
    points = level_points(SHAPES_64)
    assigned = assign_fcos_targets(points, [_target([[0, 0, 24, 24], [8, 8, 40, 40]], [2, 0])], size_ranges=P3_ONLY)
    p3 = torch.cat(points)[:64]
    positive = assigned.positive[0]
    assert positive[64:].sum() == 0
    got = {
        (int(x), int(y)): int(m)
        for (x, y), m, pos in zip(p3, assigned.matched[0, :64], positive[:64], strict=True)
        if pos
    }
    expected = {(x, y): 0 for x in (4, 12, 20) for y in (4, 12, 20)}
    expected |= {(28, 20): 1, (20, 28): 1, (28, 28): 1}
    assert got == expected
    index = {(int(x), int(y)): i for i, (x, y) in enumerate(p3)}
    assert assigned.labels[0, index[(12, 12)]] == 2 and assigned.labels[0, index[(28, 28)]] == 0
    assert assigned.centerness[0, index[(12, 12)]] == pytest.approx(1.0)  # the exact centre of A
    assert assigned.centerness[0, index[(4, 4)]] == pytest.approx(math.sqrt(0.2 * 0.2))  # ltrb 4, 4, 20, 20
    assert torch.equal(assigned.boxes[0, index[(28, 28)]], torch.tensor([8.0, 8, 40, 40]))
    assert assigned.centerness[0, ~positive].abs().sum() == 0


def _assign_loop(points: list[torch.Tensor], boxes: torch.Tensor, ranges, radius: float) -> list[int]:
    """Reference: the FCOS rules written out one location and one box at a time."""
    matched = []
    for level, level_points_ in enumerate(points):
        stride = LEVEL_STRIDES[level]
        low, high = ranges[level]
        for x, y in level_points_.tolist():
            best, best_area = -1, math.inf
            for g, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
                ltrb = (x - x0, y - y0, x1 - x, y1 - y)
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                in_centre = max(cx - radius * stride, x0) < x < min(cx + radius * stride, x1) and max(
                    cy - radius * stride, y0
                ) < y < min(cy + radius * stride, y1)
                if min(ltrb) > 0 and in_centre and low < max(ltrb) <= high:
                    area = (x1 - x0) * (y1 - y0)
                    if area < best_area:
                        best, best_area = g, area
            matched.append(best)
    return matched


def test_assignment_matches_loop_reference() -> None:
    generator = torch.Generator().manual_seed(3)
    shapes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]  # 128×128
    points = level_points(shapes)
    corners = torch.rand((12, 2), generator=generator) * 100
    sides = torch.rand((12, 2), generator=generator) * 90 + 4
    boxes = torch.cat([corners, (corners + sides).clamp(max=128)], dim=1)
    ranges = level_size_ranges(128)
    target = [_target(boxes.tolist(), list(range(12)))]
    assigned = assign_fcos_targets(points, target, size_ranges=ranges, ensure_positive=False)
    assert assigned.matched[0].tolist() == _assign_loop(points, boxes, ranges, 1.5)
    assert assigned.positive.sum() > 10


def test_every_instance_gets_a_positive() -> None:
    """A 50×52 box in a 64×64 image falls between the levels' ranges and a 4×6 box is smaller than a stride:
    without the fallback neither is trained; with it each gets the location nearest its centre on its level."""
    points = level_points(SHAPES_64)
    target = [_target([[10.0, 6, 60, 58], [30, 30, 34, 36]], [0, 1])]
    strict = assign_fcos_targets(points, target, size_ranges=level_size_ranges(64), ensure_positive=False)
    assert not strict.positive.any()
    assigned = assign_fcos_targets(points, target, size_ranges=level_size_ranges(64))
    assert sorted(assigned.matched[0][assigned.positive[0]].tolist()) == [0, 1]


def test_assignment_without_instances_is_all_background() -> None:
    assigned = assign_fcos_targets(level_points(SHAPES_64), [_target([], [])], size_ranges=level_size_ranges(64))
    assert not assigned.positive.any()


def test_fcos_losses_vanish_at_the_optimum() -> None:
    """Exact ltrb regressions, confident right classes and centerness logits at their targets: box loss 0, class
    loss ~0, centerness loss equal to the targets' own entropy."""
    points = level_points(SHAPES_64)
    assigned = assign_fcos_targets(points, [_target([[0, 0, 24, 24], [8, 8, 40, 40]], [2, 0])], size_ranges=P3_ONLY)
    all_points = torch.cat(points)
    boxes = assigned.boxes[0]
    ltrb = torch.stack(
        [all_points[:, 0] - boxes[:, 0], all_points[:, 1] - boxes[:, 1], boxes[:, 2] - all_points[:, 0]]
        + [boxes[:, 3] - all_points[:, 1]],
        dim=1,
    )  # (P, 4)
    logits = torch.full((len(all_points), 3), -30.0)
    logits[assigned.positive[0], assigned.labels[0][assigned.positive[0]]] = 30.0
    ctr = torch.logit(assigned.centerness[0].clamp(1e-6, 1 - 1e-6))

    def split(x: torch.Tensor) -> list[torch.Tensor]:  # (P, X) -> per level (1, X, H_l, W_l)
        parts = x.split([h * w for h, w in SHAPES_64])
        return [p.T.reshape(1, -1, h, w) for p, (h, w) in zip(parts, SHAPES_64, strict=True)]

    outputs = DetectorOutputs(split(logits), split(ltrb), split(ctr[:, None]), [])
    losses = fcos_losses(outputs, points, assigned)
    assert losses["box"].item() == pytest.approx(0.0, abs=1e-5)
    assert losses["cls"].item() == pytest.approx(0.0, abs=1e-6)
    t = assigned.centerness[0][assigned.positive[0]]
    entropy = -(t * t.clamp(min=1e-12).log() + (1 - t) * (1 - t).clamp(min=1e-12).log()).mean()
    assert losses["ctr"].item() == pytest.approx(entropy.item(), abs=1e-4)


def test_roi_mask_targets_crop_on_the_box() -> None:
    mask = torch.zeros((1, 32, 32), dtype=torch.uint8)
    mask[0, 8:24, 4:12] = 1  # the left half of the box [4, 8, 20, 24]
    target = roi_mask_targets(mask, torch.tensor([[4.0, 8, 20, 24]]), 8)
    assert target.shape == (1, 8, 8)
    assert torch.equal(target[0, :, :4], torch.ones(8, 4)) and torch.equal(target[0, :, 4:], torch.zeros(8, 4))


def test_full_mask_targets_and_loss_normalised_inside_the_box() -> None:
    mask = torch.zeros((1, 32, 32), dtype=torch.uint8)
    mask[0, :8, :8] = 1
    target = full_mask_targets(mask)
    assert target.shape == (1, 8, 8) and target.sum() == 4
    box = torch.tensor([[0.0, 0, 16, 16]])  # cells with centres 2, 6, 10, 14: a 4×4 block
    logits = torch.full((1, 8, 8), -30.0)  # as YOLACT's crop leaves the outside
    logits[0, :4, :4] = 0.0  # p = 0.5 inside the box: BCE log 2 everywhere there
    loss = mask_loss(logits, target, torch.ones(1), mask_form="full", boxes=box)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-5)


def test_select_mask_positives_caps_and_repeats() -> None:
    points = level_points(SHAPES_64)
    assigned = assign_fcos_targets(points, [_target([[0, 0, 24, 24], [8, 8, 40, 40]], [2, 0])], size_ranges=P3_ONLY)
    images, locations = select_mask_positives(assigned, 5, torch.Generator().manual_seed(0))
    again = select_mask_positives(assigned, 5, torch.Generator().manual_seed(0))
    assert len(locations) == 5 and torch.equal(locations, again[1]) and (images == 0).all()
    assert assigned.positive[images, locations].all()
    assert torch.equal(locations, locations.sort().values)
    assert len(select_mask_positives(assigned, 100)[1]) == int(assigned.positive.sum())


@pytest.mark.parametrize("cap", [None, 0, -1])
def test_select_mask_positives_takes_every_positive_without_a_cap(cap: int | None) -> None:
    points = level_points(SHAPES_64)
    assigned = assign_fcos_targets(points, [_target([[0, 0, 24, 24], [8, 8, 40, 40]], [2, 0])], size_ranges=P3_ONLY)
    images, locations = select_mask_positives(assigned, cap, torch.Generator().manual_seed(0))
    expected = assigned.positive[0].nonzero().squeeze(1)
    assert len(expected) > 5 and torch.equal(locations, expected) and (images == 0).all()
    assert torch.equal(select_mask_positives(assigned)[1], expected)  # the default: all of them


@pytest.mark.parametrize("text", ["blendmask:K=2,M=2,R=8", "yolact:K=4", "centermask:S=4,R=8", "maskrcnn:R=8"])
def test_mask_head_loss_backpropagates_for_every_family(text: str) -> None:
    model = build_segmenter(parse_spec(text), num_classes=3)
    images = torch.randn(2, 3, 64, 64)
    mask = torch.zeros((2, 64, 64), dtype=torch.uint8)
    mask[0, 4:30, 6:20] = 1
    mask[1, 20:50, 24:60] = 1
    targets = [
        {"boxes": torch.tensor([[6.0, 4, 20, 30], [24, 20, 60, 50]]), "labels": torch.tensor([1, 2]), "masks": mask},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64), "masks": mask[:0]},
    ]
    out = model(images)
    points = level_points([tuple(x.shape[-2:]) for x in out.detections.class_logits])
    assigned = assign_fcos_targets(points, targets, size_ranges=level_size_ranges(64))
    chosen = select_mask_positives(assigned, 4, torch.Generator().manual_seed(0))
    loss = mask_head_loss(model.mask_head, out.bottom, out.params, targets, assigned, *chosen)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    grads = [p.grad for p in model.mask_head.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_first_of_each_indexes_distinct_keys_back_to_every_element() -> None:
    keys = torch.tensor([7, 3, 7, 7, 1, 3])
    first, inverse = first_of_each(keys)
    assert torch.equal(keys[first], torch.tensor([1, 3, 7])) and torch.equal(first, torch.tensor([4, 1, 0]))
    assert torch.equal(keys[first][inverse], keys)


def _two_instance_case(size: int = 64):
    mask = torch.zeros((2, size, size), dtype=torch.uint8)
    mask[0, 4:30, 6:20] = 1
    mask[1, 20:50, 24:60] = 1
    boxes = torch.tensor([[6.0, 4, 20, 30], [24, 20, 60, 50]])
    return [
        {"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": mask},
        {"boxes": boxes[1:], "labels": torch.tensor([0]), "masks": mask[1:]},
    ]


def test_a_merge_that_ignores_params_runs_once_per_instance_with_the_same_loss_and_gradients(monkeypatch) -> None:
    """Mask R-CNN's merge reads only the RoI and the label, so the loss runs it once per instance: the loss and
    every gradient equal those of the merge run on each positive."""
    torch.manual_seed(0)
    model = build_segmenter(parse_spec("maskrcnn:R=8"), num_classes=3)
    targets = _two_instance_case()
    out = model(torch.randn(2, 3, 64, 64))
    points = level_points([tuple(x.shape[-2:]) for x in out.detections.class_logits])
    assigned = assign_fcos_targets(points, targets, size_ranges=P3_ONLY)  # every instance on P3: several positives
    chosen = select_mask_positives(assigned)
    assert len(chosen[0]) > 2 * 3  # several positives an instance: the case the sharing is for
    head, calls = model.mask_head, []
    merge = head.merge
    monkeypatch.setattr(head, "merge", lambda *args: calls.append(len(args[2])) or merge(*args))

    def loss_and_grads(shared: bool):
        monkeypatch.setattr(head, "merge_uses_params", not shared)
        loss = mask_head_loss(head, out.bottom, out.params, targets, assigned, *chosen)
        return loss, torch.autograd.grad(loss, list(head.parameters()), retain_graph=True)

    (shared, shared_grads), (each, each_grads) = loss_and_grads(True), loss_and_grads(False)
    assert calls == [3, len(chosen[0])]  # three instances in the batch, then every positive
    assert torch.allclose(shared, each, rtol=1e-6, atol=0)  # float32: equal up to the order of the sums
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(shared_grads, each_grads, strict=True))


def test_semantic_targets_are_per_class_unions_at_the_stride() -> None:
    masks = torch.zeros((3, 16, 16), dtype=torch.uint8)
    masks[0, :8, :8] = 1  # class 1
    masks[1, 4:8, 4:12] = 1  # class 1, overlapping the first
    masks[2, 8:, 8:] = 1  # class 0
    target = {"masks": masks, "labels": torch.tensor([1, 1, 0])}
    empty = {"masks": masks[:0], "labels": torch.zeros(0, dtype=torch.int64)}
    goal = semantic_targets([target, empty], num_classes=3, size=(16, 16), stride=8)
    assert goal.shape == (2, 3, 2, 2)
    assert goal[0, 1].tolist() == [[1.0, 0.25], [0.0, 0.0]]  # the union, not the sum
    assert goal[0, 0].tolist() == [[0.0, 0.0], [0.0, 1.0]]
    assert goal[0, 2].sum() == 0 and goal[1].sum() == 0


def test_semantic_class_targets_take_the_majority_label_with_background_first() -> None:
    masks = torch.zeros((2, 16, 16), dtype=torch.uint8)
    masks[0, :8, :5] = 1  # class 2 covers 5/8 of cell (0, 0)
    masks[1, 8:, 8:12] = 1  # class 0 covers half of cell (1, 1): a tie with background
    target = {"masks": masks, "labels": torch.tensor([2, 0])}
    empty = {"masks": masks[:0], "labels": torch.zeros(0, dtype=torch.int64)}
    goal = semantic_class_targets([target, empty], num_classes=3, size=(16, 16), stride=8)
    assert goal.dtype == torch.int64 and goal.shape == (2, 2, 2)
    assert goal[0].tolist() == [[3, 0], [0, 0]]  # class c is c + 1; the tie goes to background (0)
    assert goal[1].sum() == 0


def test_semantic_ce_loss_is_weighted_cross_entropy_over_c_plus_1() -> None:
    goal = torch.tensor([[[0, 3], [1, 2]]])  # (1, 2, 2)
    logits = torch.zeros((1, 4, 2, 2))
    assert semantic_ce_loss(logits, goal).item() == pytest.approx(0.3 * math.log(4), rel=1e-6)
    assert semantic_ce_loss(logits, goal, weight=1.0).item() == pytest.approx(math.log(4), rel=1e-6)
    perfect = torch.nn.functional.one_hot(goal, 4).permute(0, 3, 1, 2).float() * 50
    assert semantic_ce_loss(perfect, goal).item() == pytest.approx(0.0, abs=1e-6)
