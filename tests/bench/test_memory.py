"""The memory estimate behind `bmbench speed`'s refusal of a sweep that cannot fit: every built-in family has one."""

from __future__ import annotations

import pytest

from bmbench.bench.memory import bottom_bytes, merge_working_set_bytes, point_peak_bytes
from bmbench.variants import FAMILY_PRESETS, parse_specs

SIZE = (416, 544)


@pytest.mark.parametrize("preset", list(FAMILY_PRESETS))
def test_every_family_has_an_estimate_that_grows_with_n(preset: str) -> None:
    (spec,) = parse_specs(preset)
    one = merge_working_set_bytes(spec, num_instances=1, image_size=SIZE, trunk="small")
    hundred = merge_working_set_bytes(spec, num_instances=100, image_size=SIZE, trunk="small")
    assert one > 0 and hundred >= 99 * one  # per-instance tensors: linear in N (plus a small N-free part)
    peak = point_peak_bytes(spec, num_instances=100, image_size=SIZE, trunk="small")
    assert peak > hundred + bottom_bytes(spec, SIZE)


def test_condinst_merge_holds_its_dynamic_maps_at_stride_8() -> None:
    (spec,) = parse_specs("condinst:K=8,L=3,F=8")
    stride8, stride4 = (SIZE[0] // 8) * (SIZE[1] // 8), (SIZE[0] // 4) * (SIZE[1] // 4)
    expected = 10 * ((8 + 2 + 2 * 8 + 1) * stride8 + stride4) * 4
    assert merge_working_set_bytes(spec, num_instances=10, image_size=SIZE, trunk="small") == expected
