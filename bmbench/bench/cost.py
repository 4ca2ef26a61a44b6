"""Analytic cost of each mask-head stage: FLOPs and bytes, in closed form from the spec and the trunk widths.

Conventions (those of ``torch.utils.flop_counter.FlopCounterMode``, which a test checks them against):
a multiply-add is 2 FLOPs; ``conv`` counts convolutions, deconvolutions and matmuls (biases excluded).
``elementwise`` is counted here only, per output element: a bilinear sample 7 (4 mul + 3 add), a softmax term
3 (exp, add, div), a multiply-sum 2, a sigmoid product 5, a threshold 1.

Letters: N instances, K bases, M attention side, R mask side, S local-shape side, C FPN channels, T tower channels,
h×w the stride-4 map, H_l×W_l a level's map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from bmbench.bench.workload import build_mask_head, gather_params, random_inputs, sample_instances
from bmbench.models.backbone import TRUNKS, feature_shapes
from bmbench.models.fcos import DETECTOR_LEVELS
from bmbench.models.heads.condinst import dynamic_layer_shapes, num_dynamic_params
from bmbench.variants import FAMILIES, VariantSpec

BASIS_CHANNELS = 128  # the basis module's width (BasisModule default)
MASKRCNN_CHANNELS = 256  # the Mask R-CNN head's conv width
REFERENCE_IMAGE = (800, 1088)  # H, W: the reference size of `bmbench variants`
REFERENCE_INSTANCES = 100
REFERENCE_CLASSES = 80  # COCO
CONDINST_BRANCH_CHANNELS = 128  # the CondInst mask branch's width (its refine convs and tower)
CONDINST_BRANCH_CONVS = 4  # its tower
BUILT_IN_FORMULAS = ("blendmask", "yolact", "centermask", "condinst", "maskrcnn")  # the families stage_costs knows
STAGES = ("bottom", "top", "merge", "paste")


@dataclass(frozen=True)
class StageCost:
    conv: int  # FLOPs of convolutions and matmuls (what FlopCounterMode counts)
    elementwise: int  # FLOPs of sampling, softmax and products, by the per-element counts above

    @property
    def total(self) -> int:
        return self.conv + self.elementwise


def _conv(cin: int, cout: int, k: int, hw: int) -> int:
    return 2 * cin * cout * k * k * hw


def _basis_flops(C: int, K: int, hw: dict[str, int], levels: tuple[str, ...]) -> int:
    """The basis module's convs: a refine conv per level from P3 on, the tower at P3, (P2's lateral conv,) the
    stride-4 conv and the 1x1 predictor."""
    ch = BASIS_CHANNELS
    stride4 = 4 * hw["p3"]
    refine = sum(_conv(C, ch, 3, hw[level]) for level in levels if level != "p2")
    lateral = _conv(C, ch, 3, stride4) if levels[0] == "p2" else 0
    tower = 3 * _conv(ch, ch, 3, hw["p3"])
    return refine + tower + lateral + _conv(ch, ch, 3, stride4) + _conv(ch, K, 1, stride4)


def stage_costs(
    spec: VariantSpec,
    *,
    image_size: tuple[int, int] = REFERENCE_IMAGE,
    num_instances: int = REFERENCE_INSTANCES,
    trunk: str = "r50",
) -> dict[str, StageCost]:
    """Cost of ``bottom``, ``top``, ``merge`` and ``paste`` for one image of ``image_size`` (H, W) and N instances
    (no stage's cost depends on the number of classes: the Mask R-CNN head predicts each instance's class only)."""
    sizes = TRUNKS[trunk]
    C, T, N = sizes.fpn_channels, sizes.tower_channels, num_instances
    hw = {name: shape[-2] * shape[-1] for name, shape in feature_shapes(image_size, C).items()}
    tower_hw = sum(hw[level] for level in DETECTOR_LEVELS)
    stride4 = 4 * hw["p3"]
    H, W = image_size
    paste = StageCost(0, N * H * W * (7 + 1))
    if spec.family == "blendmask":
        K, M, R = spec.K, spec.M, spec.R
        bottom = StageCost(_basis_flops(C, K, hw, sizes.basis_levels), 0)
        top = StageCost(_conv(T, K * M * M, 3, tower_hw), 0)
        # Upsampling as two matmuls per (instance, basis): (R×M)(M×M) then (R×M)(M×R); then roi_align's bilinear
        # sample (7 per element), softmax over K (3) and the weighted sum (2).
        merge = StageCost(N * K * 2 * R * M * (M + R), N * K * R * R * (7 + 3 + 2))
    elif spec.family == "yolact":
        K = spec.K
        bottom = StageCost(_basis_flops(C, K, hw, sizes.basis_levels), 0)
        top = StageCost(_conv(T, K, 3, tower_hw), 0)
        merge = StageCost(2 * N * K * stride4, N * stride4)  # matmul, then the crop
    elif spec.family == "centermask":
        S, R = spec.S, spec.R
        bottom = StageCost(_basis_flops(C, 1, hw, sizes.basis_levels), 0)
        top = StageCost(_conv(T, S * S, 3, tower_hw), 0)
        merge = StageCost(0, N * R * R * (7 + 7 + 5))
    elif spec.family == "condinst":
        K, L, F = spec.K, spec.L, spec.F
        hw3, ch = hw["p3"], CONDINST_BRANCH_CHANNELS
        refine = sum(_conv(C, ch, 3, hw[level]) for level in ("p3", "p4", "p5"))
        bottom = StageCost(refine + CONDINST_BRANCH_CONVS * _conv(ch, ch, 3, hw3) + _conv(ch, K, 1, hw3), 0)
        top = StageCost(_conv(T, num_dynamic_params(K=K, L=L, F=F), 3, tower_hw), 0)
        # The grouped 1x1 convs at stride 8, per instance; then the relative coordinates (a subtract and a divide
        # per coordinate and cell), the ReLUs between layers, the x2 bilinear upsampling to stride 4.
        dynamic = sum(_conv(cin, out, 1, hw3) for out, cin in dynamic_layer_shapes(K=K, L=L, F=F))
        merge = StageCost(N * dynamic, N * (hw3 * (2 * 2 + (L - 1) * F) + stride4 * 7))
    elif spec.family == "maskrcnn":
        R, ch = spec.R, MASKRCNN_CHANNELS
        half = (R // 2) ** 2
        convs = _conv(C, ch, 3, half) + 3 * _conv(ch, ch, 3, half)
        deconv = 2 * ch * ch * 4 * half  # 2x2 stride-2: every input pixel feeds a 2x2 output patch
        bottom, top = StageCost(0, 0), StageCost(0, 0)
        # RoIAlign with sampling_ratio=2: 4 bilinear samples and their mean per output element.
        # the 1x1 predictor runs for each instance's own class only (one dot product per pixel)
        merge = StageCost(N * (convs + deconv + _conv(ch, 1, 1, R * R)), N * C * half * (4 * 7 + 4))
    else:  # a plugin's family: its own formula, else FLOPs counted by torch.utils.flop_counter on a run
        return plugin_stage_costs(spec, image_size=image_size, num_instances=N, trunk=trunk)
    return {"bottom": bottom, "top": top, "merge": merge, "paste": paste}


def has_formula(spec: VariantSpec) -> bool:
    """Whether `stage_costs` is a closed form for this family (built in, or a plugin with a FLOP formula), rather
    than a count of a run's FLOPs with FlopCounterMode."""
    return spec.family in BUILT_IN_FORMULAS or FAMILIES[spec.family].flops is not None


def plugin_stage_costs(
    spec: VariantSpec, *, image_size: tuple[int, int], num_instances: int, trunk: str
) -> dict[str, StageCost]:
    """A plugin family's stage costs: its ``Family.flops`` formula when it has one (all counted as ``conv``), else
    the FLOPs that ``torch.utils.flop_counter.FlopCounterMode`` counts in one run of each stage on seeded inputs
    (convolutions and matmuls only, as the formulas' ``conv``)."""
    sizes = TRUNKS[trunk]
    formula = FAMILIES[spec.family].flops
    if formula is not None:
        hw = {name: shape[-2] * shape[-1] for name, shape in feature_shapes(image_size, 1).items()}
        values = formula(
            **spec.params,
            hw=hw,
            in_channels=sizes.fpn_channels,
            tower_channels=sizes.tower_channels,
            num_instances=num_instances,
        )
        return {stage: StageCost(int(values.get(stage, 0)), 0) for stage in STAGES}
    device, dtype = torch.device("cpu"), torch.float32
    head = build_mask_head(spec, trunk=trunk, seed=0, device=device, dtype=dtype)
    features, box_tower = random_inputs(image_size, trunk=trunk, seed=0, device=device, dtype=dtype)
    instances = sample_instances(num_instances, image_size, seed=0, device=device)
    counted = {}
    with torch.inference_mode():
        for stage in STAGES:
            with FlopCounterMode(display=False) as counter:
                if stage == "bottom":
                    bottom = head.bottom(features, image_size)
                elif stage == "top":
                    top = head.top(box_tower)
                elif stage == "merge":
                    logits = head.merge(bottom, gather_params(top, instances), instances.rois, instances.labels)
                else:
                    head.paste(logits, instances.rois, image_size)
            counted[stage] = StageCost(int(counter.get_total_flops()), 0)
    return counted


def merge_bytes(
    spec: VariantSpec,
    *,
    num_instances: int,
    image_size: tuple[int, int],
    trunk: str = "r50",
    dtype_bytes: int = 4,
) -> int:
    """Bytes the merge stage reads and writes, tensor by tensor, in the plain formulation (each op reads its inputs
    and writes its output once; caches ignored). Used for the merge's effective bandwidth."""
    N = num_instances
    h, w = (-(-side // 32) * 8 for side in image_size)  # stride-4 map of the padded image
    if spec.family == "blendmask":
        K, M, R = spec.K, spec.M, spec.R
        pooled = N * K * R * R
        # roi_align: read ~4 taps, write; interpolate: read M², write; softmax: read, write; mul: 2 reads, write;
        # sum: read, write N·R².
        elements = 5 * pooled + (N * K * M * M + pooled) + 2 * pooled + 3 * pooled + pooled + N * R * R
    elif spec.family == "yolact":
        K = spec.K
        elements = K * h * w + N * K + 2 * N * h * w + N * h * w  # matmul reads protos and coeffs; crop reads, writes
    elif spec.family == "centermask":
        S, R = spec.S, spec.R
        elements = 5 * N * R * R + (N * S * S + N * R * R) + 3 * N * R * R
    elif spec.family == "condinst":
        K, L, F = spec.K, spec.L, spec.F
        h8, w8 = h // 2, w // 2
        # inputs: coordinates and the instance's copy of the branch, each layer reads and writes, upsample
        layers = sum(cin + out for out, cin in dynamic_layer_shapes(K=K, L=L, F=F))
        elements = N * h8 * w8 * (2 + 2 * K + layers) + N * (h8 * w8 + h * w)
    elif spec.family == "maskrcnn":
        R, C, ch = spec.R, TRUNKS[trunk].fpn_channels, MASKRCNN_CHANNELS
        half = (R // 2) ** 2
        elements = N * (C * half * 5 + 4 * ch * half * 2 + ch * half + ch * R * R * 2 + R * R)
    else:
        raise KeyError(f"no byte count for family {spec.family} (a plugin's merge has no formula of bytes)")
    return elements * dtype_bytes


def describe(
    specs: list[VariantSpec],
    *,
    image_size: tuple[int, int] = REFERENCE_IMAGE,
    num_instances: int = REFERENCE_INSTANCES,
    trunk: str = "r50",
    num_classes: int = REFERENCE_CLASSES,
) -> list[dict[str, object]]:
    """One row per spec: K, M, R, S, mask-branch parameters and each stage's GFLOPs at the given size."""
    rows = []
    for spec in specs:
        head = spec.build(trunk=trunk, num_classes=num_classes)
        costs = stage_costs(spec, image_size=image_size, num_instances=num_instances, trunk=trunk)
        row: dict[str, object] = {"variant": spec.name, "spec": str(spec), "family": spec.family}
        row |= {key: getattr(spec, key) for key in ("K", "M", "R", "S")}
        row["mask_params"] = sum(p.numel() for p in head.parameters())
        row["flops_from"] = "formula" if has_formula(spec) else "flop_counter"
        row |= {f"{stage}_gflops": round(cost.total / 1e9, 4) for stage, cost in costs.items()}
        row["total_gflops"] = round(sum(cost.total for cost in costs.values()) / 1e9, 4)
        rows.append(row)
    return rows
