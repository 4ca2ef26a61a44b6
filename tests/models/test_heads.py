"""Every registered variant: shapes, finiteness, gradients; and each merge against a reference formulation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign, roi_align

from bmbench.models.backbone import TRUNKS, feature_shapes
from bmbench.models.heads import BasisModule, blend
from bmbench.models.heads.base import GN_GROUPS
from bmbench.models.heads.blendmask import interpolation_matrix
from bmbench.models.heads.centermask import product_logits
from bmbench.models.heads.maskrcnn import build_maskrcnn_head
from bmbench.variants import PRESETS, VariantSpec, build_segmenter, parse_spec

IMAGE = (64, 96)  # H, W: multiples of 32
NUM_CLASSES = 3


def _rois() -> torch.Tensor:
    """Tensor[4, 5]: batch index, x0, y0, x1, y1 across two images."""
    return torch.tensor(
        [[0, 4.0, 6.0, 40.0, 50.0], [1, 10.0, 3.0, 90.0, 60.0], [0, 30.5, 20.0, 62.0, 33.5], [1, 0.0, 0.0, 96.0, 64.0]]
    )


def _small(spec: VariantSpec) -> VariantSpec:
    """The preset at a small R (and S) so the test stays cheap; the structure is unchanged."""
    params = {key: min(value, 14) for key, value in spec.params.items() if key in ("R", "S") and spec.applies(key)}
    return spec.with_params(**params)


@pytest.mark.parametrize("name", list(PRESETS))
def test_stages_shapes_finite_and_gradients_reach_every_mask_parameter(name: str) -> None:
    spec = _small(PRESETS[name])
    model = build_segmenter(spec, trunk="small", num_classes=NUM_CLASSES)
    head = model.mask_head
    images = torch.randn(2, 3, *IMAGE)
    out = model(images)
    assert [p.shape[1] for p in out.params] == [head.num_params] * 5
    assert [p.shape[-2:] for p in out.params] == [t.shape[-2:] for t in out.detections.box_tower]
    rois, labels = _rois(), torch.tensor([0, 1, 2, 1])
    # Parameters of the first location of each level, as a detector would gather them.
    params = torch.stack([level[int(b), :, 0, 0] for b, level in zip(rois[:, 0], out.params[:4], strict=True)])
    logits = head.merge(out.bottom, params, rois, labels)
    expected = (4, spec.R, spec.R) if head.mask_form == "roi" else (4, IMAGE[0] // 4, IMAGE[1] // 4)
    assert logits.shape == expected
    assert torch.isfinite(logits).all()
    masks = head.paste(logits, rois, IMAGE)
    assert masks.shape == (4, *IMAGE) and masks.dtype == torch.bool
    logits.sigmoid().sum().backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


def _blend_loop(bases, attentions, rois, M, R):
    """The blender's math one instance at a time, with plain ops."""
    out = []
    for attn, roi in zip(attentions, rois, strict=True):
        b = int(roi[0])
        pooled = roi_align(bases[b : b + 1], [roi[None, 1:]], (R, R), 0.25, sampling_ratio=1, aligned=True)[0]
        a = F.interpolate(attn.view(1, -1, M, M), size=(R, R), mode="bilinear", align_corners=False)[0]
        weights = torch.exp(a) / torch.exp(a).sum(0, keepdim=True)
        out.append((pooled * weights).sum(0))
    return torch.stack(out)


@pytest.mark.parametrize(("K", "M", "R"), [(4, 7, 56), (1, 1, 28), (8, 14, 28), (2, 4, 7)])
def test_blender_equals_a_per_instance_loop(K: int, M: int, R: int) -> None:
    bases = torch.randn(2, K, IMAGE[0] // 4, IMAGE[1] // 4)
    attentions = torch.randn(4, K * M * M)
    got = blend(bases, attentions, _rois(), M=M, R=R)
    torch.testing.assert_close(got, _blend_loop(bases, attentions, _rois(), M, R))


def test_blendmask_with_m1_is_a_weighted_sum_of_roi_aligned_bases() -> None:
    K, R = 4, 28
    bases = torch.randn(2, K, IMAGE[0] // 4, IMAGE[1] // 4)
    attentions = torch.randn(4, K)
    got = blend(bases, attentions, _rois(), M=1, R=R)
    pooled = roi_align(bases, _rois(), (R, R), 0.25, sampling_ratio=1, aligned=True)
    expected = torch.einsum("nk,nkhw->nhw", attentions.softmax(1), pooled)  # one scalar weight per base
    torch.testing.assert_close(got, expected)


def test_maskrcnn_head_equals_torchvision_given_the_same_weights() -> None:
    head = build_maskrcnn_head(R=28, in_channels=32, tower_channels=32, num_classes=NUM_CLASSES).eval()
    heads = MaskRCNNHeads(32, [256] * 4, 1)
    predictor = MaskRCNNPredictor(256, 256, NUM_CLASSES)
    convs = [m for m in head.convs if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for ours, block in zip(convs, heads, strict=True):
            block[0].weight.copy_(ours.weight)
            block[0].bias.copy_(ours.bias)
        predictor.conv5_mask.load_state_dict(head.deconv.state_dict())
        predictor.mask_fcn_logits.load_state_dict(head.logits.state_dict())
    levels = {name: torch.randn(2, 32, *shape[-2:]) for name, shape in feature_shapes(IMAGE, 32, 2).items()}
    rois, labels = _rois(), torch.tensor([0, 2, 1, 2])
    ours = head.merge(head.bottom(levels, IMAGE), torch.empty(4, 0), rois, labels)
    pooler = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], output_size=14, sampling_ratio=2)
    # torchvision takes boxes per image; put our instances back in their order afterwards.
    order = torch.argsort(rois[:, 0], stable=True)
    boxes = [rois[order][rois[order, 0] == b, 1:] for b in range(2)]
    theirs = predictor(heads(pooler(levels, boxes, [IMAGE, IMAGE])))[torch.arange(4), labels[order]]
    torch.testing.assert_close(ours, theirs[torch.argsort(order)])


def test_centermask_product_logits_are_the_logit_of_the_product() -> None:
    a, b = torch.randn(1000) * 4, torch.randn(1000) * 4
    torch.testing.assert_close(product_logits(a, b).sigmoid(), a.sigmoid() * b.sigmoid(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16])
@pytest.mark.parametrize("name", list(PRESETS))
def test_inference_in_low_precision(name: str, dtype: torch.dtype) -> None:
    spec = _small(PRESETS[name])
    model = build_segmenter(spec, trunk="small", num_classes=NUM_CLASSES).eval().to(dtype)
    with torch.inference_mode():
        out = model(torch.randn(2, 3, *IMAGE, dtype=dtype))
        params = torch.zeros(4, model.mask_head.num_params, dtype=dtype)
        logits = model.mask_head.merge(out.bottom, params, _rois().to(dtype), torch.tensor([0, 1, 2, 1]))
    assert logits.dtype == dtype and torch.isfinite(logits.float()).all()


def test_interpolation_matrix_is_bilinear_upsampling() -> None:
    x = torch.randn(3, 2, 7, 7)
    A = interpolation_matrix(7, 56, dtype=torch.float32, device=torch.device("cpu"))
    expected = F.interpolate(x, size=(56, 56), mode="bilinear", align_corners=False)
    torch.testing.assert_close(A @ x @ A.t(), expected, rtol=1e-5, atol=1e-5)


def test_basis_module_groupnorm_blocks_are_adelaidets() -> None:
    plain = BasisModule(in_channels=16, num_bases=4, channels=64, norm=None)
    names = [name for name, _ in plain.named_parameters()]  # the names of checkpoints written before the norm
    assert names[:2] == ["refine.0.0.weight", "refine.0.0.bias"] and "tower.4.weight" in names
    assert not any(isinstance(m, nn.GroupNorm) for m in plain.modules())
    torch.manual_seed(0)
    normed = BasisModule(in_channels=16, num_bases=4, channels=64)  # GN is the default
    convs = [m for m in normed.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    norms = [m for m in normed.modules() if isinstance(m, nn.GroupNorm)]
    assert len(convs) == len(norms) == 7 and all(m.num_groups == GN_GROUPS for m in norms)
    for conv in convs:  # bias-free, kaiming_uniform_(a=1): U(-b, b) with b = sqrt(3 / fan_in)
        bound = math.sqrt(3 / (conv.in_channels * 9))
        assert conv.bias is None and conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.95 * bound
    features = {f"p{i}": torch.randn(2, 16, 32 // 2 ** (i - 3), 32 // 2 ** (i - 3)) for i in (3, 4, 5)}
    assert normed(features).shape == (2, 4, 64, 64)
    with pytest.raises(ValueError, match="unknown basis norm 'BN'"):
        BasisModule(in_channels=16, num_bases=4, norm="BN")


def test_basis_module_from_p2_keeps_its_tower_at_p3_and_adds_p2_after_the_upsample() -> None:
    torch.manual_seed(0)
    module = BasisModule(in_channels=16, num_bases=4, channels=32, levels=("p2", "p3", "p4", "p5"))
    assert len(module.refine) == 3 and module.lateral is not None
    features = {f"p{i}": torch.randn(2, 16, 64 // 2 ** (i - 2), 48 // 2 ** (i - 2)) for i in (2, 3, 4, 5)}
    bases = module(features)
    assert bases.shape == (2, 4, 64, 48)  # P2's own grid
    # what the module computes: the P3-P5 path upsampled to P2's grid, plus P2's lateral conv, then the stride-4 conv
    x = module.refine[0](features["p3"])
    for refine, name in zip(module.refine[1:], ("p4", "p5"), strict=True):
        x = x + F.interpolate(refine(features[name]), size=x.shape[-2:], mode="bilinear", align_corners=False)
    x = F.interpolate(module.tower(x), size=(64, 48), mode="bilinear", align_corners=False)
    expected = module.predictor(module.upsampled(x + module.lateral(features["p2"])))
    torch.testing.assert_close(bases, expected)
    changed = module({**features, "p2": torch.zeros_like(features["p2"])})
    assert not torch.allclose(bases, changed)  # P2 reaches the bases
    # a checkpoint of 0.3.0's design (P2 summed before the tower as a fourth refine conv) does not load silently
    old = {f"refine.3.{k}": v for k, v in module.refine[0].state_dict().items()} | module.state_dict()
    with pytest.raises(RuntimeError, match="refine.3"):
        module.load_state_dict({k: v for k, v in old.items() if not k.startswith("lateral")})
    for bad in (("p4", "p5"), ("p2",)):
        with pytest.raises(ValueError, match="must start at p2 or p3"):
            BasisModule(in_channels=16, num_bases=4, levels=bad)


@pytest.mark.parametrize("trunk", sorted(TRUNKS))
def test_heads_read_the_basis_levels_of_their_trunk(trunk: str) -> None:
    for name in ("blendmask", "yolact", "centermask"):
        head = parse_spec(name).build(trunk=trunk, num_classes=NUM_CLASSES)
        module = next(m for m in head.modules() if isinstance(m, BasisModule))
        assert module.levels == TRUNKS[trunk].basis_levels
    assert TRUNKS["r50"].basis_levels == ("p3", "p4", "p5")  # the paper's
