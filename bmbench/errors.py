"""The one exception type that the CLI turns into a one-line message and exit code 2 (and its kind for a write the
disk refused), and the warning category that it prints as one line."""

from __future__ import annotations

import errno
import os

# The errors of a write that the disk, not the data, refused: the user frees space or picks another folder, and a
# traceback would only hide that.
DISK_ERRNOS: dict[int, str] = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
KEPT_FILES = "files written before it are kept whole and nothing half-written was left"


class BmbenchError(ValueError):
    """Bad user input (a spec, a file, an option): reported in one line, exit code 2, nothing written."""


class BmbenchWarning(UserWarning):
    """A fault of the input that bmbench works around (e.g. annotations skipped, a metric not scored): the CLI
    prints each distinct message once, as one line."""


class DiskError(BmbenchError):
    """A write that the disk refused (no space, read-only, no permission): one line naming the file, the cause and
    what was kept, exit code 2. Picklable, so that it crosses process boundaries whole."""

    def __init__(self, path: str | os.PathLike[str], code: int, kept: str = KEPT_FILES) -> None:
        self.path, self.code, self.kept = str(path), code, kept
        cause = DISK_ERRNOS.get(code) or os.strerror(code)
        super().__init__(f"cannot write {self.path}: {cause}; {kept}")

    def keeping(self, kept: str) -> DiskError:
        """The same error, saying `kept` instead of what this one says was kept."""
        return DiskError(self.path, self.code, kept)

    def __reduce__(self) -> tuple:
        return DiskError, (self.path, self.code, self.kept)


def is_disk_error(err: BaseException) -> bool:
    """Whether `err` is an OSError the disk raised for a write it refused (see DISK_ERRNOS)."""
    return isinstance(err, OSError) and err.errno in DISK_ERRNOS


def as_disk_error(err: BaseException) -> DiskError | None:
    """`err` as a DiskError when it is one, or an OSError of a write the disk refused (named by its path); else
    None."""
    if isinstance(err, DiskError):
        return err
    if is_disk_error(err):
        return DiskError(getattr(err, "filename", None) or "a file", err.errno)  # type: ignore[attr-defined]
    return None
