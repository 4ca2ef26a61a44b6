"""An output folder that already holds a run: refused unless ``--force``, and with ``--force`` replaced as a whole.

Writing a new run into the folder of an old one would mix them (the old run's meta.json or detections beside the
new metrics) or replace a checkpoint without a word. With ``--force`` the new run is written to a hidden sibling
folder, which takes the old folder's place only once the run has finished: an interrupted or failed run leaves the
old one as it was. A folder that holds no run (none of the files a run writes) is written into as it is, and is
never deleted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bmbench.errors import BmbenchError

TRAIN_FILES = ("checkpoint.pt", "train_log.csv", "meta.json")  # what `bmbench train` writes
EVALUATE_FILES = ("metrics.csv", "metrics.parquet", "detections.json", "meta.json")  # what `bmbench evaluate` writes


def held_run(out: Path, files: tuple[str, ...]) -> str | None:
    """The first of `files` that the folder `out` holds, or None."""
    return next((name for name in files if (Path(out) / name).exists()), None)


def check_replaceable(out: Path, files: tuple[str, ...], *, force: bool, option: str = "--out") -> None:
    """Refuse, before any work, a folder that already holds a run unless `force`."""
    held = held_run(out, files)
    if held is not None and not force:
        raise BmbenchError(
            f"{option} {out}: it already holds a run ({held}); pass --force to replace it, or choose another folder"
        )


@contextmanager
def replacing(out: Path, files: tuple[str, ...]) -> Iterator[Path]:
    """Yield the folder to write the run to: `out` itself when it holds no run, else a new hidden sibling that
    replaces `out` as a whole when the block ends without an exception (and is deleted when it does not)."""
    out = Path(out)
    if held_run(out, files) is None:
        yield out
        return
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    os.chmod(scratch, out.stat().st_mode & 0o7777)  # mkdtemp makes 0700: the new folder keeps the old one's mode
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, old / out.name)  # two renames: the old run stays whole until the new one is in place
    os.rename(scratch, out)
    shutil.rmtree(old, ignore_errors=True)
