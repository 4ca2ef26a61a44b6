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

from bmbench.models.backbone import TRUNKS, feature_shapes
from bmbench.models.fcos import DETECTOR_LEVELS
from bmbench.variants import VariantSpec

BASIS_CHANNELS = 128  # the basis module's width (BasisModule default)
MASKRCNN_CHANNELS = 256  # the Mask R-CNN head's conv width
REFERENCE_IMAGE = (800, 1088)  # H, W: the reference size of `bmbench variants`
REFERENCE_INSTANCES = 100
REFERENCE_CLASSES = 80  # COCO


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
    elif spec.family == "maskrcnn":
        R, ch = spec.R, MASKRCNN_CHANNELS
        half = (R // 2) ** 2
        convs = _conv(C, ch, 3, half) + 3 * _conv(ch, ch, 3, half)
        deconv = 2 * ch * ch * 4 * half  # 2x2 stride-2: every input pixel feeds a 2x2 output patch
        bottom, top = StageCost(0, 0), StageCost(0, 0)
        # RoIAlign with sampling_ratio=2: 4 bilinear samples and their mean per output element.
        # the 1x1 predictor runs for each instance's own class only (one dot product per pixel)
        merge = StageCost(N * (convs + deconv + _conv(ch, 1, 1, R * R)), N * C * half * (4 * 7 + 4))
    else:  # pragma: no cover - FAMILIES and this function move together
        raise KeyError(spec.family)
    return {"bottom": bottom, "top": top, "merge": merge, "paste": paste}


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
    else:
        R, C, ch = spec.R, TRUNKS[trunk].fpn_channels, MASKRCNN_CHANNELS
        half = (R // 2) ** 2
        elements = N * (C * half * 5 + 4 * ch * half * 2 + ch * half + ch * R * R * 2 + R * R)
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
        row |= {f"{stage}_gflops": round(cost.total / 1e9, 4) for stage, cost in costs.items()}
        row["total_gflops"] = round(sum(cost.total for cost in costs.values()) / 1e9, 4)
        rows.append(row)
    return rows
