"""The reference masks' table: loaded in points, carried into each environment's part, shown in the suite section
only when the suite scored them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import suite_frame, write_suite

from bmbench.errors import BmbenchError
from bmbench.evaluation.reference_masks import REFERENCES
from bmbench.report import load
from bmbench.report.reference_table import reference_table
from bmbench.report.render import suite_section

STORED = {  # COCOeval's 0..1, as bmbench.ablation.dataset.write_references stores them
    "box": 0.007,
    "foreground": 0.388,
    "class-foreground": 0.719,
    "roi-28": 0.988,
    "roi-56": 1.0,
    "stride-4": 0.708,
}


def suite_with_references(tmp_path: Path) -> load.AblationSuite:
    folder = write_suite(tmp_path / "quick", suite_frame())
    rows = [
        {"reference": kind, "split": "val", "mask_AP": ap, "mask_AP50": 1.0, "mask_AP75": ap, "boundary_AP": ap / 2,
         "mask_AP_thin": ap / 4, "mask_AP_touching": ap / 3, "mask_AP_ring": ap}
        for kind, ap in STORED.items()
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(folder / "references.csv", index=False)
    return load.load_ablation(folder)


def test_references_load_in_points_and_follow_each_environment(tmp_path: Path) -> None:
    suite = suite_with_references(tmp_path)
    assert suite.references is not None
    assert suite.references.set_index("reference")["mask_AP"].to_dict() == pytest.approx(
        {kind: 100 * ap for kind, ap in STORED.items()}
    )
    cpu = suite.frame.assign(device_name=suite.frame["family"].map({"maskrcnn": "GPU"}).fillna("CPU"))
    parts = load._split_suite(load.AblationSuite(suite.name, suite.path, cpu, {}, None, suite.references))
    assert all(part.references is suite.references for part in parts.values())  # one val split for every part


def test_the_table_gives_every_kind_with_what_it_knows(tmp_path: Path) -> None:
    table = reference_table(suite_with_references(tmp_path)).set_index("reference")
    assert list(table.index) == list(REFERENCES)
    assert list(table.columns) == ["knows", "mask AP", "AP50", "AP75", "Boundary AP", "thin", "touching"]
    assert table.loc["stride-4"].tolist()[1:] == ["70.8", "100.0", "70.8", "35.4", "17.7", "23.6"]
    assert table.loc["roi-28", "knows"] == "the mask as a 28×28 RoI"


def test_the_suite_section_shows_references_only_when_scored(tmp_path: Path) -> None:
    text = "\n".join(suite_section(suite_with_references(tmp_path), [], tmp_path / "report.md"))
    assert "#### Reference masks on the val split" in text and "| stride-4 " in text
    plain = load.load_ablation(write_suite(tmp_path / "plain", suite_frame()))
    assert plain.references is None
    assert "Reference masks" not in "\n".join(suite_section(plain, [], tmp_path / "report.md"))


def test_a_foreign_references_table_is_an_error(tmp_path: Path) -> None:
    folder = write_suite(tmp_path / "quick", suite_frame())
    pd.DataFrame({"kind": ["box"]}).to_csv(folder / "references.csv", index=False)
    with pytest.raises(BmbenchError, match="missing column"):
        load.load_ablation(folder)
