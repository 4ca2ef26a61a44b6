"""One detector, one mask head: backbone + FPN -> FCOS head -> the mask head's bottom and top stages.

``forward`` returns raw outputs only; the per-instance merge, losses and post-processing are free functions that
take these outputs (see bmbench.training.train / bmbench.evaluation.evaluate). Letters: B images, D instance parameters
per location.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor, nn

from bmbench.models.fcos import DetectorOutputs, FCOSHead
from bmbench.models.heads.base import MaskHead


class SegmenterOutputs(NamedTuple):
    features: dict[str, Tensor]  # FPN levels P2–P7
    detections: DetectorOutputs  # FCOS outputs per level P3–P7
    bottom: Any  # the mask head's bottom output (bases, prototypes, saliency, or FPN levels)
    params: list[Tensor]  # the mask head's top output: Tensor[B, D, H_l, W_l] per level P3–P7


class InstanceSegmenter(nn.Module):
    """``images: Tensor[B, 3, H, W]`` -> :class:`SegmenterOutputs`."""

    def __init__(self, *, backbone: nn.Module, detector: FCOSHead, mask_head: MaskHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.detector = detector
        self.mask_head = mask_head

    def trunk_parameters(self) -> list[nn.Parameter]:
        """Backbone, FPN and detector: what the shared-trunk protocol trains once and then freezes."""
        return [*self.backbone.parameters(), *self.detector.parameters()]

    def forward(self, images: Tensor) -> SegmenterOutputs:
        features = self.backbone(images)
        detections = self.detector(features)
        bottom = self.mask_head.bottom(features, tuple(images.shape[-2:]))
        params = self.mask_head.top(detections.box_tower)
        return SegmenterOutputs(features, detections, bottom, params)
