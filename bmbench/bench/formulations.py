"""Equivalent formulations of the BlendMask blender, to time against ours (bmbench.models.heads.blend).

All take ``bases: Tensor[B, K, h, w]`` (stride 4), ``attentions: Tensor[N, K*M*M]``, ``rois: Tensor[N, 5]`` and
return ``Tensor[N, R, R]`` logits; each is mathematically equal to ``blend`` (a test checks it). Letters: N
instances, K bases, M attention side, R mask side.

Not included because they change the result: blending at M×M and upsampling the blended logits (softmax and
bilinear upsampling do not commute), and a softmax before the upsampling (same reason).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from bmbench.models.heads.base import roi_align_stride4
from bmbench.models.heads.blendmask import blend

Blender = Callable[..., Tensor]


def _pool(bases: Tensor, rois: Tensor, R: int) -> Tensor:
    return roi_align_stride4(bases, rois, R)  # (N, K, R, R), as the blender samples the bases


def blend_plain(bases: Tensor, attentions: Tensor, rois: Tensor, *, M: int, R: int) -> Tensor:
    """roi_align -> interpolate -> softmax -> multiply -> sum, each op materialising its output (AdelaiDet's
    ``merge_bases``)."""
    K = bases.shape[1]
    pooled = _pool(bases, rois, R)  # (N, K, R, R)
    upsampled = F.interpolate(attentions.view(-1, K, M, M), size=(R, R), mode="bilinear", align_corners=False)
    weights = torch.softmax(upsampled, dim=1)  # (N, K, R, R)
    product = torch.mul(pooled, weights)  # (N, K, R, R)
    return torch.sum(product, dim=1)  # (N, R, R)


def blend_einsum(bases: Tensor, attentions: Tensor, rois: Tensor, *, M: int, R: int) -> Tensor:
    """The weighted sum over K as one einsum (no materialised product)."""
    K = bases.shape[1]
    weights = F.interpolate(attentions.view(-1, K, M, M), size=(R, R), mode="bilinear", align_corners=False)
    return torch.einsum("nkrs,nkrs->nrs", _pool(bases, rois, R), weights.softmax(dim=1))  # (N, R, R)


def blend_inplace(bases: Tensor, attentions: Tensor, rois: Tensor, *, M: int, R: int) -> Tensor:
    """Softmax and product in place on the upsampled attention: two fewer N×K×R×R allocations."""
    K = bases.shape[1]
    weights = F.interpolate(attentions.view(-1, K, M, M), size=(R, R), mode="bilinear", align_corners=False)
    weights.sub_(weights.amax(dim=1, keepdim=True)).exp_()
    weights.div_(weights.sum(dim=1, keepdim=True))  # softmax over K, in place: (N, K, R, R)
    return weights.mul_(_pool(bases, rois, R)).sum(dim=1)  # (N, R, R)


def blend_loop(bases: Tensor, attentions: Tensor, rois: Tensor, *, M: int, R: int) -> Tensor:
    """One instance at a time (the reference the model-zoo tests compare against); for scale, not speed."""
    return torch.cat([blend(bases, attentions[i : i + 1], rois[i : i + 1], M=M, R=R) for i in range(len(rois))])


FORMULATIONS: dict[str, Blender] = {
    "blender": blend,  # ours, bmbench.models.heads.blendmask.blend (separable upsampling)
    "plain": blend_plain,
    "einsum": blend_einsum,
    "inplace": blend_inplace,
    "loop": blend_loop,
}
