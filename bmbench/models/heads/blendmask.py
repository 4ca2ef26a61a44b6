"""BlendMask (Chen et al., CVPR 2020): K bases for the image, a K×M×M attention per instance, and the blender.

Letters: B images, N instances, K bases, M attention side, R mask side, h×w the stride-4 map.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from bmbench.models.heads.base import BasisModule, MaskHead, roi_align_stride4


def blend(bases: Tensor, attentions: Tensor, rois: Tensor, *, M: int, R: int) -> Tensor:
    """The blender: RoIAlign the bases to R×R, upsample each attention M→R, softmax over K, weighted sum.

    ``bases: Tensor[B, K, h, w]`` (stride 4), ``attentions: Tensor[N, K*M*M]``, ``rois: Tensor[N, 5]``
    (batch index, x0, y0, x1, y1 in image pixels) -> mask logits ``Tensor[N, R, R]``.
    """
    K = bases.shape[1]
    pooled = roi_align_stride4(bases, rois, R)  # (N, K, R, R)
    attn = attentions.view(-1, K, M, M)  # (N, K, M, M)
    attn = F.interpolate(attn, size=(R, R), mode="bilinear", align_corners=False).softmax(dim=1)  # (N, K, R, R)
    return (pooled * attn).sum(dim=1)  # (N, R, R)


class BlendMaskHead(MaskHead):
    """Bottom: basis module (P3–P5 -> K bases at stride 4). Top: one 3x3 conv on the box tower -> K·M·M.
    Merge: :func:`blend`."""

    mask_form = "roi"

    def __init__(self, *, K: int, M: int, R: int, in_channels: int, tower_channels: int) -> None:
        super().__init__()
        self.K, self.M, self.R = K, M, R
        self.num_params = K * M * M
        self.basis = BasisModule(in_channels=in_channels, num_bases=K)
        self.attention = nn.Conv2d(tower_channels, self.num_params, 3, padding=1)
        nn.init.normal_(self.attention.weight, std=0.01)
        nn.init.zeros_(self.attention.bias)

    def bottom(self, features: dict[str, Tensor], image_size: tuple[int, int]) -> Tensor:
        return self.basis(features)  # (B, K, h, w)

    def top(self, box_tower: list[Tensor]) -> list[Tensor]:
        return [self.attention(level) for level in box_tower]  # (B, K*M*M, H_l, W_l) each

    def merge(self, bottom: Tensor, params: Tensor, rois: Tensor, labels: Tensor) -> Tensor:
        return blend(bottom, params, rois, M=self.M, R=self.R)


def build_blendmask_head(
    *, K: int, M: int, R: int, in_channels: int, tower_channels: int, num_classes: int
) -> BlendMaskHead:
    """BlendMask head (class-agnostic masks, so ``num_classes`` is unused)."""
    return BlendMaskHead(K=K, M=M, R=R, in_channels=in_channels, tower_channels=tower_channels)
