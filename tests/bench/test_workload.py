"""Speed workloads: seeded COCO-like boxes, the parameter gather, and every family's branch end to end."""

from __future__ import annotations

import pytest
import torch

from bmbench.bench.workload import (
    MASK_STAGES,
    MaskBranchWorkload,
    build_end_to_end,
    build_mask_head,
    detector_locations,
    gather_params,
    random_inputs,
    sample_instances,
)
from bmbench.models.backbone import feature_shapes
from bmbench.models.fcos import DETECTOR_LEVELS
from bmbench.variants import FAMILY_PRESETS, PRESETS, parse_spec

CPU = torch.device("cpu")
IMAGE = (96, 128)  # H, W


def test_boxes_are_seeded_nested_inside_the_image_and_of_mixed_sizes() -> None:
    H, W = 800, 1088
    many = sample_instances(2000, (H, W), seed=3)
    again = sample_instances(2000, (H, W), seed=3)
    few = sample_instances(10, (H, W), seed=3)
    assert torch.equal(many.rois, again.rois) and torch.equal(many.labels, again.labels)
    assert torch.equal(few.rois, many.rois[:10]) and torch.equal(few.labels, many.labels[:10])
    assert not torch.equal(sample_instances(10, (H, W), seed=4).rois, few.rois)
    rois = many.rois
    assert (rois[:, 0] == 0).all()
    assert (rois[:, 1] >= 0).all() and (rois[:, 2] >= 0).all()
    assert (rois[:, 3] <= W).all() and (rois[:, 4] <= H).all()
    w, h = rois[:, 3] - rois[:, 1], rois[:, 4] - rois[:, 2]
    assert (w > 0).all() and (h > 0).all()
    aspect = w / h
    assert aspect.min() >= 0.49 and aspect.max() <= 2.01  # log-uniform 0.5–2 (unless clipped by the image)
    # COCO-like: a good share of small boxes (< 32² COCO pixels, ~53² here) and of large ones; several levels used.
    side = (w * h).sqrt()
    assert 0.3 < (side < 53).float().mean() < 0.5
    assert 0.15 < (side > 160).float().mean() < 0.35
    assert len(many.levels.unique()) >= 4
    assert many.labels.min() >= 0 and many.labels.max() < 80


def test_locations_lie_under_the_box_centre_on_its_level() -> None:
    instances = sample_instances(300, IMAGE, seed=0)
    shapes = feature_shapes(IMAGE, 1)
    for roi, level, location in zip(instances.rois, instances.levels, instances.locations, strict=True):
        h_l, w_l = shapes[DETECTOR_LEVELS[level]][-2:]
        stride = 2 ** (int(level) + 3)
        y, x = divmod(int(location), w_l)
        assert 0 <= y < h_l and 0 <= x < w_l
        cx, cy = (roi[1] + roi[3]) / 2, (roi[2] + roi[4]) / 2
        assert x == min(int(cx // stride), w_l - 1) and y == min(int(cy // stride), h_l - 1)
    levels, locations = detector_locations(instances.rois, IMAGE)
    assert torch.equal(levels, instances.levels) and torch.equal(locations, instances.locations)


def test_gather_reads_each_instance_at_its_location() -> None:
    instances = sample_instances(40, IMAGE, seed=1)
    shapes = feature_shapes(IMAGE, 6)
    top = [torch.randn(shapes[name]) for name in DETECTOR_LEVELS]
    params = gather_params(top, instances)
    assert params.shape == (40, 6)
    for i in range(40):
        level = top[int(instances.levels[i])]
        y, x = divmod(int(instances.locations[i]), level.shape[-1])
        assert torch.equal(params[i], level[0, :, y, x])
    empty = gather_params([t[:, :0] for t in top], instances)  # Mask R-CNN: D = 0
    assert empty.shape == (40, 0)


@pytest.mark.parametrize("preset", FAMILY_PRESETS)
def test_every_family_runs_its_branch_and_sections(preset: str) -> None:
    spec = PRESETS[preset] if preset != "yolact" else parse_spec("yolact:K=4")
    if spec.R is not None:
        spec = spec.with_params(R=8) if preset == "maskrcnn" else spec.with_params(R=8, **({"M": 2} if spec.M else {}))
    head = build_mask_head(spec, trunk="small", seed=0, device=CPU, dtype=torch.float32)
    features, box_tower = random_inputs(IMAGE, trunk="small", seed=0, device=CPU, dtype=torch.float32)
    workload = MaskBranchWorkload(head, features, box_tower, sample_instances(5, IMAGE, seed=0), IMAGE)
    seen: list[str] = []

    def section(stage: str):
        seen.append(stage)
        return torch.autograd.profiler.record_function(stage)

    masks = workload.run(section)
    assert seen == list(MASK_STAGES)
    assert masks.shape == (5, *IMAGE) and masks.dtype == torch.bool
    # The gathered merge equals the head's own merge on the same params.
    bottom, params = workload.merge_inputs()
    assert params.shape == (5, head.num_params)
    with torch.inference_mode():
        logits = head.merge(bottom, params, workload.instances.rois, workload.instances.labels)
        assert torch.equal(head.paste(logits, workload.instances.rois, IMAGE), masks)
    # Seeded weights: the same head twice.
    again = build_mask_head(spec, trunk="small", seed=0, device=CPU, dtype=torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(head.parameters(), again.parameters(), strict=True))


def test_end_to_end_runs_detector_then_branch() -> None:
    spec = parse_spec("blendmask:K=2,M=2,R=8")
    head = build_mask_head(spec, trunk="small", seed=0, device=CPU, dtype=torch.float32)
    features, box_tower = random_inputs(IMAGE, trunk="small", seed=0, device=CPU, dtype=torch.float32)
    branch = MaskBranchWorkload(head, features, box_tower, sample_instances(3, IMAGE, seed=0), IMAGE)
    whole = build_end_to_end(spec, branch, trunk="small", seed=0, device=CPU, dtype=torch.float32)
    assert whole.model.mask_head is head and whole.images.shape == (1, 3, 96, 128)
    seen: list[str] = []

    def section(stage: str):
        seen.append(stage)
        return torch.autograd.profiler.record_function(stage)

    assert whole.run(section).shape == (3, *IMAGE)
    assert seen == ["detector", *MASK_STAGES]
