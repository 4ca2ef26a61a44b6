"""The report's table of the reference masks of a suite's val split (``references.csv``, scored by
bmbench.ablation.dataset before the cells): masks built from the ground truth, each with one kind of knowledge,
scored like the cells. They say what a mask AP means on the data: how far a cell is from the best its features'
resolution allows (``stride-4``), and how much a smaller R can cost at most (``roi-28`` against ``roi-56``), so that
a gap the grid cannot show is read as the data's limit, not the head's."""

from __future__ import annotations

import pandas as pd

from bmbench.report.load import AblationSuite
from bmbench.report.tables import fmt_num
from bmbench.schema import BOUNDARY_AP, THIN_AP, TOUCHING_AP

KNOWS = {  # reference kind -> what its masks know (bmbench.evaluation.reference_masks)
    "box": "the box only",
    "foreground": "every instance's pixels in the box",
    "class-foreground": "the class's pixels in the box",
    "roi-28": "the mask as a 28×28 RoI",
    "roi-56": "the mask as a 56×56 RoI",
    "stride-4": "the mask at stride 4 (bases, P2), as a 56×56 RoI",
}
NOTE = (
    "Masks built from the ground truth on each ground-truth box, scored like the cells (`bmbench evaluate "
    "--reference KIND`). A cell scored on oracle boxes is read against them: `stride-4` is about the best a head "
    "can do whose masks come from stride-4 maps, and `roi-56` − `roi-28` about the most that R=28 can lose here."
)


def reference_table(suite: AblationSuite) -> pd.DataFrame:
    """One row per reference kind the suite scored, AP in points; empty when the suite has no references table."""
    frame = suite.references
    if frame is None or frame.empty:
        return pd.DataFrame()
    touching = TOUCHING_AP if TOUCHING_AP in frame else None
    columns = {  # title -> column; the ones the table lacks are left out
        "mask AP": "mask_AP",
        "AP50": "mask_AP50",
        "AP75": "mask_AP75",
        "Boundary AP": BOUNDARY_AP,
        "thin": THIN_AP,
        "touching": touching,
    }
    kinds = frame["reference"].astype(str)
    table = pd.DataFrame({"reference": kinds, "knows": [KNOWS.get(kind, "") for kind in kinds]})
    for title, column in columns.items():
        if column is not None and column in frame:
            table[title] = [fmt_num(value) for value in frame[column]]
    return table
