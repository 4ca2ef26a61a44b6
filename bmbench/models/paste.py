"""Paste: mask logits -> binary full-image masks for all instances at once.

Letters: N instances, R mask side, h×w the stride-4 map, H×W the image. RoI-form masks are pasted box by box over
each box's window (detectron2's CPU strategy); full-map masks in chunks that bound the memory of the upsampled
logits. Both evaluation (bmbench.models.postprocess) and the speed workload call these, so there is one paste.
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


def _box_windows(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Each box's pixel window, integer-expanded by one pixel and clipped to the image, as detectron2's CPU
    ``paste_masks_in_image`` does: ``boxes: Tensor[N, 4]`` -> ``Tensor[N, 4]`` int64 (x_lo, y_lo, x_hi, y_hi),
    half-open. Every pixel whose centre lies in [x0, x1] × [y0, y1] is inside its window."""
    H, W = image_size
    low = torch.minimum(boxes[:, :2], boxes[:, 2:]).floor() - 1  # (N, 2)
    high = torch.maximum(boxes[:, :2], boxes[:, 2:]).ceil() + 1  # (N, 2)
    limits = torch.tensor([W, H], dtype=boxes.dtype, device=boxes.device)
    low = torch.minimum(low.clamp(min=0), limits)
    high = torch.minimum(high.clamp(min=0), limits)
    return torch.cat((low, high), dim=1).long()


def paste_roi_masks(logits: Tensor, boxes: Tensor, image_size: tuple[int, int], threshold: float = 0.0) -> Tensor:
    """Resample ``logits: Tensor[N, R, R]`` (RoI form, box-aligned as RoIAlign(aligned=True) samples it) into the
    image and threshold: ``boxes: Tensor[N, 4]`` (x0, y0, x1, y1, image pixels) -> ``Tensor[N, H, W]`` bool.

    Bilinear, with pixel centres at +0.5 and the RoI's cells spanning the box exactly; outside the box -> False.
    This is ``F.grid_sample`` on a box-aligned grid (the reference formulation in tests/models/test_paste.py),
    computed as two small matrix products because bilinear sampling on such a grid is separable in y and x:
    ``rows[h, R] @ logits[R, R] @ cols[w, R]^T``, and only over the pixels of each box's window (its clipped,
    integer-expanded box, as detectron2 pastes on the CPU): an instance costs its box's area, not the image's.
    Each pixel is computed by the same operations as in paste_roi_masks_whole_image, so the masks are the same.
    """
    H, W = image_size
    out = torch.zeros((logits.shape[0], H, W), dtype=torch.bool, device=logits.device)
    if logits.shape[0] == 0:
        return out
    boxes = boxes.float()
    windows = _box_windows(boxes, image_size).tolist()  # one host transfer for all instances
    R_y, R_x = logits.shape[-2:]
    for index, (x_lo, y_lo, x_hi, y_hi) in enumerate(windows):
        if x_hi <= x_lo or y_hi <= y_lo:  # the box lies outside the image
            continue
        x0, y0, x1, y1 = boxes[index]
        ys = torch.arange(y_lo, y_hi, device=logits.device, dtype=torch.float32) + 0.5  # (h,)
        xs = torch.arange(x_lo, x_hi, device=logits.device, dtype=torch.float32) + 0.5  # (w,)
        gx = (xs[None] - x0) / (x1 - x0).clamp(min=1e-6) * 2 - 1  # (1, w) in [-1, 1] across the box
        gy = (ys[None] - y0) / (y1 - y0).clamp(min=1e-6) * 2 - 1  # (1, h)
        rows = _bilinear_weights(gy, R_y)  # (1, h, R)
        cols = _bilinear_weights(gx, R_x)  # (1, w, R)
        sampled = rows @ logits[index : index + 1].float() @ cols.transpose(1, 2)  # (1, h, w)
        inside = (gx.abs() <= 1)[:, None, :] & (gy.abs() <= 1)[:, :, None]  # (1, h, w)
        out[index, y_lo:y_hi, x_lo:x_hi] = ((sampled > threshold) & inside)[0]
    return out


def paste_roi_masks_whole_image(
    logits: Tensor, boxes: Tensor, image_size: tuple[int, int], threshold: float = 0.0
) -> Tensor:
    """The previous paste, kept as the reference and for ``bmbench speed --check``: every instance over the whole
    image. ``logits: Tensor[N, R, R]``, ``boxes: Tensor[N, 4]`` -> ``Tensor[N, H, W]`` bool, as paste_roi_masks.

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
