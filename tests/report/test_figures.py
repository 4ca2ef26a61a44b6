"""The figures are written, are PNGs and are not blank; absent data gives a note, not a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_fixtures import curves_frame, suite_frame, write_speed_run, write_suite

from bmbench.report import figures
from bmbench.report.load import load_ablation, load_speed_run

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
    return load_ablation(write_suite(tmp_path_factory.mktemp("ablate") / "quick"))


def test_latency_against_instances(run, tmp_path: Path) -> None:  # noqa: ANN001
    assert_drawn(figures.latency_plot(run, tmp_path / "n.png", against="N"), tmp_path / "n.png")


def test_latency_against_r(run, tmp_path: Path) -> None:  # noqa: ANN001
    assert_drawn(figures.latency_plot(run, tmp_path / "r.png", against="R"), tmp_path / "r.png")


def test_ap_against_latency(suite, tmp_path: Path) -> None:  # noqa: ANN001
    assert_drawn(figures.ap_vs_latency(suite, tmp_path / "ap.png"), tmp_path / "ap.png")


def test_ap_heatmap(suite, tmp_path: Path) -> None:  # noqa: ANN001
    assert_drawn(figures.ap_heatmap(suite, tmp_path / "heat.png"), tmp_path / "heat.png")


def test_absent_data_is_a_note_and_no_file(run, tmp_path: Path) -> None:  # noqa: ANN001
    k_sweep = load_speed_run(write_speed_run(tmp_path / "k"))
    k_sweep.frame["axis"] = "K"
    skipped = figures.latency_plot(k_sweep, tmp_path / "r.png", against="R")
    assert skipped.path is None and "sweeps K" in skipped.note and not (tmp_path / "r.png").exists()
    one_cell = suite_frame(ks=(4,), ms=(7,), rs=(56,))
    lonely = load_ablation(write_suite(tmp_path / "one", one_cell[one_cell["family"] == "blendmask"]))
    for draw in (figures.ap_heatmap, figures.ap_vs_latency):
        result = draw(lonely, tmp_path / "x.png")
        assert result.path is None and result.note
    assert not (tmp_path / "x.png").exists()
    one_n = run.frame[run.frame["instances"] == 100]
    run_one_n = load_speed_run(write_speed_run(tmp_path / "one-n"))
    run_one_n.frame = one_n
    assert figures.latency_plot(run_one_n, tmp_path / "n.png", against="N").path is None


def test_palette_gives_each_family_its_own_colour() -> None:
    colours = figures.palette(
        ["maskrcnn", "blendmask", "blendmask-adelaidet"],
        {"maskrcnn": "maskrcnn", "blendmask": "blendmask", "blendmask-adelaidet": "blendmask"},
    )
    assert len(set(colours.values())) == 3
    assert colours["blendmask"] == figures.palette(["blendmask"])["blendmask"]


@pytest.fixture()
def captured(monkeypatch: pytest.MonkeyPatch) -> list:
    """The matplotlib Figures the figure functions save (they are still written)."""
    figures_seen: list = []
    save = figures._save

    def keep(figure, path, title):  # noqa: ANN001, ANN202
        figures_seen.append(figure)
        return save(figure, path, title)

    monkeypatch.setattr(figures, "_save", keep)
    return figures_seen


def test_ap_against_latency_names_cells_in_a_legend_not_on_the_points(suite, tmp_path: Path, captured) -> None:  # noqa: ANN001
    assert_drawn(figures.ap_vs_latency(suite, tmp_path / "ap.png"), tmp_path / "ap.png")
    (ax,) = captured[0].axes
    assert len(ax.texts) == 0  # no text on the points: nothing to overlap
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    cells = suite.cells()
    assert len(labels) == len(cells) + 1 and "Pareto front (means)" in labels
    assert "K=4 M=7 R=56" in labels and "maskrcnn R=28" in labels and "yolact K=32 M=1" in labels
    handles, names = ax.get_legend_handles_labels()
    markers = {
        name: handle.lines[0].get_marker()
        for handle, name in zip(handles, names, strict=True)
        if name != "Pareto front (means)"
    }
    assert markers["maskrcnn R=28"] == "s" and markers["yolact K=32 M=1"] == "^"
    assert {markers[label] for label in labels if label.startswith("K=")} == {"o"}  # one marker per family
    assert "mean ± std" in ax.get_ylabel()


def test_heatmap_annotates_mean_and_spread(suite, tmp_path: Path, captured) -> None:  # noqa: ANN001
    figures.ap_heatmap(suite, tmp_path / "heat.png")
    texts = [t.get_text() for ax in captured[0].axes for t in ax.texts]
    assert "35.0\n± 0.2" in texts and "28.0\n± 0.1" in texts


def test_learning_curves_drawn_from_curves_and_skipped_without(suite, tmp_path: Path) -> None:  # noqa: ANN001
    skipped = figures.learning_curves(suite, tmp_path / "c.png")
    assert skipped.path is None and "not measured" in skipped.note and not (tmp_path / "c.png").exists()
    folder = write_suite(tmp_path / "with")
    curves_frame(suite_frame()).to_csv(folder / "curves.csv", index=False)
    assert_drawn(figures.learning_curves(load_ablation(folder), tmp_path / "c.png"), tmp_path / "c.png")


def test_every_built_in_family_has_its_own_colour_and_marker() -> None:
    from bmbench.variants import BUILT_IN, FAMILIES, family_origin

    built_in = sorted(family for family in FAMILIES if family_origin(family) == BUILT_IN)
    assert "condinst" in built_in
    colours = figures.palette(built_in)
    assert len(set(colours.values())) == len(built_in)
    markers = [figures.FAMILY_MARKERS[family] for family in built_in]
    assert len(set(markers)) == len(built_in) and figures.OTHER_MARKER not in markers
