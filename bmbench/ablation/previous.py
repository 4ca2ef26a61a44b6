"""A finished cell that runs again (``--force``, ``--retry-failed``, or because its data changed) keeps its old
result until the new one is complete.

When the cell starts, its finished folder is renamed to ``.<cell-id>.previous`` (a rename: atomic, and nothing is
copied) and the cell gets a fresh, empty folder. Once the new ``result.json`` is written the old folder is deleted;
if the run stops before that (Ctrl-C, SIGTERM, an executor's failure), the partial new folder is deleted and the old
one renamed back. A run killed outright (kill -9) leaves both, and the next run on the suite settles them the same
way before it starts. Meanwhile `read_result` reads the old result.json from where it waits, so that the summary
keeps the cell.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bmbench.ablation.cell import PREVIOUS_SUFFIX, RESULT_FILE, previous_dir


def fresh_cell_dir(cell_dir: Path) -> None:
    """Just before a cell runs: set its finished folder aside (one holding result.json), delete an unfinished one
    (a run killed before it finished), and make the cell's folder anew, empty."""
    if (cell_dir / RESULT_FILE).is_file():
        kept = previous_dir(cell_dir)
        shutil.rmtree(kept, ignore_errors=True)  # an older one, settled already: this result is newer
        os.rename(cell_dir, kept)
    else:
        shutil.rmtree(cell_dir, ignore_errors=True)
    cell_dir.mkdir(parents=True)


def drop_previous(cell_dir: Path) -> None:
    """Once the cell's new result.json is written: the old folder it replaces goes."""
    shutil.rmtree(previous_dir(cell_dir), ignore_errors=True)


def settle_previous(suite_dir: Path) -> list[str]:
    """Every folder set aside under `suite_dir`: deleted when its cell has finished again, else put back in place
    of the unfinished rerun. Returns the ids of the cells whose old result was put back."""
    restored = []
    for kept in sorted(Path(suite_dir).glob(f".*{PREVIOUS_SUFFIX}")):
        if not kept.is_dir():
            continue
        cell_dir = suite_dir / kept.name[1 : -len(PREVIOUS_SUFFIX)]
        if (cell_dir / RESULT_FILE).is_file():
            shutil.rmtree(kept, ignore_errors=True)
            continue
        shutil.rmtree(cell_dir, ignore_errors=True)
        os.rename(kept, cell_dir)
        restored.append(cell_dir.name)
    return restored
