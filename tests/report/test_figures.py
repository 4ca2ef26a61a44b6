"""The figures are written, are PNGs and are not blank; absent data gives a note, not a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_fixtures import suite_frame, write_speed_run, write_suite

from bmbench.report import figures
from bmbench.report.load import load_speed_run, load_suite

MIN_BYTES = 10_000


def assert_drawn(result: figures.FigureResult, path: Path) -> None:
    assert result.path == path and path.is_file(), result.note
    assert path.stat().st_size > MIN_BYTES
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.var() > 0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return load_speed_run(write_speed_run(tmp_path_factory.mktemp("speed") / "run"))


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return load_suite(write_suite(tmp_path_factory.mktemp("ablate") / "quick"))


def test_latency_against_instances(run, tmp_path: Path) -> None:  # noqa: ANN001
    assert_drawn(figures.latency_vs_instances(run, tmp_path / "n.png"), tmp_path / "n.png")


def test_latency_against_r(run, tmp_path: Path) -> None:  # noqa: ANN001
    assert_drawn(figures.latency_vs_r(run, tmp_path / "r.png"), tmp_path / "r.png")


def test_ap_against_latency(suite, tmp_path: Path) -> None:  # noqa: ANN001
    assert_drawn(figures.ap_vs_latency(suite, tmp_path / "ap.png"), tmp_path / "ap.png")


def test_ap_heatmap(suite, tmp_path: Path) -> None:  # noqa: ANN001
    assert_drawn(figures.ap_heatmap(suite, tmp_path / "heat.png"), tmp_path / "heat.png")


def test_absent_data_is_a_note_and_no_file(run, tmp_path: Path) -> None:  # noqa: ANN001
    k_sweep = load_speed_run(write_speed_run(tmp_path / "k"))
    k_sweep.frame["axis"] = "K"
    skipped = figures.latency_vs_r(k_sweep, tmp_path / "r.png")
    assert skipped.path is None and "sweeps K" in skipped.note and not (tmp_path / "r.png").exists()
    one_cell = suite_frame(ks=(4,), ms=(7,), rs=(56,))
    lonely = load_suite(write_suite(tmp_path / "one", one_cell[one_cell["family"] == "blendmask"]))
    for draw in (figures.ap_heatmap, figures.ap_vs_latency):
        result = draw(lonely, tmp_path / "x.png")
        assert result.path is None and result.note
    assert not (tmp_path / "x.png").exists()
    one_n = run.frame[run.frame["instances"] == 100]
    run_one_n = load_speed_run(write_speed_run(tmp_path / "one-n"))
    run_one_n.frame = one_n
    assert figures.latency_vs_instances(run_one_n, tmp_path / "n.png").path is None


def test_palette_gives_each_family_its_own_colour() -> None:
    colours = figures.palette(
        ["maskrcnn", "blendmask", "blendmask-adelaidet"],
        {"maskrcnn": "maskrcnn", "blendmask": "blendmask", "blendmask-adelaidet": "blendmask"},
    )
    assert len(set(colours.values())) == 3
    assert colours["blendmask"] == figures.palette(["blendmask"])["blendmask"]
