"""BlendMask (Chen et al., CVPR 2020): K bases for the image, a K×M×M attention per instance, and the blender.

Letters: B images, N instances, K bases, M attention side, R mask side, h×w the stride-4 map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bmbench.models.heads.base import BASIS_LEVELS, BasisModule, MaskHead, roi_align_stride4


def interpolation_matrix(size_in: int, size_out: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``Tensor[size_out, size_in]``: 1-D linear interpolation (align_corners=False) as a matrix, so that bilinear
    upsampling of ``x: Tensor[..., M, M]`` to R×R is ``A @ x @ A.T``."""
    eye = torch.eye(size_in, dtype=torch.float32, device=device)[None]  # (1, M, M): one impulse per channel
    return F.interpolate(eye, size=size_out, mode="linear", align_corners=False)[0].t().to(dtype)  # (R, M)


def blend(bases: Tensor, attentions: Tensor, rois: Tensor, *, M: int, R: int) -> Tensor:
    """The blender: RoIAlign the bases to R×R, upsample each attention M→R, softmax over K, weighted sum.

    ``bases: Tensor[B, K, h, w]`` (stride 4), ``attentions: Tensor[N, K*M*M]``, ``rois: Tensor[N, 5]``
    (batch index, x0, y0, x1, y1 in image pixels) -> mask logits ``Tensor[N, R, R]``.

    The bilinear upsampling (align_corners=False) is computed as two small matrix products with the interpolation
    matrix: the same values as ``F.interpolate`` (tests/models/test_heads.py), and faster on the CPU at K=4, M=7, R=56
    (``bmbench speed --check`` compares the formulations).
    """
    K = bases.shape[1]
    pooled = roi_align_stride4(bases, rois, R)  # (N, K, R, R)
    A = interpolation_matrix(M, R, dtype=attentions.dtype, device=attentions.device)  # (R, M)
    attn = torch.matmul(torch.matmul(A, attentions.view(-1, K, M, M)), A.t())  # (N, K, R, R)
    return (pooled * attn.softmax(dim=1)).sum(dim=1)  # (N, R, R)


class BlendMaskHead(MaskHead):
    """Bottom: basis module (P3–P5 -> K bases at stride 4). Top: one 3x3 conv on the box tower -> K·M·M.
    Merge: :func:`blend`."""

    mask_form = "roi"

    def __init__(
        self,
        *,
        K: int,
        M: int,
        R: int,
        in_channels: int,
        tower_channels: int,
        basis_levels: tuple[str, ...] = BASIS_LEVELS,
    ) -> None:
        super().__init__()
        self.K, self.M, self.R = K, M, R
        self.num_params = K * M * M
        self.basis = BasisModule(in_channels=in_channels, num_bases=K, levels=basis_levels)
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
    *,
    K: int,
    M: int,
    R: int,
    in_channels: int,
    tower_channels: int,
    num_classes: int,
    basis_levels: tuple[str, ...] = BASIS_LEVELS,
) -> BlendMaskHead:
    """BlendMask head (class-agnostic masks, so ``num_classes`` is unused)."""
    return BlendMaskHead(
        K=K, M=M, R=R, in_channels=in_channels, tower_channels=tower_channels, basis_levels=basis_levels
    )
