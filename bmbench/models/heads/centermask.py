"""CenterMask (Wang et al., CVPR 2020): one global saliency map times a per-instance S×S local shape.

The BlendMask family's K=1 case. Computed in R×R RoI form: mask = sigmoid(shape resized to R×R) ×
sigmoid(saliency RoI-aligned to R×R). Letters: B images, N instances, S local-shape side, R mask side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bmbench.models.heads.base import BASIS_LEVELS, BasisModule, MaskHead, roi_align_stride4


def product_logits(shape_logits: Tensor, saliency_logits: Tensor) -> Tensor:
    """The logit of sigmoid(a)·sigmoid(b), computed stably, so that BCE-with-logits on it is BCE on the product."""
    log_p = F.logsigmoid(shape_logits) + F.logsigmoid(saliency_logits)  # log(p), p = σ(a)σ(b)
    log_p = log_p.clamp(max=-1e-6)
    return log_p - torch.log(-torch.expm1(log_p))  # log(p / (1 - p))


def shape_times_saliency(saliency: Tensor, shapes: Tensor, rois: Tensor, *, S: int, R: int) -> Tensor:
    """``saliency: Tensor[B, 1, h, w]``, ``shapes: Tensor[N, S*S]``, ``rois: Tensor[N, 5]`` -> ``Tensor[N, R, R]``
    logits of the product mask."""
    pooled = roi_align_stride4(saliency, rois, R)  # (N, 1, R, R)
    local = F.interpolate(shapes.view(-1, 1, S, S), size=(R, R), mode="bilinear", align_corners=False)  # (N,1,R,R)
    return product_logits(local[:, 0], pooled[:, 0])


class CenterMaskHead(MaskHead):
    """Bottom: saliency branch (a basis module with one output). Top: 3x3 conv -> S·S local shape.
    Merge: :func:`shape_times_saliency`."""

    mask_form = "roi"

    def __init__(
        self, *, S: int, R: int, in_channels: int, tower_channels: int, basis_levels: tuple[str, ...] = BASIS_LEVELS
    ) -> None:
        super().__init__()
        self.S, self.R = S, R
        self.num_params = S * S
        self.saliency = BasisModule(in_channels=in_channels, num_bases=1, levels=basis_levels)
        self.shape = nn.Conv2d(tower_channels, self.num_params, 3, padding=1)

    def bottom(self, features: dict[str, Tensor], image_size: tuple[int, int]) -> Tensor:
        return self.saliency(features)  # (B, 1, h, w)

    def top(self, box_tower: list[Tensor]) -> list[Tensor]:
        return [self.shape(level) for level in box_tower]  # (B, S*S, H_l, W_l) each

    def merge(self, bottom: Tensor, params: Tensor, rois: Tensor, labels: Tensor) -> Tensor:
        return shape_times_saliency(bottom, params, rois, S=self.S, R=self.R)


def build_centermask_head(
    *,
    K: int,
    S: int,
    R: int,
    in_channels: int,
    tower_channels: int,
    num_classes: int,
    basis_levels: tuple[str, ...] = BASIS_LEVELS,
) -> CenterMaskHead:
    """CenterMask head (K is always 1; class-agnostic masks)."""
    return CenterMaskHead(S=S, R=R, in_channels=in_channels, tower_channels=tower_channels, basis_levels=basis_levels)
