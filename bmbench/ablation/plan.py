"""Planning a suite: which of its cells this run runs and which it reuses, read from their records on disk (reads
only: ``bmbench ablate --dry-run`` prints the plan, and the driver, bmbench.ablation.driver, carries it out)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bmbench.ablation.cell import DATA_ID_KEY, Cell, expand_cells, read_result
from bmbench.ablation.suite import SuiteSpec
from bmbench.errors import BmbenchError


@dataclass(frozen=True)
class PlannedCell:
    """A cell and what this run does with it."""

    cell: Cell  # the cell
    action: str  # "run" or "reuse"
    previous: dict[str, Any] | None  # its result.json when one exists
    stale: bool = False  # it runs again because its result was measured on other data than the dataset's now


def plan_suite(
    suite: SuiteSpec,
    out: Path,
    *,
    force: bool = False,
    retry_failed: bool = False,
    only: list[str] | None = None,
    data_id: str | None = None,
) -> list[PlannedCell]:
    """Which cells run and which are reused; reads only. ``only`` restricts to cell ids (or unique prefixes).
    ``data_id``: the dataset's identity now (None: unknown); a finished cell that recorded another one is stale
    and runs again (a result recorded without one, by an older bmbench, is reused)."""
    cells = expand_cells(suite)
    if only:
        cells = _select(cells, only)
    suite_dir = Path(out) / suite.name
    plan = []
    for cell in cells:
        previous = read_result(suite_dir / cell.cell_id)
        recorded = (previous or {}).get(DATA_ID_KEY)
        stale = data_id is not None and recorded is not None and recorded != data_id
        rerun = force or previous is None or stale or (retry_failed and previous.get("status") != "ok")
        plan.append(PlannedCell(cell, "run" if rerun else "reuse", previous, stale))
    return plan


def _select(cells: list[Cell], only: list[str]) -> list[Cell]:
    chosen: dict[str, Cell] = {}
    for wanted in only:
        matches = [cell for cell in cells if cell.cell_id.startswith(wanted)]
        if len(matches) != 1:
            what = "no cell" if not matches else f"{len(matches)} cells"
            raise BmbenchError(f"--only {wanted}: {what} of this suite match (see --dry-run for the ids)")
        chosen[matches[0].cell_id] = matches[0]
    return [cell for cell in cells if cell.cell_id in chosen]
