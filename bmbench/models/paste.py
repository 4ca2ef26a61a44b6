"""Paste: mask logits -> binary full-image masks for all instances at once.

Letters: N instances, R mask side, h×w the stride-4 map, H×W the image. Instances are processed in chunks that
bound the memory of the sampling grid; there is no Python loop per instance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Elements of one chunk's float output (N_chunk * H * W): 2^24 floats is 64 MiB in fp32.
_CHUNK_ELEMENTS = 1 << 24


def _chunks(num: int, image_size: tuple[int, int]) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // (image_size[0] * image_size[1]))
    return [slice(i, min(i + step, num)) for i in range(0, num, step)]


def _bilinear_weights(grid: Tensor, size: int) -> Tensor:
    """1-D bilinear sampling weights as grid_sample applies them (align_corners=False, zero padding):
    ``grid: Tensor[n, L]`` normalised coordinates -> ``Tensor[n, L, size]``."""
    source = ((grid + 1) * size - 1) / 2  # (n, L) in source cell units
    left = source.floor()
    frac = source - left
    weights = grid.new_zeros((*grid.shape, size + 2))  # columns -1 .. size: out-of-range taps land in the margins
    index = (left.long() + 1).clamp(0, size + 1)  # (n, L), shifted by the margin
    weights.scatter_add_(2, index[..., None], (1 - frac)[..., None])
    weights.scatter_add_(2, (index + 1).clamp(max=size + 1)[..., None], frac[..., None])
    return weights[..., 1 : size + 1]


def paste_roi_masks(logits: Tensor, boxes: Tensor, image_size: tuple[int, int], threshold: float = 0.0) -> Tensor:
    """Resample ``logits: Tensor[N, R, R]`` (RoI form, box-aligned as RoIAlign(aligned=True) samples it) into the
    image and threshold: ``boxes: Tensor[N, 4]`` (x0, y0, x1, y1, image pixels) -> ``Tensor[N, H, W]`` bool.

    Bilinear, with pixel centres at +0.5 and the RoI's cells spanning the box exactly; outside the box -> False.
    This is ``F.grid_sample`` on a box-aligned grid (the reference formulation in tests/models/test_paste.py),
    computed as two small matrix products per instance because bilinear sampling on such a grid is separable in
    y and x: ``rows[n, H, R] @ logits[n, R, R] @ cols[n, W, R]^T``. Values agree to float rounding.
    """
    H, W = image_size
    out = torch.zeros((logits.shape[0], H, W), dtype=torch.bool, device=logits.device)
    if logits.shape[0] == 0:
        return out
    ys = torch.arange(H, device=logits.device, dtype=torch.float32) + 0.5
    xs = torch.arange(W, device=logits.device, dtype=torch.float32) + 0.5
    boxes = boxes.float()
    for part in _chunks(logits.shape[0], image_size):
        x0, y0, x1, y1 = boxes[part].unbind(1)
        # Normalised sampling coordinates in [-1, 1] across the box: (n, W) and (n, H).
        gx = (xs[None] - x0[:, None]) / (x1 - x0).clamp(min=1e-6)[:, None] * 2 - 1
        gy = (ys[None] - y0[:, None]) / (y1 - y0).clamp(min=1e-6)[:, None] * 2 - 1
        rows = _bilinear_weights(gy, logits.shape[-2])  # (n, H, R)
        cols = _bilinear_weights(gx, logits.shape[-1])  # (n, W, R)
        sampled = rows @ logits[part].float() @ cols.transpose(1, 2)  # (n, H, W)
        inside = (gx.abs() <= 1)[:, None, :] & (gy.abs() <= 1)[:, :, None]  # (n, H, W)
        out[part] = (sampled > threshold) & inside
    return out


def paste_full_masks(logits: Tensor, boxes: Tensor, image_size: tuple[int, int], threshold: float = 0.0) -> Tensor:
    """Upsample ``logits: Tensor[N, h, w]`` (stride-4 full-map form) x4, crop to the image and to each box and
    threshold: -> ``Tensor[N, H, W]`` bool."""
    H, W = image_size
    out = torch.zeros((logits.shape[0], H, W), dtype=torch.bool, device=logits.device)
    if logits.shape[0] == 0:
        return out
    ys = torch.arange(H, device=logits.device, dtype=torch.float32) + 0.5
    xs = torch.arange(W, device=logits.device, dtype=torch.float32) + 0.5
    h, w = logits.shape[-2:]
    for part in _chunks(logits.shape[0], image_size):
        up = F.interpolate(logits[part, None].float(), size=(4 * h, 4 * w), mode="bilinear", align_corners=False)
        x0, y0, x1, y1 = boxes[part].float().unbind(1)
        inside_x = (xs[None] >= x0[:, None]) & (xs[None] <= x1[:, None])  # (n, W)
        inside_y = (ys[None] >= y0[:, None]) & (ys[None] <= y1[:, None])  # (n, H)
        out[part] = (up[:, 0, :H, :W] > threshold) & inside_y[:, :, None] & inside_x[:, None, :]
    return out


def crop_full_logits(logits: Tensor, boxes: Tensor, stride: int = 4, fill: float = -30.0) -> Tensor:
    """YOLACT's crop: set ``logits: Tensor[N, h, w]`` outside each box (image pixels) to ``fill`` (sigmoid ~ 0)."""
    h, w = logits.shape[-2:]
    ys = (torch.arange(h, device=logits.device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w, device=logits.device, dtype=torch.float32) + 0.5) * stride
    x0, y0, x1, y1 = boxes.float().unbind(1)
    inside = ((ys[None] >= y0[:, None]) & (ys[None] <= y1[:, None]))[:, :, None] & (
        (xs[None] >= x0[:, None]) & (xs[None] <= x1[:, None])
    )[:, None, :]  # (N, h, w)
    return logits.masked_fill(~inside, fill)
