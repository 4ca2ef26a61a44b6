from __future__ import annotations

import torch
import torch.nn.functional as F

from bmbench.models import paste
from bmbench.models.paste import crop_full_logits, paste_full_masks, paste_roi_masks


def test_a_box_of_side_r_pastes_its_logits_pixel_for_pixel() -> None:
    R = 12
    logits = torch.randn(3, R, R)
    boxes = torch.tensor([[10.0, 20.0, 10 + R, 20 + R], [0.0, 0.0, R, R], [40.0, 5.0, 40 + R, 5 + R]])
    masks = paste_roi_masks(logits, boxes, (48, 64))
    for mask, logit, (x0, y0, _, _) in zip(masks, logits, boxes.long(), strict=True):
        expected = torch.zeros(48, 64, dtype=torch.bool)
        expected[y0 : y0 + R, x0 : x0 + R] = logit > 0
        assert torch.equal(mask, expected)


def test_a_confident_mask_fills_exactly_its_box() -> None:
    masks = paste_roi_masks(torch.full((1, 28, 28), 10.0), torch.tensor([[3.0, 4.0, 20.0, 9.0]]), (16, 24))
    expected = torch.zeros(16, 24, dtype=torch.bool)
    expected[4:9, 3:20] = True
    assert torch.equal(masks[0], expected)


def test_chunks_change_nothing(monkeypatch) -> None:
    logits = torch.randn(9, 14, 14)
    boxes = torch.tensor([[2.0, 3.0, 30.0, 20.0]]) + torch.arange(9)[:, None]
    whole = paste_roi_masks(logits, boxes, (40, 48))
    monkeypatch.setattr(paste, "_CHUNK_ELEMENTS", 40 * 48 * 2)
    assert torch.equal(paste_roi_masks(logits, boxes, (40, 48)), whole)
    full = torch.randn(9, 10, 12)
    expected = paste_full_masks(full, boxes, (40, 48))
    monkeypatch.setattr(paste, "_CHUNK_ELEMENTS", 1)
    assert torch.equal(paste_full_masks(full, boxes, (40, 48)), expected)


def test_full_masks_are_upsampled_and_cropped_by_the_box() -> None:
    logits = torch.full((1, 8, 8), 5.0)
    masks = paste_full_masks(logits, torch.tensor([[4.0, 8.0, 12.0, 30.0]]), (32, 32))
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[8:30, 4:12] = True
    assert torch.equal(masks[0], expected)
    cropped = crop_full_logits(logits, torch.tensor([[4.0, 8.0, 12.0, 30.0]]))
    assert (cropped[0, 2:8, 1:3] == 5).all() and (cropped[0, :2] == -30).all() and (cropped[0, :, 3:] == -30).all()


def test_no_instances() -> None:
    assert paste_roi_masks(torch.zeros(0, 7, 7), torch.zeros(0, 4), (8, 8)).shape == (0, 8, 8)


def grid_sample_paste(logits: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """The reference formulation: one grid_sample per instance on a box-aligned grid, pixel centres at +0.5."""
    H, W = image_size
    ys, xs = torch.arange(H) + 0.5, torch.arange(W) + 0.5
    x0, y0, x1, y1 = boxes.float().unbind(1)
    gx = (xs[None] - x0[:, None]) / (x1 - x0)[:, None] * 2 - 1  # (N, W)
    gy = (ys[None] - y0[:, None]) / (y1 - y0)[:, None] * 2 - 1  # (N, H)
    n = len(logits)
    grid = torch.stack((gx[:, None, :].expand(n, H, W), gy[:, :, None].expand(n, H, W)), dim=3)
    sampled = F.grid_sample(logits[:, None], grid, mode="bilinear", align_corners=False)[:, 0]
    return (sampled > 0) & (gx.abs() <= 1)[:, None, :] & (gy.abs() <= 1)[:, :, None]


def test_separable_paste_equals_grid_sample() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn((40, 14, 14), generator=generator) * 4
    corners = torch.rand((40, 2), generator=generator) * 70 - 10  # some boxes leave the image
    boxes = torch.cat([corners, corners + torch.rand((40, 2), generator=generator) * 60 + 0.5], dim=1)
    reference = grid_sample_paste(logits, boxes, (64, 80))
    ours = paste_roi_masks(logits, boxes, (64, 80))
    assert (ours != reference).sum() <= 2  # float rounding, at logits within ~1e-6 of the threshold
    assert reference.sum() > 1000


def test_paste_inside_the_box_equals_the_whole_image_paste() -> None:
    generator = torch.Generator().manual_seed(3)
    num = 60
    logits = torch.randn((num, 14, 14), generator=generator) * 4
    corners = torch.rand((num, 2), generator=generator) * 100 - 20  # some boxes cross or leave the border
    sides = torch.rand((num, 2), generator=generator) * 60
    sides[:12] *= 0.02  # boxes under one pixel
    boxes = torch.cat([corners, corners + sides], dim=1)
    edge = torch.tensor([[0.0, 0.0, 80.0, 64.0], [70.5, 50.5, 80.0, 64.0], [-5.0, 10.0, 0.4, 20.0]])
    boxes, logits = torch.cat([boxes, edge]), torch.cat([logits, torch.full((3, 14, 14), 3.0)])
    ours = paste_roi_masks(logits, boxes, (64, 80))
    assert torch.equal(ours, paste.paste_roi_masks_whole_image(logits, boxes, (64, 80)))
    assert ours[-3].all() and ours[-2, 50:, 70:].all() and ours[-2].sum() == 14 * 10 and not ours[-1].any()
    assert ours[:12].sum() < ours[12:].sum() / 10 and ours.sum() > 1000


def test_paste_window_covers_every_pixel_of_its_box() -> None:
    windows = paste._box_windows(torch.tensor([[3.2, 4.7, 9.1, 5.2], [-3.0, -2.0, 200.0, 300.0]]), (40, 48))
    assert windows.tolist() == [[2, 3, 11, 7], [0, 0, 48, 40]]
