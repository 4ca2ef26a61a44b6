"""Backbone + FPN shared by every variant: a torchvision ResNet built without weights, and torchvision's FPN.

Two trunks: ``small`` (a ResNet-10 with GroupNorm, FPN 128: trains from scratch on a CPU) and ``r50`` (ResNet-50
with BatchNorm, FPN 256: the paper's trunk, for faithful timing). Outputs P2–P7 (strides 4–128).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

LEVEL_STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}


@dataclass(frozen=True)
class TrunkSpec:
    """A backbone + FPN + detector-tower size."""

    block: str  # "basic" or "bottleneck" residual block
    layers: tuple[int, int, int, int]  # blocks per ResNet stage
    norm: str  # "group" (GroupNorm 32, robust at small batches) or "batch"
    fpn_channels: int  # C, channels of every FPN level
    tower_channels: int  # channels of the FCOS towers
    tower_convs: int  # convs per FCOS tower
    # the FPN levels the basis module (bottom) reads, finest first (bmbench.models.heads.base.BasisModule). The
    # paper's P3-P5 (summed at stride 8, upsampled x2 to the stride-4 bases); the small trunk adds P2 (stride 4),
    # added after the upsample, because at the CPU's 128-px images P3 is a 16x16 map: measured (bmbench 0.3.0, P2
    # then summed in at stride 4; 300 joint steps, 128 px, K=4 M=7 R=56, one seed) 24.2 oracle mask AP with P2
    # against 16.4 with P3-P5 alone
    basis_levels: tuple[str, ...] = ("p3", "p4", "p5")


TRUNKS: dict[str, TrunkSpec] = {
    "small": TrunkSpec(
        "basic",
        (1, 1, 1, 1),
        "group",
        fpn_channels=128,
        tower_channels=128,
        tower_convs=2,
        basis_levels=("p2", "p3", "p4", "p5"),
    ),
    "r50": TrunkSpec("bottleneck", (3, 4, 6, 3), "batch", fpn_channels=256, tower_channels=256, tower_convs=4),
}


def _group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(32, channels)


class ResNetFPN(nn.Module):
    """``images: Tensor[B, 3, H, W]`` (H, W multiples of 32) -> ``{"p2": Tensor[B, C, H/4, W/4], …, "p7": …}``."""

    def __init__(self, trunk: TrunkSpec) -> None:
        super().__init__()
        block = BasicBlock if trunk.block == "basic" else Bottleneck
        norm = _group_norm if trunk.norm == "group" else nn.BatchNorm2d
        resnet = ResNet(block, list(trunk.layers), norm_layer=norm)  # random init, nothing downloaded
        widths = [64 * block.expansion * 2**i for i in range(4)]
        self.body = BackboneWithFPN(
            resnet,
            return_layers={"layer1": "p2", "layer2": "p3", "layer3": "p4", "layer4": "p5"},
            in_channels_list=widths,
            out_channels=trunk.fpn_channels,
            extra_blocks=LastLevelP6P7(widths[-1], trunk.fpn_channels),
        )

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        features = self.body(images)
        return OrderedDict(zip(LEVEL_STRIDES, features.values(), strict=True))


def build_backbone(trunk: str | TrunkSpec) -> ResNetFPN:
    """Build the backbone + FPN for a trunk name of ``TRUNKS`` or a TrunkSpec."""
    return ResNetFPN(TRUNKS[trunk] if isinstance(trunk, str) else trunk)


def feature_shapes(image_size: tuple[int, int], channels: int, batch: int = 1) -> dict[str, torch.Size]:
    """Shapes of the FPN levels for an image of ``image_size`` (H, W), padded to a multiple of 32 as the model
    sees it; what a speed workload allocates instead of running the backbone."""
    H, W = (-(-side // 32) * 32 for side in image_size)
    shapes = {}
    for name, stride in LEVEL_STRIDES.items():
        # Strided convs round up: ceil(side / stride) for the ResNet levels and for P6/P7 (3x3, stride 2, pad 1).
        shapes[name] = torch.Size((batch, channels, -(-H // stride), -(-W // stride)))
    return shapes
