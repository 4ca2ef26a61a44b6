"""The analytic FLOP formulas of bench/cost.py against torch.utils.flop_counter.FlopCounterMode."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bmbench.bench.cost import describe, stage_costs
from bmbench.models.backbone import TRUNKS, feature_shapes
from bmbench.models.fcos import DETECTOR_LEVELS
from bmbench.variants import PRESETS, parse_spec

IMAGE = (96, 160)
N = 5


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("trunk", ["small", "r50"])
@pytest.mark.parametrize("text", [*PRESETS, "blendmask:K=1,M=1,R=28", "maskrcnn:R=56", "centermask:S=14,R=28"])
def test_conv_flops_match_flop_counter(text: str, trunk: str) -> None:
    spec = parse_spec(text)
    widths = TRUNKS[trunk]
    head = spec.build(trunk=trunk, num_classes=7).eval()
    features = {k: torch.randn(s) for k, s in feature_shapes(IMAGE, widths.fpn_channels).items()}
    tower = [torch.randn(1, widths.tower_channels, *features[k].shape[-2:]) for k in DETECTOR_LEVELS]
    boxes = torch.tensor([[0, 3.0, 5.0, 40.0, 60.0]]).repeat(N, 1)
    costs = stage_costs(spec, image_size=IMAGE, num_instances=N, trunk=trunk)
    with torch.no_grad():
        bottom = head.bottom(features, IMAGE)
        assert _counted(lambda: head.bottom(features, IMAGE)) == costs["bottom"].conv
        assert _counted(lambda: head.top(tower)) == costs["top"].conv
        params = torch.randn(N, head.num_params)
        labels = torch.arange(N) % 7
        assert _counted(lambda: head.merge(bottom, params, boxes, labels)) == costs["merge"].conv


def test_costs_scale_as_the_formulas_say() -> None:
    r28, r56 = (stage_costs(parse_spec(f"maskrcnn:R={r}"), num_instances=10)["merge"].total for r in (28, 56))
    assert r56 / r28 == pytest.approx(4, rel=0.01)  # quadratic in R
    n10, n100 = (stage_costs(PRESETS["blendmask"], num_instances=n)["merge"].total for n in (10, 100))
    assert n100 == 10 * n10  # linear in N
    yolact = [stage_costs(PRESETS["yolact"], num_instances=10)["merge"].total for _ in range(2)]
    assert yolact[0] == yolact[1]


def test_describe_lists_parameters_and_gflops() -> None:
    rows = describe([PRESETS["blendmask"], PRESETS["maskrcnn"]])
    assert [row["variant"] for row in rows] == ["blendmask", "maskrcnn"]
    assert rows[1]["K"] is None and rows[1]["R"] == 28
    assert rows[0]["mask_params"] > 0 and rows[1]["merge_gflops"] > rows[0]["merge_gflops"]
