"""Analytic memory of a speed point, from tensor sizes: the merge's working set (reported beside the CPU times,
where no allocator statistics exist) and an estimate of a whole sweep's peak, to refuse up front a request that
cannot fit on the machine at all.

Each stage's working set counts the tensors that are alive together at its peak in our formulation (inputs are
counted by the stage that creates them). Letters: N instances, K bases, M attention side, R mask side, S local-shape
side, C FPN channels, T tower channels, h×w the stride-4 map, H×W the image.
"""

from __future__ import annotations

import os

import torch

from bmbench.bench.cost import BASIS_CHANNELS, MASKRCNN_CHANNELS
from bmbench.errors import BmbenchError
from bmbench.models.backbone import TRUNKS, feature_shapes
from bmbench.models.fcos import DETECTOR_LEVELS
from bmbench.variants import VariantSpec

GIB = 2**30
NUM_CLASSES = 80  # the workload's classes (bench.workload.NUM_CLASSES)
STEM_CHANNELS = 64  # the ResNet stem at stride 2: the largest map of the end-to-end pass
BACKBONE_STRIDE4_MAPS = 4  # 256-channel stride-4 maps alive at once in the first ResNet stage (in, out, residual)


def _numel(shape: torch.Size) -> int:
    return int(torch.Size(shape).numel())


def input_bytes(image_size: tuple[int, int], *, trunk: str, dtype_bytes: int = 4) -> int:
    """The workload's FPN levels P2–P7 (C channels) and box tower on P3–P7 (T channels)."""
    sizes = TRUNKS[trunk]
    features = sum(_numel(s) for s in feature_shapes(image_size, sizes.fpn_channels).values())
    tower = feature_shapes(image_size, sizes.tower_channels)
    return (features + sum(_numel(tower[name]) for name in DETECTOR_LEVELS)) * dtype_bytes


def _stride4(image_size: tuple[int, int]) -> int:
    shape = feature_shapes(image_size, 1)["p2"]
    return int(shape[-2] * shape[-1])


def bottom_bytes(spec: VariantSpec, image_size: tuple[int, int], *, dtype_bytes: int = 4) -> int:
    """The basis module's peak at stride 4: the upsampled tower output, its conv's output and the K maps
    (Mask R-CNN has no bottom stage)."""
    if spec.family == "condinst":  # its branch runs at stride 8: a tower's two maps and the K output channels
        return (2 * BASIS_CHANNELS + spec.K) * (_stride4(image_size) // 4) * dtype_bytes
    K = {"blendmask": spec.K, "yolact": spec.K, "centermask": 1}.get(spec.family)
    if K is None:  # Mask R-CNN has no bottom stage; a plugin's own is not known here
        return 0
    return (2 * BASIS_CHANNELS + K) * _stride4(image_size) * dtype_bytes


def merge_working_set_bytes(
    spec: VariantSpec, *, num_instances: int, image_size: tuple[int, int], trunk: str = "r50", dtype_bytes: int = 4
) -> int:
    """Peak bytes of the tensors the merge holds at once, for N instances:

    - BlendMask (``blend``): the pooled bases, the half-upsampled and the upsampled attentions, their softmax and
      the product (N·K·R² each, N·K·R·M for the half step), the N·R² logits and the N·K·M² parameters;
    - YOLACT: the assembled N·h·w logits, the crop's mask and its output;
    - CenterMask: the pooled saliency, the upsampled shape, their product and the logits (N·R² each);
    - Mask R-CNN: the pooled N·C·(R/2)² features (and the pooler's per-level copy), then at the deconv the
      N·256·R² output, its ReLU and the N·80·R² class logits;
    - CondInst: every instance's input (K channels and 2 coordinates), the dynamic layers' F-channel maps and
      the logit at stride 8, and the logits upsampled to stride 4;
    - a plugin family: nothing (its stages are not known here; the estimate is then inputs and pasted masks).
    """
    N = num_instances
    if spec.family == "blendmask":
        K, M, R = spec.K, spec.M, spec.R
        elements = 4 * N * K * R * R + N * K * R * M + N * R * R + N * K * M * M
    elif spec.family == "yolact":
        elements = 3 * N * _stride4(image_size) + spec.K * N
    elif spec.family == "centermask":
        S, R = spec.S, spec.R
        elements = 4 * N * R * R + N * S * S
    elif spec.family == "condinst":
        stride8 = _stride4(image_size) // 4
        elements = N * (spec.K + 2 + 2 * spec.F + 1) * stride8 + N * _stride4(image_size)
    elif spec.family != "maskrcnn":
        elements = 0
    else:
        R, C, ch = spec.R, TRUNKS[trunk].fpn_channels, MASKRCNN_CHANNELS
        elements = 2 * N * C * (R // 2) ** 2 + N * R * R * (2 * ch + NUM_CLASSES)
    return elements * dtype_bytes


def paste_bytes(num_instances: int, image_size: tuple[int, int]) -> int:
    """The N×H×W boolean masks (the window's floats are small beside them)."""
    H, W = image_size
    return num_instances * H * W


def end_to_end_bytes(image_size: tuple[int, int], *, dtype_bytes: int = 4) -> int:
    """The backbone's largest maps: the stem at stride 2 and the first stage's 256-channel stride-4 maps."""
    H, W = (-(-side // 32) * 32 for side in image_size)
    return (STEM_CHANNELS * (H // 2) * (W // 2) + BACKBONE_STRIDE4_MAPS * 256 * (H // 4) * (W // 4)) * dtype_bytes


def point_peak_bytes(
    spec: VariantSpec, *, num_instances: int, image_size: tuple[int, int], trunk: str, dtype_bytes: int = 4
) -> int:
    """An estimate of one point's peak: inputs, the bottom's working set, the merge's and the pasted masks, as if
    all were alive at once (an upper bound on the mask branch)."""
    return (
        input_bytes(image_size, trunk=trunk, dtype_bytes=dtype_bytes)
        + bottom_bytes(spec, image_size, dtype_bytes=dtype_bytes)
        + merge_working_set_bytes(
            spec, num_instances=num_instances, image_size=image_size, trunk=trunk, dtype_bytes=dtype_bytes
        )
        + paste_bytes(num_instances, image_size)
    )


def memory_limit_bytes(device: torch.device) -> int:
    """What the device can hold at most: a GPU's total memory, or the host's physical memory."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def gib(count: float) -> str:
    """Bytes as GiB with three significant figures."""
    return f"{count / GIB:.3g} GiB"


def check_fits(
    specs: list[VariantSpec],
    *,
    instances: int,
    image_size: tuple[int, int],
    trunk: str,
    device: torch.device,
    dtype_bytes: int = 4,
    end_to_end: bool = False,
) -> int:
    """Refuse (BmbenchError, before anything is measured or written) a sweep whose largest point cannot fit on the
    device at all: its estimate (point_peak_bytes at the largest N, plus the backbone's maps for the end-to-end
    pass) above the device's whole memory. Returns the estimate. Points that fit this bound but still run out of
    memory are recorded as ``oom`` rows."""
    need = max(
        point_peak_bytes(spec, num_instances=instances, image_size=image_size, trunk=trunk, dtype_bytes=dtype_bytes)
        for spec in specs
    )
    need += end_to_end_bytes(image_size, dtype_bytes=dtype_bytes) if end_to_end else 0
    limit = memory_limit_bytes(device)
    if need > limit:
        H, W = image_size
        raise BmbenchError(
            f"--image-size {W}x{H}: the largest point needs about {gib(need)} (features, bottom, merge and pasted "
            f"masks at N={instances}) but the {device.type} has {gib(limit)} in all; use a smaller image or fewer "
            "instances"
        )
    return need
