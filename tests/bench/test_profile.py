"""Profiler traces carry the `<variant>/<stage>` ranges; the per-operator table has self CPU and device times."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from bmbench.bench.options import make_config
from bmbench.bench.profile import OPERATOR_COLUMNS, profile_run, trace_name
from bmbench.bench.run_folder import run_speed
from bmbench.bench.workload import MASK_STAGES, MaskBranchWorkload, build_mask_head, random_inputs, sample_instances
from bmbench.variants import parse_spec

CPU = torch.device("cpu")


def _trace_names(path: Path) -> set[str]:
    return {event.get("name", "") for event in json.loads(path.read_text())["traceEvents"]}


def test_profile_run_writes_a_trace_with_stage_ranges(tmp_path: Path) -> None:
    spec = parse_spec("blendmask:K=2,M=2,R=8")
    image = (64, 64)
    head = build_mask_head(spec, trunk="small", seed=0, device=CPU, dtype=torch.float32)
    features, tower = random_inputs(image, trunk="small", seed=0, device=CPU, dtype=torch.float32)
    workload = MaskBranchWorkload(head, features, tower, sample_instances(3, image, seed=0), image)
    table = profile_run(workload.run, label=spec.name, trace_dir=tmp_path, device=CPU, worker=f"{spec}_N3")
    traces = list(tmp_path.glob("*.pt.trace.json"))
    assert len(traces) == 1 and traces[0].name.startswith(trace_name(f"{spec}_N3"))
    names = _trace_names(traces[0])
    assert {f"{spec.name}/{stage}" for stage in (*MASK_STAGES, "total")} <= names
    assert list(table.columns) == list(OPERATOR_COLUMNS)
    ranges = table.set_index("operator")
    assert ranges.loc[f"{spec.name}/merge", "calls"] == 1  # the active step only
    assert (table["self_cpu_ms"] >= 0).all() and table["self_cpu_ms"].sum() > 0
    assert any(op.startswith("torchvision::roi_align") for op in table["operator"])


def test_profile_flag_writes_traces_and_operator_csv(tmp_path: Path) -> None:
    config = make_config(
        values="8",
        variants="blendmask:K=2,M=2,R=8,maskrcnn:R=8",
        instances="2",
        image_size="64x64",
        device="cpu",
        budget_s=0.005,
        trunk="small",
        threads=1,
        profile=True,
        end_to_end=False,
    )
    run_speed(config, tmp_path)
    traces = sorted((tmp_path / "traces").glob("*.pt.trace.json"))
    assert len(traces) == 2
    names = set().union(*(_trace_names(path) for path in traces))
    assert {"blendmask:K=2,M=2,R=8/merge", "maskrcnn:R=8/merge", "maskrcnn:R=8/paste"} <= names
    ops = pd.read_csv(tmp_path / "profile_ops.csv")
    assert {"variant", "spec", "instances", "operator", "self_cpu_ms", "self_device_ms"} <= set(ops.columns)
    assert set(ops["variant"]) == {"blendmask:K=2,M=2,R=8", "maskrcnn:R=8"}
