"""A tiny sweep end to end: the documented columns and meta, marked points, scaling fits, failures recorded."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bmbench.bench import sweep as sweep_module
from bmbench.bench.options import make_config
from bmbench.bench.run_folder import check_out_dir, default_out_dir, run_speed
from bmbench.bench.scaling import fit_loglog, scaling_table
from bmbench.bench.sweep import run_sweep
from bmbench.errors import BmbenchError
from bmbench.schema import SCALING_COLUMNS, SPEED_COLUMNS, STABILITY_COLUMNS

TINY = {
    "image_size": "64x64",
    "device": "cpu",
    "budget_s": 0.005,
    "warmup": 1,
    "trunk": "small",
    "threads": 1,
}
DOCUMENTED = {"variant", "family", "K", "M", "R", "instances", "stage", "device", "dtype"}
DOCUMENTED |= {"median_ms", "iqr_ms", "mean_ms", "n", "noisy", "axis", "axis_value", "axis_applies", "status"}


def test_tiny_sweep_writes_columns_meta_and_scaling(tmp_path: Path) -> None:
    config = make_config(
        vary="R", values="8,16", variants="yolact:K=4,blendmask:K=2,M=2,R=8", instances="1,2,4", **TINY
    )
    run = run_speed(config, tmp_path / "run")
    frame = pd.read_csv(tmp_path / "run" / "speed.csv")
    assert list(frame.columns) == list(SPEED_COLUMNS) and DOCUMENTED <= set(frame.columns)
    assert pd.read_parquet(tmp_path / "run" / "speed.parquet").shape == frame.shape
    assert (frame["status"] == "ok").all() and (frame["median_ms"] > 0).all() and (frame["n"] >= 1).all()
    branch = frame[frame["stage"].isin(("bottom", "top", "merge", "paste", "total"))]
    # YOLACT has no R: measured once (3 N x 5 stages), marked; BlendMask at R=8 and 16.
    yolact = branch[branch["variant"] == "yolact:K=4,M=1"]
    assert len(yolact) == 15 and not yolact["axis_applies"].any() and yolact["axis_value"].isna().all()
    blend = branch[branch["variant"] == "blendmask:K=2,M=2,R=8"]
    assert sorted(blend["R"].unique()) == [8, 16] and blend["axis_applies"].all() and len(blend) == 30
    assert set(blend["spec"]) == {"blendmask:K=2,M=2,R=8", "blendmask:K=2,M=2,R=16"}
    # One row per (variant, axis value, N, stage).
    assert not branch.duplicated(["variant", "axis_value", "instances", "stage"]).any()
    # Each stage is its own measurement: bottom and top take no per-instance input, so one measurement of
    # the spec stands at every N; merge, paste and total are measured at each N, with their intervals.
    r16 = blend[blend["R"] == 16]
    for stage in ("bottom", "top"):
        assert r16[r16["stage"] == stage][["median_ms", "n", "ci_low_ms"]].nunique().max() == 1
    assert (branch["ci_low_ms"] <= branch["median_ms"]).all() and (branch["median_ms"] <= branch["ci_high_ms"]).all()
    assert set(branch["stop"]) <= {"precision", "cap", "budget"} and branch["merge_ws_mb"].gt(0).all()
    # End to end at the largest N, per variant.
    whole = frame[frame["stage"].isin(("detector", "end_to_end"))]
    assert len(whole) == 4 and set(whole["instances"]) == {4}
    assert (whole[whole["stage"] == "end_to_end"]["median_ms"].to_numpy() > 0).all()
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    for key in ("command", "git_commit", "torch", "torchvision", "device_name", "cpu_model", "threads", "dtype"):
        assert key in meta
    assert meta["image_size"] == "64x64" and meta["seed"] == 0 and meta["threads"] == 1 and meta["status"] == "done"
    assert meta["trunk"] == "small" and meta["budget_s"] == 0.005 and meta["compile"] is False
    scaling = pd.read_csv(tmp_path / "run" / "scaling.csv")
    assert list(scaling.columns) == list(SCALING_COLUMNS)
    assert {"R", "N"} <= set(scaling["x"]) and {"merge", "paste", "total"} <= set(scaling["stage"])
    assert run.wall_s > 0 and torch.get_num_threads() == run_threads_before


run_threads_before = torch.get_num_threads()


def test_scaling_fits_known_slopes() -> None:
    slope, r2 = fit_loglog([10, 20, 50, 100], [3 * n**1.0 for n in (10, 20, 50, 100)])
    assert slope == pytest.approx(1.0) and r2 == pytest.approx(1.0)
    rows = []
    for R in (28, 56, 112):
        for n in (1, 10, 20, 100):
            rows.append({"variant": "m", "stage": "merge", "axis": "R", "axis_value": R, "axis_applies": True})
            rows[-1] |= {"instances": n, "median_ms": 0.001 * n * R**2 + (5.0 if n == 1 else 0), "status": "ok"}
    table = scaling_table(pd.DataFrame(rows))
    by_r = table[table["x"] == "R"].iloc[0]
    assert by_r["slope"] == pytest.approx(2.0) and by_r["at"] == "N=100"
    by_n = table[(table["x"] == "N") & (table["at"] == "R=56")].iloc[0]
    assert by_n["slope"] == pytest.approx(1.0) and by_n["x_min"] == 10  # N=1 left out: 10..100 holds 3 counts
    assert np.isclose(by_n["r2"], 1.0)


def test_invalid_combination_is_skipped_and_listed(tmp_path: Path) -> None:
    config = make_config(
        vary="M", values="2,16", variants="blendmask:K=2,M=2,R=8", instances="1", end_to_end=False, **TINY
    )
    run = run_speed(config, tmp_path / "run")
    assert [(s.axis_value, "M=16 must not exceed R=8" in s.reason) for s in run.skipped] == [(16, True)]
    assert set(run.frame["M"]) == {2}
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["skipped"][0]["axis_value"] == 16


def test_out_of_memory_is_recorded_and_the_sweep_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    real = sweep_module.MaskBranchWorkload.run

    def flaky(self, section=None):  # noqa: ANN001
        if len(self.instances) == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, section) if section is not None else real(self)

    monkeypatch.setattr(sweep_module.MaskBranchWorkload, "run", flaky)
    config = make_config(variants="blendmask:K=2,M=2,R=8", values="8", instances="1,2,4", end_to_end=False, **TINY)
    frame = run_sweep(config).frame
    status = frame.groupby("instances")["status"].agg(set).to_dict()
    assert status == {1: {"ok"}, 2: {"oom"}, 4: {"ok"}}
    failed = frame[frame["status"] == "oom"]
    assert failed["median_ms"].isna().all() and (failed["n"] == 0).all()
    assert failed["error"].str.contains("OutOfMemoryError").all()


def test_run_folders_are_never_overwritten(tmp_path: Path) -> None:
    config = make_config(device="cpu")
    now = datetime(2026, 1, 2, 3, 4, 5)
    first = default_out_dir(config, root=tmp_path, now=now)
    assert first.name == "20260102-030405-varyR"
    first.mkdir()
    assert default_out_dir(config, root=tmp_path, now=now).name == "20260102-030405-varyR-2"
    assert default_out_dir(config, root=tmp_path, now=now, check=True).name == "20260102-030405-check"
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "speed.csv").write_text("x\n")
    with pytest.raises(BmbenchError, match="already holds a run"):
        check_out_dir(tmp_path / "done")


@pytest.mark.parametrize("schedule", ["interleaved", "sequential"])
def test_every_measurement_warms_up_once_and_rows_come_in_ascending_n(schedule: str) -> None:
    config = make_config(
        variants="blendmask:K=2,M=2,R=8,maskrcnn:R=8",
        values="8",
        instances="1,2,4",
        end_to_end=True,
        schedule=schedule,
        **TINY,
    )
    result = run_sweep(config)
    frame = result.frame
    totals = frame[frame["stage"] == "total"]
    assert totals["first_ms"].notna().all()  # each (point, N) workload warmed up once
    assert list(totals["instances"]) == [1, 2, 4, 1, 2, 4]
    assert (frame["schedule"] == schedule).all()
    if schedule == "interleaved":  # the stages' timed first calls, made while building, are the warm-up
        at_4 = frame[frame["instances"] == 4].set_index(["spec", "stage"])["first_ms"].unstack()
        stages = at_4[["bottom", "top", "merge", "paste"]].sum(axis=1)
        assert np.allclose(at_4["total"], stages)  # the whole branch's first run: its stages', one after another
    whole = frame[frame["stage"] == "end_to_end"]
    assert whole["first_ms"].notna().tolist() == [True, False]  # the shared trunk warms up once
    # the drift probe ran in every cycle, and each row carries its ratio to the probe
    samples = result.samples
    assert set(samples[samples["stage"] == "probe"]["cycle"]) >= set(samples[samples["stage"] != "probe"]["cycle"])
    branch = frame[~frame["stage"].isin(["detector", "end_to_end"])]
    assert branch["ratio_to_ref"].notna().all() and (branch["ratio_ci_low"] <= branch["ratio_to_ref"]).all()
    assert result.drift["cycles"] >= 1 and result.drift["ref_ms_min"] <= result.drift["ref_ms_max"]


def test_interleaved_cycles_time_each_stage_in_shared_cycles() -> None:
    config = make_config(
        variants="blendmask:K=2,M=2,R=8", values="8,16", instances="1,2", end_to_end=False, max_repeats=7, **TINY
    )
    steps: list[tuple[str, int]] = []
    result = run_sweep(config, progress=lambda description, done=1: steps.append((description, done)))
    samples = result.samples[result.samples["stage"] != "probe"]
    # 2 points x (bottom, top + 2 N x (merge, paste, total)) = 16 measurements, each at most once in a cycle
    assert samples.groupby(["spec", "instances", "stage"]).ngroups == 16
    assert not samples.duplicated(["spec", "instances", "stage", "cycle"]).any()
    # the measurements fitted together (one stage) were timed in the very same cycles
    for stage, group in samples.groupby("stage"):
        cycles = group.groupby(["spec", "instances"])["cycle"].apply(tuple)
        assert cycles.nunique() == 1, stage
    probe = result.samples[result.samples["stage"] == "probe"]
    assert sorted(probe["cycle"]) == list(range(result.cycles))  # the probe in every cycle, to the last
    assert samples["cycle"].max() == result.cycles - 1
    assert sum(done for _, done in steps) == 1 + 2  # the warm-up, then each point as it finishes
    assert (result.frame["n"] <= result.cycles).all() and (result.frame["n"] >= config.min_repeats).all()


def test_a_compile_failure_is_recorded_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(head):  # noqa: ANN001, ANN202 - what torch.compile does without a working C++ compiler
        def fail(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise RuntimeError("BackendCompilerFailed: InvalidCxxCompiler: No working C++ compiler found\nmore")

        return {"bottom": fail, "top": fail, "merge": fail}

    monkeypatch.setattr(sweep_module, "compile_stages", broken)
    config = make_config(variants="blendmask:K=2,M=2,R=8", values="8", instances="1", compile=True, **TINY)
    frame = run_sweep(config).frame
    assert (frame["status"] == "error").all() and frame["compiled"].all()
    assert frame["error"].str.startswith("RuntimeError: BackendCompilerFailed: InvalidCxxCompiler").all()
    assert not frame["error"].str.contains("\n").any()


def test_cpu_out_of_memory_is_oom_and_its_stack_dump_stays_off_the_terminal(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from torchvision.ops import roi_align

    real = sweep_module.MaskBranchWorkload.run

    def huge(self, section=None):  # noqa: ANN001
        if len(self.instances) == 2:  # a real failed allocation: torchvision prints a C++ stack dump to fd 2
            roi_align(torch.zeros(1, 1, 4, 4), torch.tensor([[0.0, 0, 0, 2, 2]]), (300_000, 300_000))
        return real(self, section) if section is not None else real(self)

    monkeypatch.setattr(sweep_module.MaskBranchWorkload, "run", huge)
    config = make_config(variants="blendmask:K=2,M=2,R=8", values="8", instances="1,2", end_to_end=False, **TINY)
    capfd.readouterr()
    frame = run_sweep(config).frame
    printed = capfd.readouterr().err
    failed = frame[frame["instances"] == 2]
    assert set(failed["status"]) == {"oom"} and set(frame[frame["instances"] == 1]["status"]) == {"ok"}
    assert failed["error"].str.contains("can't allocate memory").all()
    assert failed["error"].str.contains("native stderr").all() and "\n" not in failed["error"].iloc[0]
    assert "frame #" not in printed and "Exception across libtorch" not in printed


def test_a_sweep_that_cannot_fit_is_refused_with_its_estimate(tmp_path: Path) -> None:
    config = make_config(variants="yolact", instances="1", image_size="100000x100000", trunk="small", device="cpu")
    with pytest.raises(BmbenchError, match=r"100000x100000: the largest point needs about .* GiB"):
        run_speed(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_out_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(BmbenchError, match="not a folder"):
        check_out_dir(tmp_path / "file" / "run")
    with pytest.raises(BmbenchError, match="not a folder"):
        check_out_dir(tmp_path / "file")


def test_a_failed_point_is_not_retried_in_later_cycles(monkeypatch: pytest.MonkeyPatch) -> None:
    real = sweep_module.MaskBranchWorkload.run
    calls = {"failing": 0}

    def flaky(self, section=None):  # noqa: ANN001
        if len(self.instances) == 2:
            calls["failing"] += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, section) if section is not None else real(self)

    monkeypatch.setattr(sweep_module.MaskBranchWorkload, "run", flaky)
    config = make_config(
        variants="blendmask:K=2,M=2,R=8", values="8", instances="1,2", end_to_end=False, max_repeats=8, **TINY
    )
    frame = run_sweep(config).frame
    assert calls["failing"] == 1 and set(frame[frame["instances"] == 2]["status"]) == {"oom"}
    assert (frame[frame["instances"] == 1]["n"] >= 3).all()


def test_runs_two_write_a_second_run_with_the_same_probe_and_a_stability_table(tmp_path: Path) -> None:
    from bmbench.report.load import discover

    config = make_config(
        variants="blendmask:K=2,M=2,R=8", values="8,16,24", instances="1,2,4", end_to_end=False, runs=2, **TINY
    )
    run = run_speed(config, tmp_path / "speed" / "run")
    second = tmp_path / "speed" / "run" / "run2"
    assert (second / "speed.csv").exists() and (second / "samples.csv").exists()
    first_meta = json.loads((tmp_path / "speed" / "run" / "meta.json").read_text())
    second_meta = json.loads((second / "meta.json").read_text())
    assert first_meta["drift"]["probe_side"] == second_meta["drift"]["probe_side"] > 0  # one probe for both
    stability = pd.read_csv(tmp_path / "speed" / "run" / "stability.csv")
    assert {"points-ms", "points-ratio", "exponent"} <= set(stability["kind"])
    assert tuple(stability.columns) == STABILITY_COLUMNS and set(stability["run"]) == {2}
    assert run.stability is not None and len(run.repeats) == 1
    speed_runs, _ = discover(tmp_path)
    assert [r.name for r in speed_runs] == ["run"] and [r.name for r in speed_runs[0].repeats] == ["run2"]


def test_a_run_that_stopped_part_way_is_measured_again_into_the_same_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "speed.csv").write_text("partial")
    (out / "meta.json").write_text(json.dumps({"status": "running"}))  # interrupted, or a write failed
    check_out_dir(out)  # no refusal: the rerun resumes there
    (out / "meta.json").write_text(json.dumps({"status": "done"}))
    with pytest.raises(BmbenchError, match="already holds a run"):
        check_out_dir(out)
