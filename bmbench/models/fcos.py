"""The FCOS-style detector head (Tian et al., ICCV 2019) every variant shares: class, box and centerness.

Letters: B images, C classes, L levels P3–P7, H_l×W_l the level's map. The box tower's features are returned too:
the mask heads' top stage runs on them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

DETECTOR_LEVELS = ("p3", "p4", "p5", "p6", "p7")


class DetectorOutputs(NamedTuple):
    """Per level (P3–P7), raw outputs."""

    class_logits: list[Tensor]  # Tensor[B, C, H_l, W_l]
    box_regression: list[Tensor]  # Tensor[B, 4, H_l, W_l]: left, top, right, bottom distances in image pixels
    centerness: list[Tensor]  # Tensor[B, 1, H_l, W_l] logits
    box_tower: list[Tensor]  # Tensor[B, T, H_l, W_l]: where the mask heads' top stage runs


def _tower(in_channels: int, channels: int, num_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers += [
            nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1),
            nn.GroupNorm(32, channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """Shared across levels: a class tower and a box tower; centerness sits on the box tower."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        tower_channels: int,
        num_convs: int,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        self.cls_tower = _tower(in_channels, tower_channels, num_convs)
        self.box_tower = _tower(in_channels, tower_channels, num_convs)
        self.cls_logits = nn.Conv2d(tower_channels, num_classes, 3, padding=1)
        self.box_pred = nn.Conv2d(tower_channels, 4, 3, padding=1)
        self.ctr_pred = nn.Conv2d(tower_channels, 1, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(len(DETECTOR_LEVELS)))  # per-level regression scale
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: dict[str, Tensor]) -> DetectorOutputs:
        outputs = DetectorOutputs([], [], [], [])
        for i, name in enumerate(DETECTOR_LEVELS):
            stride = 2 ** (i + 3)
            cls_feat = self.cls_tower(features[name])
            box_feat = self.box_tower(features[name])
            outputs.class_logits.append(self.cls_logits(cls_feat))
            outputs.box_regression.append(torch.relu(self.box_pred(box_feat) * self.scales[i]) * stride)
            outputs.centerness.append(self.ctr_pred(box_feat))
            outputs.box_tower.append(box_feat)
        return outputs


def level_points(shapes: list[tuple[int, int]], device: torch.device | None = None) -> list[Tensor]:
    """Image-pixel centres of every location of each detector level: ``Tensor[H_l*W_l, 2]`` (x, y) each."""
    points = []
    for i, (h, w) in enumerate(shapes):
        stride = 2 ** (i + 3)
        ys, xs = torch.meshgrid(
            torch.arange(h, device=device, dtype=torch.float32),
            torch.arange(w, device=device, dtype=torch.float32),
            indexing="ij",
        )
        points.append(torch.stack((xs.reshape(-1), ys.reshape(-1)), dim=1) * stride + stride // 2)
    return points
