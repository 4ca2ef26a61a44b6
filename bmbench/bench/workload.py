"""Speed workloads: a mask head with inputs of the right shapes, apart from the timer that measures it.

Letters: B images (always 1 here), N instances, D instance parameters per location, C FPN channels, T tower
channels, H×W the image, H_l×W_l a detector level's map.

A workload runs the mask branch as the model does at inference: ``bottom`` on the FPN features, ``top`` on the box
tower, each instance's parameters gathered from the top output at its location, ``merge``, ``paste``. Its ``run``
takes a ``section`` factory and wraps each stage in ``section(stage)``: the profiler passes ``record_function``
ranges, plain calls pass nothing. ``stage_calls`` gives each stage alone, on the inputs the previous stage
produced, for the timer to repeat on its own.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bmbench.models.backbone import LEVEL_STRIDES, TRUNKS, feature_shapes
from bmbench.models.fcos import DETECTOR_LEVELS
from bmbench.models.heads.base import MaskHead
from bmbench.models.segmenter import InstanceSegmenter
from bmbench.schema import MASK_STAGES  # noqa: F401 - re-exported: the stages a workload runs
from bmbench.variants import VariantSpec, build_segmenter

Section = Callable[[str], AbstractContextManager[Any]]
NUM_CLASSES = 80  # COCO: the Mask R-CNN head's per-class logits
# COCO's size categories (area < 32², < 96², larger) and their shares of instances (41 %, 34 %, 25 %), in pixels of
# a COCO image (short side ~480): scaled to the workload's image by (short side / 480)².
COCO_AREA_EDGES = (8.0**2, 32.0**2, 96.0**2)
COCO_AREA_SHARES = (0.41, 0.34, 0.25)
COCO_SHORT_SIDE = 480
MAX_AREA_FRACTION = 0.6  # the largest box covers 60 % of the image
# FCOS assigns an instance to the level whose regression range holds its largest centre distance (P3..P7).
FCOS_SIZE_RANGES = (64, 128, 256, 512)


def no_section(stage: str) -> AbstractContextManager[Any]:
    """The section factory for untimed, unprofiled runs."""
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Instances:
    """N boxes as the mask branch receives them, with the detector location each was predicted at."""

    rois: Tensor  # Tensor[N, 5] float32: batch index, x0, y0, x1, y1 in image pixels
    labels: Tensor  # Tensor[N] int64 class indices
    levels: Tensor  # Tensor[N] int64: index into DETECTOR_LEVELS
    locations: Tensor  # Tensor[N] int64: flat index y * W_l + x into the level's map

    def __len__(self) -> int:
        return self.rois.shape[0]

    def head(self, num: int) -> Instances:
        """The first ``num`` instances (samples are nested: N=10 is a prefix of N=100)."""
        return Instances(self.rois[:num], self.labels[:num], self.levels[:num], self.locations[:num])


def sample_instances(
    num: int, image_size: tuple[int, int], *, seed: int, device: torch.device | str = "cpu"
) -> Instances:
    """``num`` boxes with a COCO-like size mix inside an image of ``image_size`` (H, W), seeded.

    Area: a COCO size category drawn by its share, then log-uniform inside it; aspect ratio w/h log-uniform in
    [0.5, 2]; the box lies inside the image. Row i depends only on (seed, i), so smaller N are prefixes of larger.
    """
    H, W = image_size
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand((num, 6), generator=generator, dtype=torch.float64)  # one row of draws per instance
    scale = (min(H, W) / COCO_SHORT_SIDE) ** 2
    edges = [edge * scale for edge in COCO_AREA_EDGES] + [MAX_AREA_FRACTION * H * W]
    edges = [min(edge, edges[-1]) for edge in edges]
    bounds = torch.tensor(COCO_AREA_SHARES, dtype=torch.float64).cumsum(0)
    category = torch.bucketize(u[:, 0] * bounds[-1], bounds).clamp(max=2)  # 0 small, 1 medium, 2 large
    low = torch.tensor(edges[:3], dtype=torch.float64)[category].log()
    high = torch.tensor(edges[1:], dtype=torch.float64)[category].log()
    area = (low + u[:, 1] * (high - low)).exp()
    aspect = (math.log(0.5) + u[:, 2] * math.log(4.0)).exp()  # w / h
    w = (area * aspect).sqrt().clamp(1.0, W)
    h = (area / aspect).sqrt().clamp(1.0, H)
    x0 = u[:, 3] * (W - w)
    y0 = u[:, 4] * (H - h)
    boxes = torch.stack((x0, y0, x0 + w, y0 + h), dim=1)  # (N, 4)
    rois = torch.cat((torch.zeros((num, 1), dtype=torch.float64), boxes), dim=1).float()  # (N, 5)
    labels = (u[:, 5] * NUM_CLASSES).long().clamp(max=NUM_CLASSES - 1)
    levels, locations = detector_locations(rois, image_size)
    return Instances(rois.to(device), labels.to(device), levels.to(device), locations.to(device))


def detector_locations(rois: Tensor, image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Where FCOS would predict each box: the level by its size, the location under its centre.

    ``rois: Tensor[N, 5]`` -> (levels ``Tensor[N]``, flat locations ``Tensor[N]``) on the padded image's levels.
    """
    shapes = feature_shapes(image_size, 1)
    x0, y0, x1, y1 = rois[:, 1:].unbind(1)
    reach = torch.maximum(x1 - x0, y1 - y0) / 2  # the largest regression distance at the centre
    levels = torch.bucketize(reach, torch.tensor(FCOS_SIZE_RANGES, dtype=reach.dtype))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    locations = torch.empty_like(levels)
    for index, name in enumerate(DETECTOR_LEVELS):
        stride, (h_l, w_l) = LEVEL_STRIDES[name], shapes[name][-2:]
        x = (cx / stride).long().clamp(0, w_l - 1)
        y = (cy / stride).long().clamp(0, h_l - 1)
        locations = torch.where(levels == index, y * w_l + x, locations)
    return levels, locations


def gather_params(top: list[Tensor], instances: Instances) -> Tensor:
    """Each instance's parameters from the top stage's output at its location: ``top[l]: Tensor[1, D, H_l, W_l]``
    -> ``Tensor[N, D]``."""
    num_params = top[0].shape[1]
    params = top[0].new_empty((len(instances), num_params))
    for index, level in enumerate(top):
        chosen = (instances.levels == index).nonzero().squeeze(1)
        if chosen.numel():
            flat = level[0].flatten(1)  # (D, H_l*W_l)
            params[chosen] = flat[:, instances.locations[chosen]].t()  # (n_l, D)
    return params


def random_inputs(
    image_size: tuple[int, int], *, trunk: str, seed: int, device: torch.device, dtype: torch.dtype
) -> tuple[dict[str, Tensor], list[Tensor]]:
    """Seeded stand-ins for the FPN levels P2–P7 (``Tensor[1, C, H_l, W_l]``) and the box tower on P3–P7
    (``Tensor[1, T, H_l, W_l]``, after a ReLU as in the real tower), drawn on the CPU so every device sees the same
    values."""
    sizes = TRUNKS[trunk]
    generator = torch.Generator().manual_seed(seed + 1)
    features = {
        name: torch.randn(shape, generator=generator).to(device, dtype)
        for name, shape in feature_shapes(image_size, sizes.fpn_channels).items()
    }
    tower_shapes = feature_shapes(image_size, sizes.tower_channels)
    box_tower = [
        torch.randn(tower_shapes[name], generator=generator).relu_().to(device, dtype) for name in DETECTOR_LEVELS
    ]
    return features, box_tower


def build_mask_head(spec: VariantSpec, *, trunk: str, seed: int, device: torch.device, dtype: torch.dtype) -> MaskHead:
    """The variant's mask head at the trunk's widths, seeded (without touching the global RNG), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = spec.build(trunk=trunk, num_classes=NUM_CLASSES)
    return head.eval().to(device, dtype)


def compile_stages(head: MaskHead) -> dict[str, Callable[..., Any]]:
    """``torch.compile`` each of the head's own stages (bottom, top, merge); paste stays eager. Compilation happens
    at the first call, so failures surface there."""
    return {stage: torch.compile(getattr(head, stage)) for stage in ("bottom", "top", "merge")}


FirstCall = Callable[[str, Callable[[], Any]], Any]  # first(stage, fn) -> fn(): how a stage's first call is made


@dataclass
class MaskBranchWorkload:
    """The mask branch of one variant on one image with N instances."""

    head: MaskHead
    features: dict[str, Tensor]  # FPN P2–P7
    box_tower: list[Tensor]  # P3–P7
    instances: Instances
    image_size: tuple[int, int]  # H, W
    stages: dict[str, Callable[..., Any]] | None = None  # replacements for the head's stages (compiled ones)

    def stage_fn(self, name: str) -> Callable[..., Any]:
        return (self.stages or {}).get(name) or getattr(self.head, name)

    def run(self, section: Section = no_section) -> Tensor:
        """The whole branch; ``merge`` includes gathering each instance's parameters. -> ``Tensor[N, H, W]`` bool."""
        return run_mask_branch(self, self.features, self.box_tower, section)

    def stage_calls(self, first: FirstCall | None = None) -> dict[str, Callable[[], Any]]:
        """Each stage as a call without arguments on the inputs the previous stage produced (the stages run once
        here, in order, to produce them, and paste once after them): bottom on the features, top on the box tower,
        merge (with the parameter gather) on their outputs, paste on the merge's logits. Each call runs under
        inference mode. ``first(stage, fn)``, when given, makes each of those first calls and returns fn's output
        (the sweep times them: they are its warm-up)."""
        instances, image_size = self.instances, self.image_size
        first = first or (lambda stage, fn: fn())
        with torch.inference_mode():
            bottom = first("bottom", lambda: self.stage_fn("bottom")(self.features, image_size))
            top = first("top", lambda: self.stage_fn("top")(self.box_tower))
            logits = first(
                "merge",
                lambda: self.stage_fn("merge")(bottom, gather_params(top, instances), instances.rois, instances.labels),
            )
            first("paste", lambda: self.stage_fn("paste")(logits, instances.rois, image_size))

        def inference(fn: Callable[[], Any]) -> Callable[[], Any]:
            def call() -> Any:
                with torch.inference_mode():
                    return fn()

            return call

        return {
            "bottom": inference(lambda: self.stage_fn("bottom")(self.features, image_size)),
            "top": inference(lambda: self.stage_fn("top")(self.box_tower)),
            "merge": inference(
                lambda: self.stage_fn("merge")(bottom, gather_params(top, instances), instances.rois, instances.labels)
            ),
            "paste": inference(lambda: self.stage_fn("paste")(logits, instances.rois, image_size)),
        }

    def merge_inputs(self) -> tuple[Any, Tensor]:
        """The bottom output and the gathered ``params: Tensor[N, D]``, for timing the merge alone."""
        with torch.inference_mode():
            bottom = self.stage_fn("bottom")(self.features, self.image_size)
            params = gather_params(self.stage_fn("top")(self.box_tower), self.instances)
        return bottom, params


def run_mask_branch(
    workload: MaskBranchWorkload, features: dict[str, Tensor], box_tower: list[Tensor], section: Section
) -> Tensor:
    """bottom -> top -> gather + merge -> paste, each stage inside ``section(stage)``, under inference mode."""
    instances, image_size = workload.instances, workload.image_size
    with torch.inference_mode():
        with section("bottom"):
            bottom = workload.stage_fn("bottom")(features, image_size)
        with section("top"):
            top = workload.stage_fn("top")(box_tower)
        with section("merge"):
            params = gather_params(top, instances)
            logits = workload.stage_fn("merge")(bottom, params, instances.rois, instances.labels)
        with section("paste"):
            return workload.stage_fn("paste")(logits, instances.rois, image_size)


@dataclass
class EndToEndWorkload:
    """The whole model on one image: backbone + FPN + FCOS (the ``detector`` section), then the mask branch of
    ``branch`` on the detector's own features and box tower. Box decoding and NMS are not included: the instances
    are the workload's."""

    model: InstanceSegmenter
    images: Tensor  # Tensor[1, 3, H_pad, W_pad], the image padded to a multiple of 32 as the model sees it
    branch: MaskBranchWorkload

    def run(self, section: Section = no_section) -> Tensor:
        with torch.inference_mode():
            with section("detector"):
                features = self.model.backbone(self.images)
                detections = self.model.detector(features)
            return run_mask_branch(self.branch, features, detections.box_tower, section)


def build_end_to_end(
    spec: VariantSpec,
    branch: MaskBranchWorkload,
    *,
    trunk: str,
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
) -> EndToEndWorkload:
    """The variant's whole model (``build_segmenter``) around an existing mask-branch workload's head and instances."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_segmenter(spec, trunk=trunk, num_classes=NUM_CLASSES)
    model.mask_head = branch.head  # the same head (and weights) the mask-branch rows timed
    model = model.eval().to(device, dtype)
    H, W = (-(-side // 32) * 32 for side in branch.image_size)
    generator = torch.Generator().manual_seed(seed + 2)
    images = torch.randn((1, 3, H, W), generator=generator).to(device, dtype)
    return EndToEndWorkload(model=model, images=images, branch=branch)
