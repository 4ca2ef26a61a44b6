"""Made-up but schema-correct results folders for the report tests: a speed run and an ablation suite.

Times follow a simple cost model (a per-image part, and a per-instance part growing as N · R^exponent); AP is a
made-up function of K, M, R that peaks at R=56, K=4, M=7.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from bmbench.bench.scaling import scaling_table

INSTANCES = (1, 2, 5, 10, 20, 50, 100)
OWN = {  # variant -> (family, K, M, R, S, merge ms per instance at its own spec)
    "yolact": ("yolact", 32, 1, None, None, 0.05),
    "centermask": ("centermask", 1, None, 56, 32, 0.03),
    "blendmask": ("blendmask", 4, 7, 56, None, 0.02),
    "maskrcnn": ("maskrcnn", None, None, 28, None, 0.30),
}
BOTTOM_MS = {"yolact": 4.0, "centermask": 2.0, "blendmask": 5.0, "maskrcnn": 0.0}
DETECTOR_MS = 100.0


def _spec(family: str, K: int | None, M: int | None, R: int | None, S: int | None) -> str:
    parts = ",".join(f"{k}={v}" for k, v in (("K", K), ("M", M), ("R", R), ("S", S)) if v is not None)
    return f"{family}:{parts}"


def speed_frame(
    *,
    r_exponent: float = 2.0,
    n_exponent: float = 1.0,
    values: tuple[int, ...] = (28, 56, 112),
    device: str = "cpu",
    dtype: str = "fp32",
) -> pd.DataFrame:
    rows = []
    for variant, (family, K, M, R, S, per_instance) in OWN.items():
        applies = R is not None
        for value in values if applies else (None,):
            side = value if applies else None
            spec = _spec(family, K, M, side, S)
            for num in INSTANCES:
                scale = (side / R) ** r_exponent if applies else 1.0
                merge = per_instance * num**n_exponent * scale + 0.01
                stages = {"bottom": BOTTOM_MS[family], "top": 0.5, "merge": merge, "paste": 0.02 * num}
                stages["total"] = sum(stages.values())
                for stage, ms in stages.items():
                    rows.append(
                        _row(variant, spec, family, K, M, side, S, value, applies, num, stage, ms, device, dtype)
                    )
        own = _spec(family, K, M, R, S)
        total = [r for r in rows if r["spec"] == own and r["instances"] == 100 and r["stage"] == "total"][0]
        for stage, ms in (("detector", DETECTOR_MS), ("end_to_end", DETECTOR_MS + total["median_ms"])):
            rows.append(_row(variant, own, family, K, M, R, S, R, applies, 100, stage, ms, device, dtype))
    frame = pd.DataFrame(rows)
    for column in ("K", "M", "R", "S", "axis_value"):
        frame[column] = frame[column].astype("Int64")
    return frame


def _row(variant, spec, family, K, M, R, S, value, applies, num, stage, ms, device, dtype) -> dict:  # noqa: ANN001
    return {
        "variant": variant,
        "spec": spec,
        "family": family,
        "K": K,
        "M": M,
        "R": R,
        "S": S,
        "axis": "R",
        "axis_value": value,
        "axis_applies": applies,
        "instances": num,
        "stage": stage,
        "device": device,
        "dtype": dtype,
        "trunk": "r50",
        "image_size": "1088x800",
        "threads": 2,
        "compiled": False,
        "median_ms": ms,
        "iqr_ms": 0.02 * ms,
        "mean_ms": ms,
        "min_ms": 0.98 * ms,
        "n": 10,
        "noisy": False,
        "first_ms": ms,
        "status": "ok",
        "error": "",
    }


def write_speed_run(folder: Path, *, device_name: str = "Test CPU 9000", dtype: str = "fp32", **kwargs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame = speed_frame(dtype=dtype, **kwargs)
    frame.to_parquet(folder / "speed.parquet", index=False)
    frame.to_csv(folder / "speed.csv", index=False)
    scaling_table(frame).to_csv(folder / "scaling.csv", index=False)
    meta = {
        "command": "bmbench speed --vary R --instances 1..100",
        "git_commit": "abc123def456",
        "torch": "2.5.0",
        "torchvision": "0.20.0",
        "device": "cpu",
        "device_name": device_name,
        "cpu_model": device_name,
        "threads": 2,
        "dtype": dtype,
        "image_size": "1088x800",
        "seed": 0,
        "axis": "R",
        "status": "done",
        "variants": [{"variant": v, "spec": _spec(*OWN[v][:5])} for v in OWN],
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def made_up_ap(K: int, M: int, R: int) -> float:
    """Mask AP in points: more bases help up to 4, M>1 helps, R=56 helps; peaks at R=56, K=4, M=7."""
    return 28.0 + {1: 0.0, 2: 2.0, 4: 3.5, 8: 3.6}[K] + {1: 0.0, 7: 2.5, 14: 2.3}[M] + (1.0 if R == 56 else 0.0)


SEEDS = (0, 1, 2)


def seed_jitter(key: int, index: int, count: int) -> float:
    """AP points added to a cell's seed ``index`` of ``count``: ±0.1..0.2, a sign and size per cell, zero mean over
    the seeds (so each cell's mean is exactly its made-up AP) and different across cells (so differences between
    cells have a spread)."""
    size = 0.1 + 0.05 * (key % 3)
    sign = 1 if key % 2 else -1
    return sign * size * (index - (count - 1) / 2)


def suite_frame(
    *,
    ks: tuple[int, ...] = (1, 2, 4, 8),
    ms: tuple[int, ...] = (1, 7),
    rs: tuple[int, ...] = (28, 56),
    device_name: str | None = None,
    seeds: tuple[int, ...] = SEEDS,
) -> pd.DataFrame:
    """One row per cell and seed: the made-up AP plus seed_jitter (one seed: the made-up AP itself)."""
    cells = [
        ("blendmask", K, M, R, made_up_ap(K, M, R) / 100, 0.02 * K / 4 * (R / 56) ** 2, 1e5 * K)
        for R in rs
        for K in ks
        for M in ms
    ]
    cells += [("maskrcnn", None, None, 28, 0.35, 0.30, 2.6e6), ("yolact", 32, 1, None, 0.30, 0.05, 1e6)]
    rows = []
    for index, seed in enumerate(seeds):
        for family, K, M, R, ap, per, params in cells:
            key = (K or 3) + (M or 5) + (R or 28) // 28
            row = _cell(family, K, M, R, None, ap + seed_jitter(key, index, len(seeds)) / 100, per, params)
            cell_id = hashlib.sha256(f"{row['spec']}/{seed}".encode()).hexdigest()[:12]
            rows.append(row | {"seed": seed, "cell_id": cell_id})
    frame = pd.DataFrame(rows)
    if device_name is not None:
        frame["device_name"] = device_name
    for column in ("K", "M", "R", "S"):
        frame[column] = frame[column].astype("Int64")
    return frame


def _cell(family, K, M, R, S, ap, per_instance, params) -> dict:  # noqa: ANN001
    spec = _spec(family, K, M, R, S)
    named = {"blendmask:K=4,M=7,R=56": "blendmask", "maskrcnn:R=28": "maskrcnn", "yolact:K=32,M=1": "yolact"}
    row = {
        "suite": "quick",
        "cell_id": f"{abs(hash(spec)):012x}"[:12],
        "variant": named.get(spec, spec),
        "spec": spec,
        "family": family,
        "K": K,
        "M": M,
        "R": R,
        "S": S,
        "seed": 0,
        "status": "ok",
        "error": None,
        "mask_AP": ap,
        "mask_AP50": ap + 0.2,
        "mask_AP75": ap - 0.05,
        "box_AP": 0.4,
    }
    row |= {f"mask_ms_n{n}": 3.0 + per_instance * n for n in (1, 10, 100)}
    row |= {f"merge_ms_n{n}": 0.01 + per_instance * n for n in (1, 10, 100)}
    row |= {f"mask_gflops_n{n}": params / 1e5 * (1 + n / 100) for n in (1, 10, 100)}
    return row | {"mask_params": params, "dtype": "fp32"}


def write_suite(folder: Path, frame: pd.DataFrame | None = None, *, device_name: str = "Test CPU 9000") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame = suite_frame() if frame is None else frame
    frame.to_parquet(folder / "summary.parquet", index=False)
    frame.to_csv(folder / "summary.csv", index=False)
    meta = {
        "command": "bmbench ablate suites/quick.yaml",
        "git_commit": "abc123def456",
        "torch": "2.5.0",
        "device": "cpu",
        "device_name": device_name,
        "threads": 2,
        "dtype": "fp32",
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def write_results(root: Path) -> Path:
    """A results folder with one speed run and one ablation suite, both on one CPU, fp32."""
    write_speed_run(root / "speed" / "20250101-120000-varyR")
    write_suite(root / "ablate" / "quick")
    return root


CURVE_STEPS = (75, 150, 300)  # 25, 50 and 100 % of a 300-step schedule
CURVE_SHARES = (0.4, 0.7, 1.0)  # the share of its final AP a cell reaches at each of them


def curves_frame(summary: pd.DataFrame, *, swap: tuple[str, str] | None = None) -> pd.DataFrame:
    """curves.csv for a summary: each cell's AP at CURVE_STEPS as CURVE_SHARES of its final AP (same ranking at 50 %
    and 100 %); ``swap``: two specs whose values at 50 % are exchanged (their ranking differs there)."""
    rows = []
    for _, cell in summary.iterrows():
        for step, share in zip(CURVE_STEPS, CURVE_SHARES, strict=True):
            rows.append(
                {
                    "cell_id": cell["cell_id"],
                    "spec": cell["spec"],
                    "family": cell["family"],
                    "K": cell["K"],
                    "M": cell["M"],
                    "R": cell["R"],
                    "S": cell["S"],
                    "seed": cell["seed"],
                    "step": step,
                    "fraction": step / CURVE_STEPS[-1],
                    "mask_AP": cell["mask_AP"] * share,
                    "box_AP": cell["box_AP"] * share,
                }
            )
    frame = pd.DataFrame(rows)
    if swap is not None:
        half = frame["step"] == CURVE_STEPS[1]
        a, b = (half & frame["spec"].eq(spec) for spec in swap)
        values_a = frame.loc[a, "mask_AP"].to_numpy().copy()
        frame.loc[a, "mask_AP"] = frame.loc[b, "mask_AP"].to_numpy()
        frame.loc[b, "mask_AP"] = values_a
    return frame
