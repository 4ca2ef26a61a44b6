"""PolarMask-style contour head: each location predicts A ray lengths, the merge rasterises the star-shaped polygon
softly into R×R mask logits inside the box.

Letters: B images, N instances, A rays (equally spaced angles, the first along +x), R mask side.

- bottom: nothing per image (the head reads no feature map but the box tower);
- top: a 3x3 conv on the box tower -> A ray lengths per location (before a softplus);
- merge: for every cell of the R×R grid over the box, its angle and distance from the box centre (in units of the
  box's half sides), the ray length at that angle interpolated between the two nearest rays, and the logit
  SHARPNESS · (ray length - distance): positive inside the polygon, negative outside, differentiable in the rays.

The mask loss is the roi form's BCE (the head declares no loss of its own), and the FLOPs of `bmbench variants`
are counted by torch.utils.flop_counter (the family gives no formula).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from bmbench.models.heads.base import MaskHead
from bmbench.plugins import Family

SHARPNESS = 8.0  # logit slope across the contour, per half box side


def polar_logits(rays: Tensor, *, R: int) -> Tensor:
    """``rays: Tensor[N, A]`` (ray lengths in half box sides, > 0) -> ``Tensor[N, R, R]`` logits over the box."""
    N, A = rays.shape
    coords = (torch.arange(R, device=rays.device, dtype=rays.dtype) + 0.5) / R * 2 - 1  # cell centres in [-1, 1]
    v, u = torch.meshgrid(coords, coords, indexing="ij")  # (R, R) each: y then x
    distance = torch.sqrt(u * u + v * v)  # (R, R)
    position = torch.remainder(torch.atan2(v, u), 2 * math.pi) / (2 * math.pi) * A  # (R, R) in ray units
    low = torch.floor(position).long() % A  # (R, R)
    frac = position - torch.floor(position)
    high = (low + 1) % A
    length = rays[:, low] * (1 - frac) + rays[:, high] * frac  # (N, R, R)
    return SHARPNESS * (length - distance)


class PolarMaskHead(MaskHead):
    """Bottom: none. Top: 3x3 conv -> A rays. Merge: :func:`polar_logits` on softplus(rays)."""

    mask_form = "roi"

    def __init__(self, *, A: int, R: int, tower_channels: int) -> None:
        super().__init__()
        self.A, self.R = A, R
        self.num_params = A
        self.rays = nn.Conv2d(tower_channels, A, 3, padding=1)
        nn.init.normal_(self.rays.weight, std=0.01)
        nn.init.constant_(self.rays.bias, 0.5)  # softplus(0.5) ~ 1: a disc filling the box at the start

    def bottom(self, features: dict[str, Tensor], image_size: tuple[int, int]) -> None:
        return None

    def top(self, box_tower: list[Tensor]) -> list[Tensor]:
        return [self.rays(level) for level in box_tower]  # (B, A, H_l, W_l) each

    def merge(self, bottom: None, params: Tensor, rois: Tensor, labels: Tensor) -> Tensor:
        return polar_logits(nnf.softplus(params), R=self.R)


def build_polarmask_head(
    *, A: int, R: int, in_channels: int, tower_channels: int, num_classes: int, basis_levels: tuple[str, ...] = ()
) -> PolarMaskHead:
    """The builder bmbench calls with the spec's fields and the trunk's widths (class-agnostic masks)."""
    return PolarMaskHead(A=A, R=R, tower_channels=tower_channels)


POLARMASK = Family(
    defaults={"A": 36, "R": 28},  # PolarMask's 36 rays
    fixed={},
    build=build_polarmask_head,
    summary="A ray lengths per location from the box centre, a soft star-shaped polygon in R×R RoIs",
)

# What `--plugin bmbench_polarmask.heads` (or a suite's plugins:) reads when the package is not installed.
BMBENCH_HEADS = {"polarmask": POLARMASK}
