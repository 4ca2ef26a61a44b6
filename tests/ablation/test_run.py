from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import typer
from typer.testing import CliRunner

import bmbench.cli.ablate
from bmbench.ablation.cell import Cell, expand_cells
from bmbench.ablation.driver import run_suite, suite_lock
from bmbench.ablation.suite import load_suite
from bmbench.bench.options import default_threads
from bmbench.errors import BmbenchError
from bmbench.evaluation.reference_masks import REFERENCES, score_reference

FAKE_SUITE = """
name: fake
dataset: {kind: synthetic, images: 8, size: 64, seed: 0}
train: {iters: 2, batch_size: 2}
seeds: [0]
grid:
  - family: blendmask
    K: [1, 2, 3, 4]
    M: [2]
    R: [8]
speed: {instances: [1, 5], image_size: 64x64}
"""


def fake_runner(cell: Cell, *, cell_dir: Path, device: str, data_dir: Path | None) -> dict[str, Any]:
    """Pretends to train and time: K=2 raises, K=3 produces a NaN AP, K=5 kills its own process."""
    assert cell_dir.is_dir() and not any(cell_dir.iterdir())  # a (re)run starts from an empty folder
    (cell_dir / "checkpoint.pt").write_bytes(b"weights")
    if cell.spec.K == 2:
        raise RuntimeError("CUDA out of memory (simulated)")
    if cell.spec.K == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    delay = float(os.environ.get("FAKE_CELL_SECONDS", "0"))
    time.sleep(delay)
    return {
        "mask_AP": math.nan if cell.spec.K == 3 else 0.1 * cell.spec.K,
        "mask_AP50": 0.5,
        "mask_APs": math.nan,  # no small objects: not a failure
        "box_AP": 0.3,
        **{f"mask_ms_n{n}": 0.5 * n for n in cell.speed.instances},
        "env": {"pid": os.getpid(), "threads": torch.get_num_threads(), "device": device},
    }


def no_data(suite: object, device: str) -> None:
    return None


class InterruptOn:
    """A runner that behaves like fake_runner but raises KeyboardInterrupt on its n-th call (a Ctrl-C)."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def __call__(self, cell: Cell, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return fake_runner(cell, **kwargs)


def suite_file(tmp_path: Path, text: str = FAKE_SUITE, name: str = "fake.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def no_temporaries(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def run(path: Path, out: Path, **kwargs: Any):
    return run_suite(load_suite(path), out=out, device="cpu", runner=kwargs.pop("runner", fake_runner),
                     prepare=no_data, **kwargs)  # fmt: skip


def test_cell_ids_hash_the_resolved_config(tmp_path: Path) -> None:
    suite = load_suite(suite_file(tmp_path))
    cells = expand_cells(suite)
    assert len({c.cell_id for c in cells}) == len(cells) == 4
    assert all(len(c.cell_id) == 12 for c in cells)
    renamed = load_suite(suite_file(tmp_path, FAKE_SUITE.replace("name: fake", "name: other"), "other.yaml"))
    assert [c.cell_id for c in expand_cells(renamed)] == [c.cell_id for c in cells]  # the name is not config
    longer = load_suite(suite_file(tmp_path, FAKE_SUITE.replace("iters: 2", "iters: 3"), "longer.yaml"))
    assert not {c.cell_id for c in expand_cells(longer)} & {c.cell_id for c in cells}


def test_a_suite_runs_records_failures_and_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "out"
    outcome = run(suite_file(tmp_path), out)
    suite_dir = out / "fake"
    cells = expand_cells(load_suite(suite_file(tmp_path)))
    assert (outcome.total, outcome.ran, outcome.reused) == (4, 4, 0)
    by_k = {c.spec.K: json.loads((suite_dir / c.cell_id / "result.json").read_text()) for c in cells}
    assert by_k[1]["status"] == by_k[4]["status"] == "ok"
    assert by_k[2]["status"] == "failed" and by_k[2]["error"] == "RuntimeError: CUDA out of memory (simulated)"
    assert "Traceback" in by_k[2]["traceback"]
    assert by_k[3]["status"] == "failed" and by_k[3]["error"] == "non-finite values: mask_AP"
    assert sorted(outcome.failed) == sorted(c.cell_id for c in cells if c.spec.K in (2, 3))
    assert not outcome.ok

    summary = pd.read_csv(suite_dir / "summary.csv")
    assert summary.equals(pd.read_parquet(suite_dir / "summary.parquet")) or len(summary) == 4
    assert list(summary["K"]) == [1, 2, 3, 4]  # plan order, whatever the completion order
    for column in ("suite", "cell_id", "variant", "spec", "family", "M", "R", "seed", "dataset_kind",
                   "dataset_images", "protocol", "iters", "batch_size", "lr", "eval_boxes", "status", "error",
                   "mask_AP", "mask_AP75", "box_AP", "mask_ms_n1", "mask_ms_n5", "threads"):  # fmt: skip
        assert column in summary.columns, column
    assert summary.loc[0, "mask_ms_n5"] == 2.5
    meta = json.loads((suite_dir / "meta.json").read_text())
    assert meta["suite"]["name"] == "fake" and meta["suite"]["specs"][0] == "blendmask:K=1,M=2,R=8"
    assert meta["torch"] == torch.__version__ and len(meta["cells"]) == 4
    assert no_temporaries(out)


def test_a_second_run_redoes_nothing_and_is_fast(tmp_path: Path) -> None:
    path, out = suite_file(tmp_path), tmp_path / "out"
    run(path, out)
    before = {p: p.stat().st_mtime_ns for p in (out / "fake").rglob("result.json")}
    start = time.perf_counter()
    outcome = run(path, out, runner=InterruptOn(1))  # would interrupt if any cell ran
    assert time.perf_counter() - start < 5
    assert (outcome.ran, outcome.reused) == (0, 4)
    assert {p: p.stat().st_mtime_ns for p in (out / "fake").rglob("result.json")} == before
    assert len(pd.read_parquet(out / "fake" / "summary.parquet")) == 4
    assert len(outcome.failed) == 2  # reused failures still fail the run


def test_force_redoes_everything_and_retry_failed_only_the_failures(tmp_path: Path) -> None:
    path, out = suite_file(tmp_path), tmp_path / "out"
    run(path, out)
    assert run(path, out, retry_failed=True).ran == 2
    assert run(path, out, force=True).ran == 4


def test_an_interrupted_forced_run_keeps_the_results_it_has_not_redone(tmp_path: Path) -> None:
    path, out = suite_file(tmp_path), tmp_path / "out"
    run(path, out)
    with pytest.raises(KeyboardInterrupt):
        run(path, out, force=True, runner=InterruptOn(2))
    assert len(list((out / "fake").rglob("result.json"))) == 4  # the cell in flight keeps its old result too
    assert len(pd.read_csv(out / "fake" / "summary.csv")) == 4  # the summary holds every finished cell
    assert run(path, out).ran == 0


def test_the_summary_keeps_every_finished_cell_whatever_only_selects(tmp_path: Path) -> None:
    path, out = suite_file(tmp_path), tmp_path / "out"
    run(path, out)
    first = expand_cells(load_suite(path))[0].cell_id
    run(path, out, only=[first], force=True)
    summary = pd.read_csv(out / "fake" / "summary.csv")
    assert list(summary["cell_id"]) == [cell.cell_id for cell in expand_cells(load_suite(path))]


def test_an_interrupted_suite_resumes_with_the_unfinished_cells_only(tmp_path: Path) -> None:
    path, out = suite_file(tmp_path), tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(path, out, runner=InterruptOn(3))
    cells = expand_cells(load_suite(path))
    done = [c for c in cells if (out / "fake" / c.cell_id / "result.json").exists()]
    assert [c.spec.K for c in done] == [1, 2]
    assert len(pd.read_csv(out / "fake" / "summary.csv")) == 2  # the summary holds what finished
    assert no_temporaries(out)

    calls = []
    outcome = run(path, out, runner=lambda cell, **kw: calls.append(cell.spec.K) or fake_runner(cell, **kw))
    assert calls == [3, 4] and (outcome.ran, outcome.reused) == (2, 2)
    assert len(pd.read_csv(out / "fake" / "summary.csv")) == 4


KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_run import fake_runner, no_data
from bmbench.ablation.driver import run_suite
from bmbench.ablation.suite import load_suite
run_suite(load_suite({path!r}), out={out!r}, device="cpu", runner=fake_runner, prepare=no_data)
"""


def test_kill_9_loses_at_most_the_cell_in_flight(tmp_path: Path) -> None:
    path, out = suite_file(tmp_path), tmp_path / "out"
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), path=str(path), out=str(out))
    env = os.environ | {"FAKE_CELL_SECONDS": "1.5"}
    process = subprocess.Popen([sys.executable, "-c", script], env=env)
    first = out / "fake" / expand_cells(load_suite(path))[0].cell_id / "result.json"
    deadline = time.time() + 60
    while not first.exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    results = list((out / "fake").rglob("result.json"))
    assert 1 <= len(results) < 4
    for result in results:
        json.loads(result.read_text())  # every file there is whole
    outcome = run(path, out)
    assert outcome.ran == 4 - len(results) and outcome.reused == len(results)
    assert no_temporaries(out)


def test_stale_temporaries_from_a_killed_run_are_removed(tmp_path: Path) -> None:
    path, out = suite_file(tmp_path), tmp_path / "out"
    run(path, out)
    stale = out / "fake" / ".summary.csv.abc123.tmp"
    stale.write_text("half")
    run(path, out)
    assert not stale.exists()


def test_only_selects_cells_by_id_prefix(tmp_path: Path) -> None:
    path, out = suite_file(tmp_path), tmp_path / "out"
    cells = expand_cells(load_suite(path))
    outcome = run(path, out, only=[cells[3].cell_id[:6]])
    assert (outcome.total, outcome.ran) == (1, 1)
    with pytest.raises(BmbenchError, match="--only zzz: no cell"):
        run(path, out, only=["zzz"])


def test_a_second_run_on_the_same_suite_is_refused(tmp_path: Path) -> None:
    path, out = suite_file(tmp_path), tmp_path / "out"
    with suite_lock(out / "fake"), pytest.raises(BmbenchError, match="another `bmbench ablate` is running"):
        run(path, out)


def test_the_summary_holds_only_the_current_suite_cells(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(suite_file(tmp_path), out)
    edited = suite_file(tmp_path, FAKE_SUITE.replace("K: [1, 2, 3, 4]", "K: [1]").replace("iters: 2", "iters: 4"))
    outcome = run(edited, out)
    assert outcome.ran == 1
    assert len(pd.read_csv(out / "fake" / "summary.csv")) == 1


def test_local_workers_run_cells_in_separate_processes(tmp_path: Path) -> None:
    text = FAKE_SUITE.replace("K: [1, 2, 3, 4]", "K: [1, 4, 5]")
    path, out = suite_file(tmp_path, text), tmp_path / "out"
    outcome = run(path, out, workers=2)
    results = {
        c.spec.K: json.loads((out / "fake" / c.cell_id / "result.json").read_text())
        for c in expand_cells(load_suite(path))
    }
    assert results[1]["status"] == results[4]["status"] == "ok"
    pids = {results[k]["env"]["pid"] for k in (1, 4)}
    assert os.getpid() not in pids
    assert {results[k]["env"]["threads"] for k in (1, 4)} == {max(1, default_threads() // 2)}
    assert results[5]["status"] == "failed" and "worker process died" in results[5]["error"]
    assert outcome.failed == [c.cell_id for c in expand_cells(load_suite(path)) if c.spec.K == 5]
    assert no_temporaries(out)


def test_ray_executor_runs_a_two_cell_micro_suite(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    text = FAKE_SUITE.replace("K: [1, 2, 3, 4]", "K: [1, 4]")
    path, out = suite_file(tmp_path, text), tmp_path / "out"
    tests_dir = str(Path(__file__).parent)
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": tests_dir}})
    try:
        outcome = run(path, out, executor="ray")
    finally:
        ray.shutdown()
    assert (outcome.ran, outcome.failed) == (2, [])
    summary = pd.read_parquet(out / "fake" / "summary.parquet")
    assert list(summary["status"]) == ["ok", "ok"] and os.getpid() not in set(summary["pid"])


# --- the CLI -----------------------------------------------------------------------------------------------------


MICRO_SUITE = """
name: micro
dataset: {kind: synthetic, images: 8, size: 64, seed: 0}
train: {protocol: shared-trunk, iters: 4, trunk_iters: 3, batch_size: 2}
eval: {curve: [50, 100]}
grid:
  - {family: blendmask, K: 2, M: 2, R: 8}
variants: ["maskrcnn:R=8"]
speed: {instances: [1, 5], image_size: 64x64, trunk: small, budget_s: 0.01}
"""


def test_micro_suite_end_to_end_through_the_cli(
    cli_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real runner: a tiny synthetic dataset, a few iterations, speed at two instance counts."""
    monkeypatch.setenv("BMBENCH_DATA", str(tmp_path / "data"))
    path, out = suite_file(tmp_path, MICRO_SUITE, "micro.yaml"), tmp_path / "out"
    args = ["ablate", str(path), "--out", str(out), "--device", "cpu"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    suite_dir = out / "micro"
    summary = pd.read_parquet(suite_dir / "summary.parquet")
    assert list(summary["spec"]) == ["blendmask:K=2,M=2,R=8", "maskrcnn:R=8"]
    assert list(summary["status"]) == ["ok", "ok"]
    for column in ("mask_AP", "mask_AP50", "mask_AP75", "box_AP", "mask_ms_n1", "mask_ms_n5", "train_s",
                   "train_images_per_s", "infer_images_per_s", "mask_params", "mask_gflops_n5", "device_name",
                   "torch", "threads", "git_commit"):  # fmt: skip
        assert column in summary.columns, column
    assert (summary[["mask_ms_n1", "mask_ms_n5"]] > 0).all().all()
    assert summary["mask_AP"].between(0, 1).all()
    assert list(summary["trunk_reused"]) == [False, True]  # the shared trunk trained once
    for cell_id in summary["cell_id"]:
        assert (suite_dir / cell_id / "train" / "checkpoint.pt").is_file()
        assert (suite_dir / cell_id / "speed.parquet").is_file()
        json.loads((suite_dir / cell_id / "result.json").read_text())  # standard JSON (NaN written as null)
    assert pd.read_csv(suite_dir / "summary.csv")["cell_id"].tolist() == summary["cell_id"].tolist()
    curves = pd.read_csv(suite_dir / "curves.csv")  # each cell evaluated at 50 % and 100 % of its 4 steps
    assert curves.groupby("cell_id")["step"].apply(list).tolist() == [[2, 4], [2, 4]]
    assert curves["mask_AP"].between(0, 1).all() and set(curves["fraction"]) == {0.5, 1.0}
    references = pd.read_csv(suite_dir / "references.csv").set_index("reference")  # scored before the cells
    assert "scoring the reference masks (box, foreground" in result.output
    assert list(references.index) == list(REFERENCES) and set(references["split"]) == {"val"}
    val = next((tmp_path / "data").rglob("instances_val.json"))
    assert references.loc["stride-4", "mask_AP"] == pytest.approx(score_reference(val, "stride-4")["mask_AP"])
    assert references.loc["box", "mask_AP"] < references.loc["class-foreground", "mask_AP"] <= 1
    assert no_temporaries(out)

    start = time.perf_counter()
    again = CliRunner().invoke(cli_app, args)
    assert again.exit_code == 0 and "ran 0, reused 2" in again.output
    assert time.perf_counter() - start < 10


def test_cli_dry_run_prints_the_plan_and_writes_nothing(cli_app: typer.Typer, tmp_path: Path) -> None:
    path, out = suite_file(tmp_path), tmp_path / "out"
    result = CliRunner().invoke(cli_app, ["ablate", str(path), "--out", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    for cell in expand_cells(load_suite(path)):
        assert cell.cell_id in result.output
    assert "4 cells, 4 to run, 0 reused" in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("grid:\n  - {family: blendmask, M: [a]}\n", "grid[0].M: expected a list of integers"),
        ("grid:\n  - {family: blendmask, M: [14], R: [7]}\n", "grid[0]: no valid combination"),
        ("variants: [yolact]\ntrain: {bogus: 1}\n", "train.bogus: unknown key"),
    ],
)
def test_cli_rejects_an_invalid_suite_with_exit_2_and_writes_nothing(
    cli_app: typer.Typer, tmp_path: Path, text: str, message: str
) -> None:
    path, out = suite_file(tmp_path, text), tmp_path / "out"
    result = CliRunner().invoke(cli_app, ["ablate", str(path), "--out", str(out)])
    assert result.exit_code == 2
    assert f"error: {path}: {message}" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_missing_suite_file_exits_2(cli_app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app, ["ablate", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "none.yaml: no such file" in result.output
    assert not (tmp_path / "out").exists()


def test_cli_exit_status_says_whether_every_cell_succeeded(
    cli_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bmbench.cli.ablate, "run_suite", partial(run_suite, runner=fake_runner, prepare=no_data))
    out = tmp_path / "out"
    args = ["ablate", "--out", str(out), "--device", "cpu"]
    failing = CliRunner().invoke(cli_app, [*args, str(suite_file(tmp_path))])
    assert failing.exit_code == 1, failing.output
    assert "ran 4, reused 0, failed 2" in failing.output
    passing = CliRunner().invoke(
        cli_app, [*args, str(suite_file(tmp_path, FAKE_SUITE.replace("2, 3, ", ""), "ok.yaml"))]
    )
    assert passing.exit_code == 0, passing.output
    assert "cells" in passing.output


def test_cli_only_and_force_pick_the_cells(
    cli_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bmbench.cli.ablate, "run_suite", partial(run_suite, runner=fake_runner, prepare=no_data))
    path, out = suite_file(tmp_path), tmp_path / "out"
    first = expand_cells(load_suite(path))[0].cell_id
    args = ["ablate", str(path), "--out", str(out), "--device", "cpu", "--only", first[:5]]
    assert CliRunner().invoke(cli_app, args).exit_code == 0
    assert [p.parent.name for p in (out / "fake").rglob("result.json")] == [first]
    again = CliRunner().invoke(cli_app, [*args, "--force"])
    assert again.exit_code == 0 and "1 cells, ran 1, reused 0" in again.output
    bad = CliRunner().invoke(cli_app, [*args[:-1], "nope"])
    assert bad.exit_code == 2 and "--only nope: no cell of this suite" in bad.output


def test_cli_ctrl_c_says_what_was_kept_and_how_to_resume(
    cli_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupt = partial(run_suite, runner=InterruptOn(2), prepare=no_data)
    monkeypatch.setattr(bmbench.cli.ablate, "run_suite", interrupt)
    path, out = suite_file(tmp_path), tmp_path / "out"
    result = CliRunner().invoke(cli_app, ["ablate", str(path), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 130
    assert f"interrupted: 1 finished cells kept in {out / 'fake'}; run the same command again to resume" in (
        " ".join(result.output.split())
    )
