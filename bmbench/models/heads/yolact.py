"""YOLACT (Bolya et al., ICCV 2019): K prototypes for the image and K tanh coefficients per instance.

The BlendMask family's M=1 case without RoI sampling: masks are assembled over the whole stride-4 map and cropped
by the box, so the cost does not depend on R. Letters: B images, N instances, K prototypes, h×w the stride-4 map.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bmbench.models.heads.base import BASIS_LEVELS, BasisModule, MaskHead
from bmbench.models.paste import crop_full_logits


def assemble(prototypes: Tensor, coefficients: Tensor, rois: Tensor) -> Tensor:
    """Linear combination of prototypes, cropped by the box.

    ``prototypes: Tensor[B, K, h, w]``, ``coefficients: Tensor[N, K]``, ``rois: Tensor[N, 5]`` ->
    logits ``Tensor[N, h, w]`` (outside the box: a large negative value).
    """
    B, K, h, w = prototypes.shape
    out = prototypes.new_empty((coefficients.shape[0], h, w))
    batch = rois[:, 0].long()
    for b in range(B):  # one matmul per image, never per instance
        index = (batch == b).nonzero().squeeze(1)
        if index.numel():
            out[index] = (coefficients[index] @ prototypes[b].reshape(K, h * w)).view(-1, h, w)  # (n_b, h, w)
    return crop_full_logits(out, rois[:, 1:])


class YolactHead(MaskHead):
    """Bottom: protonet (K prototypes, ReLU). Top: 3x3 conv -> K tanh coefficients. Merge: :func:`assemble`."""

    mask_form = "full"

    def __init__(
        self, *, K: int, in_channels: int, tower_channels: int, basis_levels: tuple[str, ...] = BASIS_LEVELS
    ) -> None:
        super().__init__()
        self.K = K
        self.num_params = K
        self.protonet = BasisModule(in_channels=in_channels, num_bases=K, levels=basis_levels)
        self.coefficients = nn.Conv2d(tower_channels, K, 3, padding=1)

    def bottom(self, features: dict[str, Tensor], image_size: tuple[int, int]) -> Tensor:
        return torch.relu(self.protonet(features))  # (B, K, h, w)

    def top(self, box_tower: list[Tensor]) -> list[Tensor]:
        return [torch.tanh(self.coefficients(level)) for level in box_tower]  # (B, K, H_l, W_l) each

    def merge(self, bottom: Tensor, params: Tensor, rois: Tensor, labels: Tensor) -> Tensor:
        return assemble(bottom, params, rois)


def build_yolact_head(
    *,
    K: int,
    M: int,
    in_channels: int,
    tower_channels: int,
    num_classes: int,
    basis_levels: tuple[str, ...] = BASIS_LEVELS,
) -> YolactHead:
    """YOLACT head (M is always 1; class-agnostic masks)."""
    return YolactHead(K=K, in_channels=in_channels, tower_channels=tower_channels, basis_levels=basis_levels)
