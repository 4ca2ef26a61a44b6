"""Head plugins, for real: the example package's entry point made visible to importlib.metadata by a dist-info on
sys.path, then `bmbench variants`, one `bmbench speed` point and a micro `bmbench ablate` with it; a broken entry
point is one warning line while the others load; --plugin modules, a suite's plugins:, unknown families, cell ids
that follow the plugin's version."""

from __future__ import annotations

import json
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

import bmbench.variants as variants
from bmbench.ablation.cell import Cell
from bmbench.ablation.suite import load_suite
from bmbench.errors import BmbenchError
from bmbench.variants import FAMILIES, family_origin, load_plugins, parse_spec, unregister_plugins

tomllib = pytest.importorskip("tomllib")  # Python 3.11+: reads the example's pyproject.toml
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bmbench-polarmask"
runner = CliRunner()


def write_dist_info(site: Path, *, name: str, version: str, entry_points: dict[str, str]) -> None:
    """An installed distribution as importlib.metadata reads one: METADATA and entry_points.txt in a dist-info."""
    folder = site / f"{name.replace('-', '_')}-{version}.dist-info"
    folder.mkdir(parents=True)
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (folder / "entry_points.txt").write_text(f"[bmbench.heads]\n{lines}")


@pytest.fixture
def fresh_registry() -> Iterator[None]:
    """No plugin family before or after the test (the entry points are read again inside it)."""
    unregister_plugins()
    before = set(sys.modules)
    yield
    unregister_plugins()
    for module in set(sys.modules) - before:
        if module.startswith(("bmbench_polarmask", "broken_heads", "local_heads", "formula_heads")):
            del sys.modules[module]


@pytest.fixture
def installed_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry: None) -> Path:
    """The example package as pip would leave it: its code importable and its dist-info (with the entry points of
    its pyproject.toml) on sys.path."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    site = tmp_path / "site"
    write_dist_info(
        site, name=project["name"], version=project["version"], entry_points=project["entry-points"]["bmbench.heads"]
    )
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(site))
    return site


def test_the_entry_point_registers_the_family_with_its_package_and_version(installed_example: Path) -> None:
    assert "polarmask" not in FAMILIES
    spec = parse_spec("polarmask:A=12")  # an unknown family makes the registry read the entry points
    assert str(spec) == "polarmask:A=12,R=28" and spec.A == 12
    origin = family_origin("polarmask")
    assert (origin.kind, origin.package, origin.version) == ("entry point", "bmbench-polarmask", "0.1.0")
    assert str(origin) == "bmbench-polarmask 0.1.0 (entry point)" and len(origin.digest) == 12
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_variants_speed_and_a_micro_ablate_with_the_installed_example(
    cli_app: typer.Typer, installed_example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = runner.invoke(cli_app, ["variants"])
    assert listed.exit_code == 0, listed.output
    assert "bmbench-polarmask 0.1.0 (entry point)" in listed.output and "built in" in listed.output
    assert "counted with torch.utils.flop_counter" in listed.output
    rows = json.loads(runner.invoke(cli_app, ["variants", "--json", "polarmask"]).output)
    assert rows[0]["flops_from"] == "flop_counter" and rows[0]["top_gflops"] > 0

    tiny = ["--image-size", "64x48", "--trunk", "small", "--budget-s", "0.005", "--threads", "1", "--device", "cpu"]
    speed_out = tmp_path / "speed"
    args = ["speed", "--variants", "polarmask:A=8,R=8", "--vary", "R", "--values", "8", "--instances", "2"]
    timed = runner.invoke(cli_app, [*args, *tiny, "--no-end-to-end", "--out", str(speed_out)])
    assert timed.exit_code == 0, timed.output
    frame = pd.read_csv(speed_out / "speed.csv")
    assert set(frame["variant"]) == {"polarmask:A=8,R=8"} and (frame["median_ms"] > 0).all()
    meta = json.loads((speed_out / "meta.json").read_text())
    assert meta["plugins"]["polarmask"]["name"] == "bmbench-polarmask" and meta["plugins"]["polarmask"]["version"]

    monkeypatch.setenv("BMBENCH_DATA", str(tmp_path / "data"))
    suite = tmp_path / "micro.yaml"
    suite.write_text(
        "name: micro\n"
        "dataset: {kind: synthetic, images: 8, size: 64, seed: 0}\n"
        "train: {protocol: joint, iters: 2, batch_size: 2}\n"
        "eval: {curve: [100]}\n"
        "grid:\n  - {family: polarmask, A: [8], R: [8]}\n"
        "speed: {instances: [1], image_size: 64x64, trunk: small, budget_s: 0.005}\n"
    )
    out = tmp_path / "out"
    ran = runner.invoke(cli_app, ["ablate", str(suite), "--out", str(out), "--device", "cpu"])
    assert ran.exit_code == 0, ran.output
    summary = pd.read_csv(out / "micro" / "summary.csv")
    assert list(summary["status"]) == ["ok"] and list(summary["origin"]) == ["bmbench-polarmask 0.1.0 (entry point)"]
    record = json.loads((out / "micro" / summary["cell_id"][0] / "result.json").read_text())
    assert (
        record["config"]["plugin"]["name"] == "bmbench-polarmask" and record["config"]["plugin"]["version"] == "0.1.0"
    )


def test_a_broken_entry_point_is_one_line_and_the_others_still_load(
    cli_app: typer.Typer, installed_example: Path
) -> None:
    write_dist_info(
        installed_example, name="broken-heads", version="2.0", entry_points={"broken": "broken_heads.missing:HEAD"}
    )
    with pytest.warns(UserWarning) as caught:
        load_plugins()
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "entry point broken = broken_heads.missing:HEAD of broken-heads 2.0" in messages[0]
    assert "ModuleNotFoundError" in messages[0]
    assert "polarmask" in FAMILIES and "broken" not in FAMILIES

    listed = runner.invoke(cli_app, ["variants", "polarmask"])
    assert listed.exit_code == 0 and "bmbench-polarmask 0.1.0" in listed.output


def test_an_unknown_family_lists_the_known_ones_and_how_to_register(cli_app: typer.Typer, fresh_registry: None) -> None:
    with pytest.raises(BmbenchError) as info:
        parse_spec("mine:R=28")
    message = str(info.value)
    assert "unknown family or preset 'mine'" in message and "condinst" in message and "maskrcnn" in message
    assert "bmbench.heads' entry point" in message and "--plugin MODULE" in message and "\n" not in message
    result = runner.invoke(cli_app, ["variants", "mine"])
    assert result.exit_code == 2 and result.output.startswith("error: unknown family or preset 'mine'")


LOCAL_HEADS = """
from bmbench.plugins import Family
from bmbench_polarmask.heads import build_polarmask_head

__version__ = "{version}"
BMBENCH_HEADS = {{"localpolar": Family(defaults={{"A": 8, "R": 8}}, fixed={{}}, build=build_polarmask_head,
                                      summary="the example's head under another name")}}
"""


def _write_local(folder: Path, version: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "local_heads.py").write_text(LOCAL_HEADS.format(version=version))


def test_a_plugin_module_loads_by_name_and_a_suite_names_it(
    cli_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry: None
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    _write_local(tmp_path / "code", "1.0")
    bad = runner.invoke(cli_app, ["variants", "--plugin", "no_such_heads"])
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1
    assert "plugin module no_such_heads: cannot import it: ModuleNotFoundError" in bad.output

    suite = tmp_path / "s.yaml"
    suite.write_text("plugins: [local_heads]\ngrid:\n  - {family: localpolar, A: [4, 6]}\n")
    loaded = load_suite(suite)
    assert [str(s) for s in loaded.specs] == ["localpolar:A=4,R=8", "localpolar:A=6,R=8"]
    assert loaded.resolved()["plugins"] == ["local_heads"]
    assert str(family_origin("localpolar")) == "local_heads 1.0 (module)"
    spec = loaded.specs[0]
    cell = Cell(loaded.name, spec, 0, loaded.dataset, loaded.train, loaded.eval, loaded.speed)
    first_id, first_config = cell.cell_id, cell.config()
    assert first_config["plugin"]["name"] == "local_heads" and first_config["plugin"]["version"] == "1.0"

    # A new version of the plugin makes new cells: nothing measured with the old one is reused.
    unregister_plugins()
    del sys.modules["local_heads"]
    _write_local(tmp_path / "code", "1.1")
    load_plugins(["local_heads"])
    assert cell.cell_id != first_id and cell.config()["plugin"]["version"] == "1.1"

    # A spec of a module plugin unpickles where the module is not yet loaded (a spawned worker).
    payload = pickle.dumps(spec)
    unregister_plugins()
    del sys.modules["local_heads"]
    assert "localpolar" not in FAMILIES
    assert pickle.loads(payload) == parse_spec("localpolar:A=4")

    missing = tmp_path / "m.yaml"
    missing.write_text("grid:\n  - {family: nosuch}\n")
    with pytest.raises(BmbenchError, match=r"grid\[0\]\.family: unknown family 'nosuch'.*plugins: list"):
        load_suite(missing)


FORMULA_HEADS = """
from bmbench.plugins import Family
from bmbench_polarmask.heads import build_polarmask_head

def flops(*, A, R, hw, in_channels, tower_channels, num_instances):
    return {"top": 7 * A * hw["p3"], "merge": 1000 * A * R * R * num_instances}

BMBENCH_HEADS = {"formulapolar": Family(defaults={"A": 8, "R": 8}, fixed={}, build=build_polarmask_head,
                                        summary="the example's head with a FLOP formula", flops=flops)}
"""


def test_a_plugin_flop_formula_is_used_and_said(
    cli_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry: None
) -> None:
    from bmbench.bench.cost import has_formula, stage_costs
    from bmbench.models.backbone import feature_shapes

    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "formula_heads.py").write_text(FORMULA_HEADS)
    load_plugins(["formula_heads"])
    spec = parse_spec("formulapolar:A=4,R=8")
    assert has_formula(spec)
    p3 = feature_shapes((640, 480), 1)["p3"]
    costs = stage_costs(spec, image_size=(640, 480), num_instances=5, trunk="small")
    assert costs["merge"].total == 1000 * 4 * 8 * 8 * 5 and costs["top"].total == 7 * 4 * p3[-2] * p3[-1]
    assert costs["bottom"].total == 0 and costs["paste"].total == 0  # stages the formula leaves out cost nothing
    rows = json.loads(
        runner.invoke(cli_app, ["variants", "--json", "--plugin", "formula_heads", "formulapolar"]).output
    )
    assert rows[0]["flops_from"] == "formula"
    listed = runner.invoke(cli_app, ["variants", "--plugin", "formula_heads", "formulapolar"])
    assert listed.exit_code == 0 and "counted with torch.utils.flop_counter" not in listed.output


def test_a_plugin_cannot_take_a_built_in_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry: None
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "local_heads.py").write_text(
        "from bmbench_polarmask.heads import POLARMASK\nBMBENCH_HEADS = {'blendmask': POLARMASK}\n"
    )
    with pytest.raises(BmbenchError, match="family 'blendmask' is already registered \\(built in\\)"):
        load_plugins(["local_heads"])
    assert variants.FAMILIES["blendmask"].summary.startswith("K bases")
