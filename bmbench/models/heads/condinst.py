"""CondInst (Tian, Shen and Chen, ECCV 2020): one mask branch for the image, and per instance a tiny FCN whose
filters a controller predicts at the instance's location ("conditional convolutions").

Letters: B images, N instances, K mask-branch channels, L dynamic layers, F their channels, D the dynamic
parameters a location predicts (`num_dynamic_params`: 169 at K=8, L=3, F=8), C FPN channels, h8×w8 the stride-8
map, h×w the stride-4 map.

Written after AdelaiDet's ``adet/modeling/condinst/`` (condinst.py, mask_branch.py, dynamic_mask_head.py):

- bottom (per image): P3–P5 each refined by a conv, summed at stride 8, a tower of 4 convs, a 1x1 to K channels;
- top (per location): the controller, one 3x3 conv on the box tower to D parameters;
- merge (per instance): the relative coordinates of every stride-8 cell to the instance's location, divided by the
  level's size of interest, beside the image's K channels; L 1x1 convs with the instance's own filters (ReLU
  between), run as one grouped conv over all instances; the stride-8 logits upsampled x2 to stride 4, AdelaiDet's
  ``mask_out_stride``. Masks come in the ``full`` form over the stride-4 map, as YOLACT's;
- loss: dice on the sigmoid of the logits over the whole map (`bmbench.models.losses.dice_loss`).

Two choices differ from AdelaiDet's code, each for a reason of this project: the branch's conv blocks use GroupNorm
(the basis module's batch-independent recipe) where AdelaiDet uses BatchNorm, and the x2 upsampling is bilinear
with align_corners=False, which puts the stride-8 values at their cells' centres (x = 8i + 4, where FCOS's
locations lie) on stride-4 cell centres; AdelaiDet's ``aligned_bilinear`` pairs with ground truth sampled at
offset stride/2, this one with the stride-4 targets of bmbench.models.losses (4×4 cell averages).
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from bmbench.models.heads.base import BASIS_LEVELS, MaskHead, conv_block
from bmbench.models.losses import dice_loss  # (bmbench.models.heads/__init__ must not import this module: cycle)

BRANCH_STRIDE = 8  # the mask branch and the dynamic convs run at P3's stride
BRANCH_LEVELS = ("p3", "p4", "p5")  # MODEL.CONDINST.MASK_BRANCH.IN_FEATURES
BRANCH_CHANNELS = 128  # MASK_BRANCH.CHANNELS
BRANCH_CONVS = 4  # MASK_BRANCH.NUM_CONVS
# FCOS's sizes of interest (64, 128, 256, 512, then 1024 for P7) are 8 strides of each level: relative
# coordinates are divided by them, so that an instance's extent is about 1 whatever its level.
SIZE_OF_INTEREST_STRIDES = 8
# Besides its D parameters, `top` gives each location its grid column, row and level index (P3 = 0): a gathered
# instance then carries where it was predicted, which the merge needs for the relative coordinates. Grid indices
# (not pixels) stay exact in bf16 up to 256 cells, P3 of a 2048-pixel side.
LOCATION_CHANNELS = 3


def dynamic_layer_shapes(*, K: int, L: int, F: int) -> list[tuple[int, int]]:
    """(out, in) channels of each dynamic 1x1 conv: K + 2 -> F -> ... -> F -> 1 mask logit."""
    ins = [K + 2] + [F] * (L - 1)
    outs = [F] * (L - 1) + [1]
    return list(zip(outs, ins, strict=True))


def num_dynamic_params(*, K: int, L: int, F: int) -> int:
    """D: the weights and biases of the L dynamic convs (AdelaiDet's ``num_gen_params``; 169 at K=8, L=3, F=8)."""
    return sum(out * cin + out for out, cin in dynamic_layer_shapes(K=K, L=L, F=F))


def split_dynamic_params(params: Tensor, *, K: int, L: int, F: int) -> tuple[list[Tensor], list[Tensor]]:
    """``params: Tensor[N, D]`` -> per layer grouped-conv weights ``Tensor[N*out, in, 1, 1]`` and biases
    ``Tensor[N*out]``. The layout is AdelaiDet's: every layer's weights (out-major), then every layer's biases."""
    shapes = dynamic_layer_shapes(K=K, L=L, F=F)
    sizes = [out * cin for out, cin in shapes] + [out for out, _ in shapes]
    parts = torch.split(params, sizes, dim=1)
    N = params.shape[0]
    weights = [w.reshape(N * out, cin, 1, 1) for w, (out, cin) in zip(parts[:L], shapes, strict=True)]
    biases = [b.reshape(N * out) for b, (out, _) in zip(parts[L:], shapes, strict=True)]
    return weights, biases


def relative_coordinates(where: Tensor, size: tuple[int, int]) -> Tensor:
    """``where: Tensor[N, 3]`` (grid column, row, level of each instance's location) -> ``Tensor[N, 2, h8*w8]``:
    (instance location - cell centre) / the level's size of interest, x then y, for every stride-8 cell."""
    h8, w8 = size
    where = where.float().round()
    stride = BRANCH_STRIDE * torch.pow(2.0, where[:, 2])  # (N,)
    centre = where[:, :2] * stride[:, None] + torch.floor(stride / 2)[:, None]  # (N, 2) image pixels (x, y)
    ys = torch.arange(h8, device=where.device, dtype=torch.float32) * BRANCH_STRIDE + BRANCH_STRIDE // 2
    xs = torch.arange(w8, device=where.device, dtype=torch.float32) * BRANCH_STRIDE + BRANCH_STRIDE // 2
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    cells = torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)))  # (2, h8*w8)
    return (centre[:, :, None] - cells[None]) / (SIZE_OF_INTEREST_STRIDES * stride)[:, None, None]


def dynamic_mask_logits(
    branch: Tensor, params: Tensor, rois: Tensor, *, K: int, L: int, F: int, upsample: bool = True
) -> Tensor:
    """The dynamic head: ``branch: Tensor[B, K, h8, w8]``, ``params: Tensor[N, D + 3]`` (D dynamic parameters,
    then the location's column, row and level), ``rois: Tensor[N, 5]`` (its batch index first) -> mask logits
    ``Tensor[N, h, w]`` at stride 4 (``Tensor[N, h8, w8]`` with upsample=False).

    All instances go through one grouped conv per layer: instance n's K + 2 input channels form group n."""
    h8, w8 = branch.shape[-2:]
    N = params.shape[0]
    D = num_dynamic_params(K=K, L=L, F=F)
    if N == 0:
        side = 2 if upsample else 1
        return branch.new_zeros((0, side * h8, side * w8)) + params.sum() * 0
    coords = relative_coordinates(params[:, D : D + LOCATION_CHANNELS], (h8, w8)).to(branch.dtype)  # (N, 2, h8*w8)
    own = branch[rois[:, 0].long()].flatten(2)  # (N, K, h8*w8)
    x = torch.cat((coords, own), dim=1).reshape(1, N * (K + 2), h8, w8)  # (1, N*(K+2), h8, w8)
    weights, biases = split_dynamic_params(params[:, :D], K=K, L=L, F=F)
    for layer, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
        x = nnf.conv2d(x, weight, bias, groups=N)  # (1, N*out, h8, w8)
        if layer < L - 1:
            x = torch.relu(x)
    logits = x.reshape(N, 1, h8, w8)
    if upsample:
        logits = nnf.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)  # (N, 1, h, w)
    return logits[:, 0]


class CondInstMaskBranch(nn.Module):
    """``features[p3..p5]`` -> ``Tensor[B, K, H/8, W/8]``: each level refined, summed at P3, a tower, 1x1 to K."""

    def __init__(self, *, in_channels: int, out_channels: int, channels: int = BRANCH_CHANNELS) -> None:
        super().__init__()
        self.refine = nn.ModuleList(conv_block(in_channels, channels, norm="GN") for _ in BRANCH_LEVELS)
        self.tower = nn.Sequential(*(conv_block(channels, channels, norm="GN") for _ in range(BRANCH_CONVS)))
        self.predictor = nn.Conv2d(channels, out_channels, 1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        x = self.refine[0](features[BRANCH_LEVELS[0]])
        for refine, name in zip(self.refine[1:], BRANCH_LEVELS[1:], strict=True):
            level = refine(features[name])
            x = x + nnf.interpolate(level, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.predictor(self.tower(x))  # (B, K, H/8, W/8)


class CondInstHead(MaskHead):
    """Bottom: :class:`CondInstMaskBranch`. Top: the controller (3x3 conv -> D) and each location's place.
    Merge: :func:`dynamic_mask_logits`. Loss: dice (``mask_loss``)."""

    mask_form = "full"

    def __init__(self, *, K: int, L: int, F: int, in_channels: int, tower_channels: int) -> None:
        super().__init__()
        self.K, self.L, self.F = K, L, F
        self.num_dynamic = num_dynamic_params(K=K, L=L, F=F)
        self.num_params = self.num_dynamic + LOCATION_CHANNELS
        self.branch = CondInstMaskBranch(in_channels=in_channels, out_channels=K)
        self.controller = nn.Conv2d(tower_channels, self.num_dynamic, 3, padding=1)
        nn.init.normal_(self.controller.weight, std=0.01)  # as AdelaiDet
        nn.init.zeros_(self.controller.bias)

    def bottom(self, features: dict[str, Tensor], image_size: tuple[int, int]) -> Tensor:
        return self.branch(features)  # (B, K, h8, w8)

    def top(self, box_tower: list[Tensor]) -> list[Tensor]:
        out = []
        for index, level in enumerate(box_tower):
            params = self.controller(level)  # (B, D, H_l, W_l)
            B, _, H_l, W_l = params.shape
            rows, cols = torch.meshgrid(
                torch.arange(H_l, device=params.device), torch.arange(W_l, device=params.device), indexing="ij"
            )
            where = torch.stack((cols, rows, torch.full_like(rows, index))).to(params.dtype)  # (3, H_l, W_l)
            out.append(torch.cat((params, where[None].expand(B, -1, -1, -1)), dim=1))  # (B, D + 3, H_l, W_l)
        return out

    def merge(self, bottom: Tensor, params: Tensor, rois: Tensor, labels: Tensor) -> Tensor:
        return dynamic_mask_logits(bottom, params, rois, K=self.K, L=self.L, F=self.F)

    def mask_loss(self, logits: Tensor, targets: Tensor, weights: Tensor, boxes: Tensor) -> Tensor:
        """AdelaiDet's CondInst loss: dice over the whole stride-4 map, the mean over instances (unweighted)."""
        return dice_loss(logits, targets)


def build_condinst_head(
    *,
    K: int,
    L: int,
    F: int,
    in_channels: int,
    tower_channels: int,
    num_classes: int,
    basis_levels: tuple[str, ...] = BASIS_LEVELS,
) -> CondInstHead:
    """CondInst head: class-agnostic masks, and its branch always reads P3–P5 (``basis_levels`` is unused)."""
    return CondInstHead(K=K, L=L, F=F, in_channels=in_channels, tower_channels=tower_channels)
