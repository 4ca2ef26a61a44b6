"""The interface every mask head shares: three stages and a paste.

Letters: B images, N instances, K bases, M attention side, R mask side, D per-location instance parameters,
h×w the stride-4 map of an H×W image.

- ``bottom(features, image_size)`` runs once per image on the FPN features.
- ``top(box_tower)`` runs per location on the detector's box tower: ``Tensor[B, D, H_l, W_l]`` for each level.
- ``merge(bottom, params, rois, labels)`` runs per instance and returns mask logits.
- ``paste(logits, rois, image_size)`` turns them into full-image binary masks.

Mask logits come in one of two forms, named by ``mask_form``: ``"roi"`` (``Tensor[N, R, R]`` inside the box) or
``"full"`` (``Tensor[N, h, w]`` over the stride-4 map, YOLACT).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

from bmbench.models.paste import paste_full_masks, paste_roi_masks

MAP_STRIDE = 4  # bases, prototypes and saliency live at stride 4


def needs_fp32_roi_align(x: Tensor) -> bool:
    """torchvision's CPU RoIAlign kernels have no fp16/bf16 version: such inputs are pooled in fp32 there."""
    return x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16)


def roi_align_stride4(maps: Tensor, rois: Tensor, R: int) -> Tensor:
    """RoIAlign as BlendMask samples its bases: ``maps: Tensor[B, K, h, w]`` (stride 4), ``rois: Tensor[N, 5]``
    (image pixels) -> ``Tensor[N, K, R, R]``; aligned=True, one sample per bin."""
    dtype = maps.dtype
    if needs_fp32_roi_align(maps):
        maps = maps.float()
    pooled = roi_align(
        maps, rois.to(maps.dtype), (R, R), spatial_scale=1.0 / MAP_STRIDE, sampling_ratio=1, aligned=True
    )
    return pooled.to(dtype)


class MaskHead(nn.Module):
    """Base class: subclasses set ``num_params`` and ``mask_form`` and implement the three stages."""

    num_params: int  # D, instance parameters predicted per location by `top` (0 when there is no top stage)
    mask_form: str  # "roi" or "full"
    # Optional: the head's own mask loss, ``mask_loss(logits, targets, weights, boxes) -> Tensor`` (a method);
    # None: its form's BCE (bmbench.models.losses.mask_loss). CondInst's is dice.
    mask_loss: Callable[..., Tensor] | None = None
    # False when `merge` reads only the RoI and the label, never ``params`` (Mask R-CNN): in training every positive
    # of one instance has the same RoI (its ground-truth box) and label, so the loss runs the merge once per
    # instance and shares its logits among that instance's positives. The same loss and gradients; on the quick
    # suite's batches (8 images of 2-4 instances, every positive) a Mask R-CNN step took 0.64 s instead of 1.41 s
    # (20 steps on the 2-core CPU).
    merge_uses_params: bool = True

    def bottom(self, features: dict[str, Tensor], image_size: tuple[int, int]) -> Any:
        """Once per image: the per-image maps the merge reads (bases, prototypes, saliency or FPN levels)."""
        raise NotImplementedError

    def top(self, box_tower: list[Tensor]) -> list[Tensor]:
        """Per location: ``Tensor[B, D, H_l, W_l]`` instance parameters for each FPN level."""
        raise NotImplementedError

    def merge(self, bottom: Any, params: Tensor, rois: Tensor, labels: Tensor) -> Tensor:
        """Per instance: ``params: Tensor[N, D]``, ``rois: Tensor[N, 5]`` (batch index, x0, y0, x1, y1 in image
        pixels), ``labels: Tensor[N]`` -> mask logits ``Tensor[N, R, R]`` (roi form) or ``Tensor[N, h, w]``."""
        raise NotImplementedError

    def paste(self, logits: Tensor, rois: Tensor, image_size: tuple[int, int]) -> Tensor:
        """Mask logits -> binary full-image masks ``Tensor[N, H, W]`` (bool)."""
        if self.mask_form == "roi":
            return paste_roi_masks(logits, rois[:, 1:], image_size)
        return paste_full_masks(logits, rois[:, 1:], image_size)


BASIS_NORMS = (None, "GN")  # the basis module's conv blocks: plain conv + ReLU, or AdelaiDet's conv + GroupNorm + ReLU
GN_GROUPS = 32  # GroupNorm groups (AdelaiDet's), so 4 channels a group at 128 channels


def conv_block(in_channels: int, out_channels: int, *, norm: str | None) -> nn.Sequential:
    """A 3x3 conv and ReLU; with ``norm="GN"`` AdelaiDet's ``conv_with_kaiming_uniform("GN", activation=True)``:
    a bias-free conv with ``kaiming_uniform_(a=1)`` weights, GroupNorm, then ReLU."""
    if norm is None:
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True))
    if norm != "GN":
        raise ValueError(f"unknown basis norm {norm!r} (use one of {BASIS_NORMS})")
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    return nn.Sequential(conv, nn.GroupNorm(GN_GROUPS, out_channels), nn.ReLU(inplace=True))


BASIS_LEVELS = ("p3", "p4", "p5")  # AdelaiDet's (and the paper's) basis-module input levels, finest first


class BasisModule(nn.Module):
    """K maps at stride 4 from P3–P5: refine each level, sum at P3, a conv tower, upsample x2, a conv, 1x1 to K.

    With `levels` starting at P2 (the small trunk's, see bmbench.models.backbone.TrunkSpec), P2 is refined by a
    conv of its own (``lateral``) and added after the upsample, before the stride-4 conv: the tower stays at
    stride 8, and the bases see stride-4 detail for two stride-4 convs instead of five (measured on the quick
    suite's finetune cell K=4 M=7 R=56, one seed: 24.4 oracle mask AP in 106 s of training, against 23.1 in 121 s
    with all four levels summed at P2 and the tower there, bmbench 0.3.0).

    The BlendMask bottom module (and the YOLACT protonet / CenterMask saliency branch, with K=32 / K=1).
    Lightly adapted from AdelaiDet's basis module: ``features[p3..p5]: Tensor[B, C, H/8.., W/8..]`` (and
    ``features["p2"]: Tensor[B, C, H/4, W/4]``) -> ``Tensor[B, K, H/4, W/4]``. `norm` picks the conv blocks (see
    `conv_block`): "GN" by default, AdelaiDet's recipe (measured: 300 joint steps at 128 px, 17.9 oracle
    mask AP against 15.5 without), None for the plain conv + ReLU of checkpoints written before. The 1x1
    predictor keeps PyTorch's default initialisation, as in AdelaiDet.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_bases: int,
        channels: int = 128,
        num_convs: int = 3,
        norm: str | None = "GN",
        levels: tuple[str, ...] = BASIS_LEVELS,
    ) -> None:
        super().__init__()
        if levels[0] not in ("p2", "p3") or list(levels) != sorted(levels) or levels[-1] == "p2":
            raise ValueError(f"basis levels must start at p2 or p3 and reach p3, finest first, got {levels}")
        self.levels = tuple(levels)
        self.summed = self.levels[1:] if levels[0] == "p2" else self.levels  # summed at P3 before the tower
        self.refine = nn.ModuleList(conv_block(in_channels, channels, norm=norm) for _ in self.summed)
        # One flat Sequential, so that without a norm the parameter names are those of earlier checkpoints.
        self.tower = nn.Sequential(
            *(layer for _ in range(num_convs) for layer in conv_block(channels, channels, norm=norm))
        )
        # A name of its own: a checkpoint whose P2 was summed before the tower (bmbench 0.3.0) does not load.
        self.lateral = conv_block(in_channels, channels, norm=norm) if levels[0] == "p2" else None
        self.upsampled = conv_block(channels, channels, norm=norm)
        self.predictor = nn.Conv2d(channels, num_bases, 1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        levels = [features[name] for name in self.summed]
        x = self.refine[0](levels[0])
        for refine, level in zip(self.refine[1:], levels[1:], strict=True):
            x = x + nn.functional.interpolate(refine(level), size=x.shape[-2:], mode="bilinear", align_corners=False)
        x = self.tower(x)
        if self.lateral is None:
            x = nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        else:  # to P2's own grid, then its lateral
            p2 = features["p2"]
            x = nn.functional.interpolate(x, size=p2.shape[-2:], mode="bilinear", align_corners=False)
            x = x + self.lateral(p2)
        return self.predictor(self.upsampled(x))  # (B, K, H/4, W/4)
