"""The Mask R-CNN mask head (He et al., ICCV 2017) as the baseline: all of its work is per RoI.

Multi-level RoIAlign (R/2 × R/2) from P2–P5, four 3x3 convs of 256 with ReLU, a 2x2 stride-2 deconv with ReLU and
per-class 1x1 logits, computed for each instance's own class only. Letters: N instances, R mask side, C FPN
channels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign

from bmbench.models.heads.base import MaskHead, needs_fp32_roi_align

MASK_LEVELS = ("p2", "p3", "p4", "p5")


class MaskRCNNConvUpsampleHead(MaskHead):
    """Bottom: none (the FPN levels themselves). Top: none. Merge: RoIAlign, 4 convs, deconv, class logits."""

    mask_form = "roi"
    num_params = 0
    merge_uses_params = False  # its merge reads the RoI and the label only

    def __init__(
        self, *, R: int, in_channels: int, num_classes: int, conv_channels: int = 256, num_convs: int = 4
    ) -> None:
        super().__init__()
        self.R = R
        self.pooler = MultiScaleRoIAlign(list(MASK_LEVELS), output_size=R // 2, sampling_ratio=2)
        convs: list[nn.Module] = []
        for i in range(num_convs):
            convs += [
                nn.Conv2d(in_channels if i == 0 else conv_channels, conv_channels, 3, padding=1),
                nn.ReLU(inplace=True),  # as torchvision's MaskRCNNHeads: no extra copy per conv
            ]
        self.convs = nn.Sequential(*convs)
        self.deconv = nn.ConvTranspose2d(conv_channels, conv_channels, 2, stride=2)
        self.logits = nn.Conv2d(conv_channels, num_classes, 1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def bottom(self, features: dict[str, Tensor], image_size: tuple[int, int]) -> tuple[dict[str, Tensor], tuple]:
        return {name: features[name] for name in MASK_LEVELS}, image_size

    def top(self, box_tower: list[Tensor]) -> list[Tensor]:
        return [level.new_empty((level.shape[0], 0, *level.shape[-2:])) for level in box_tower]

    def mask_logits(self, pooled: Tensor, labels: Tensor) -> Tensor:
        """``pooled: Tensor[N, C, R/2, R/2]``, ``labels: Tensor[N]`` -> each instance's own class's logits
        ``Tensor[N, R, R]``: the 1x1 predictor's rows of those classes only (a batched dot product), where
        torchvision's MaskRCNNPredictor computes every class and Mask R-CNN then keeps one. Equal to
        ``self.logits(x)[arange(N), labels]``; it saves (num_classes - 1) / num_classes of that conv's work."""
        x = torch.relu_(self.deconv(self.convs(pooled)))  # (N, ch, R, R)
        weight = self.logits.weight[labels, :, 0, 0]  # (N, ch)
        flat = torch.bmm(weight.unsqueeze(1), x.flatten(2)).squeeze(1)  # (N, R*R)
        return (flat + self.logits.bias[labels, None]).view(x.shape[0], *x.shape[-2:])

    def merge(self, bottom: tuple[dict[str, Tensor], tuple], params: Tensor, rois: Tensor, labels: Tensor) -> Tensor:
        levels, image_size = bottom
        num_images = next(iter(levels.values())).shape[0]
        order = torch.argsort(rois[:, 0], stable=True)  # the pooler returns instances grouped by image
        batch = rois[order, 0].long()
        boxes = [rois[order][batch == b, 1:] for b in range(num_images)]
        dtype = next(iter(levels.values())).dtype
        if needs_fp32_roi_align(next(iter(levels.values()))):
            levels, boxes = {k: v.float() for k, v in levels.items()}, [b.float() for b in boxes]
        pooled = self.pooler(levels, boxes, [tuple(image_size)] * num_images).to(dtype)  # (N, C, R/2, R/2)
        logits = self.mask_logits(pooled, labels[order])  # (N, R, R)
        return logits[torch.argsort(order)]


def build_maskrcnn_head(
    *, R: int, in_channels: int, tower_channels: int, num_classes: int, basis_levels: tuple[str, ...] = ()
) -> MaskRCNNConvUpsampleHead:
    """Mask R-CNN head; it ignores the detector tower and `basis_levels` (it has no basis module: its RoIAlign
    reads P2-P5)."""
    return MaskRCNNConvUpsampleHead(R=R, in_channels=in_channels, num_classes=num_classes)
