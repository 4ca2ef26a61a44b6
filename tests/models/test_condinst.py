"""CondInst: the grouped dynamic conv against a per-instance loop of plain convs, the parameter count and layout,
the relative coordinates, the dice loss on constructed masks, and the head's shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf

from bmbench.models.heads.condinst import (
    LOCATION_CHANNELS,
    dynamic_layer_shapes,
    dynamic_mask_logits,
    num_dynamic_params,
    relative_coordinates,
)
from bmbench.models.losses import dice_loss
from bmbench.variants import PRESETS, parse_spec


def test_adelaidet_counts_169_parameters_for_three_layers_of_eight() -> None:
    assert num_dynamic_params(K=8, L=3, F=8) == 169  # (8+2)*8+8 + 8*8+8 + 8*1+1
    assert num_dynamic_params(K=8, L=1, F=8) == 11  # one 1x1 from K + 2 to the logit
    assert dynamic_layer_shapes(K=4, L=2, F=16) == [(16, 6), (1, 16)]
    head = PRESETS["condinst"].build(trunk="small", num_classes=3)
    assert head.num_params == 169 + LOCATION_CHANNELS


def _reference_logits(branch, params, rois, *, K, L, F):
    """Instance by instance with plain convs: the parameters split by hand in AdelaiDet's layout."""
    D = num_dynamic_params(K=K, L=L, F=F)
    h8, w8 = branch.shape[-2:]
    shapes = dynamic_layer_shapes(K=K, L=L, F=F)
    out = []
    for n in range(params.shape[0]):
        flat, offset = params[n, :D], 0
        weights = []
        for o, i in shapes:
            weights.append(flat[offset : offset + o * i].reshape(o, i, 1, 1))
            offset += o * i
        biases = []
        for o, _ in shapes:
            biases.append(flat[offset : offset + o])
            offset += o
        assert offset == D
        coords = relative_coordinates(params[n : n + 1, D:], (h8, w8)).reshape(1, 2, h8, w8)
        x = torch.cat((coords, branch[int(rois[n, 0]) : int(rois[n, 0]) + 1]), dim=1)
        for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
            x = nnf.conv2d(x, w, b)
            if layer < L - 1:
                x = torch.relu(x)
        out.append(nnf.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)[0, 0])
    return torch.stack(out)


@pytest.mark.parametrize(("K", "L", "F"), [(8, 3, 8), (4, 1, 8), (2, 4, 3)])
def test_grouped_dynamic_conv_equals_a_loop_of_plain_convs(K: int, L: int, F: int) -> None:
    torch.manual_seed(0)
    B, h8, w8, N = 2, 6, 7, 5
    branch = torch.randn(B, K, h8, w8)
    D = num_dynamic_params(K=K, L=L, F=F)
    where = torch.tensor([[1, 2, 0], [0, 0, 1], [3, 1, 0], [2, 2, 2], [0, 1, 1]], dtype=torch.float32)
    params = torch.cat((torch.randn(N, D), where), dim=1)
    rois = torch.tensor([[0.0, 0, 0, 9, 9], [1, 0, 0, 9, 9], [1, 0, 0, 9, 9], [0, 0, 0, 9, 9], [1, 0, 0, 9, 9]])
    grouped = dynamic_mask_logits(branch, params, rois, K=K, L=L, F=F)
    assert grouped.shape == (N, 2 * h8, 2 * w8)
    assert torch.allclose(grouped, _reference_logits(branch, params, rois, K=K, L=L, F=F), atol=1e-5)


def test_no_instances_give_an_empty_map() -> None:
    branch = torch.randn(1, 8, 4, 5)
    out = dynamic_mask_logits(branch, torch.zeros(0, 172), torch.zeros(0, 5), K=8, L=3, F=8)
    assert out.shape == (0, 8, 10)


def test_relative_coordinates_are_divided_by_the_size_of_interest() -> None:
    # a P4 location (stride 16) at column 1, row 0: centre (24, 8); size of interest 8 strides = 128
    rel = relative_coordinates(torch.tensor([[1.0, 0.0, 1.0]]), (2, 3))
    cells_x = torch.tensor([4.0, 12.0, 20.0, 4.0, 12.0, 20.0])
    cells_y = torch.tensor([4.0, 4.0, 4.0, 12.0, 12.0, 12.0])
    assert torch.allclose(rel[0, 0], (24 - cells_x) / 128)
    assert torch.allclose(rel[0, 1], (8 - cells_y) / 128)


def test_top_gives_each_location_its_column_row_and_level() -> None:
    head = parse_spec("condinst:K=4,L=2,F=4").build(trunk="small", num_classes=3)
    tower = [torch.randn(2, head.controller.in_channels, 6 >> i, 8 >> i) for i in range(3)]
    out = head.top(tower)
    D = head.num_dynamic
    assert [o.shape[1] for o in out] == [head.num_params] * 3
    level = out[1][1, D:]  # (3, 3, 4)
    assert level[0, 2, 3] == 3 and level[1, 2, 3] == 2 and (level[2] == 1).all()


def test_dice_is_exact_on_constructed_masks() -> None:
    big = 30.0  # sigmoid(±30) is 1 or 0 to float precision
    target = torch.zeros(3, 4, 4)
    target[:, :2] = 1.0  # 8 foreground cells each
    logits = torch.full((3, 4, 4), -big)
    logits[0, :2] = big  # exactly the target: dice loss 0
    logits[1, :, :2] = big  # 4 of its 8 cells on the target: 1 - 2*4 / (8 + 8)
    # instance 2 predicts nothing: 1 - 0 / (0 + 8)
    per_instance = torch.tensor([0.0, 1 - 8 / (16 + 1e-5), 1.0])
    assert dice_loss(logits, target).item() == pytest.approx(per_instance.mean().item(), abs=1e-6)
    half = torch.zeros(1, 2, 2)  # p = 0.5 everywhere, target one cell: 1 - 2*0.5 / (4*0.25 + 1)
    one = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert dice_loss(half, one).item() == pytest.approx(1 - 1.0 / (2.0 + 1e-5), abs=1e-7)
    assert dice_loss(torch.zeros(0, 2, 2), torch.zeros(0, 2, 2)).item() == 0.0


def test_the_head_declares_dice_as_its_loss() -> None:
    head = PRESETS["condinst"].build(trunk="small", num_classes=3)
    logits, target = torch.zeros(2, 3, 3), torch.ones(2, 3, 3)
    weights, boxes = torch.ones(2), torch.zeros(2, 4)
    assert head.mask_loss(logits, target, weights, boxes).item() == pytest.approx(dice_loss(logits, target).item())
    assert head.mask_form == "full"
    assert not PRESETS["condinst"].applies("R") and PRESETS["condinst"].applies("K")
