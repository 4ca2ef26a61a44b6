"""SIGTERM (a scheduler's stop, `kill`, `timeout`) unwinds a command as Ctrl-C does: the same cleanup runs and the
same line says what was kept, with exit code 143 (128 + SIGTERM) instead of 130."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGINT_EXIT = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
SIGTERM_EXIT = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is: a KeyboardInterrupt, so that every handler of Ctrl-C runs."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises Terminated in the main thread (elsewhere, signals cannot be handled: no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_word(err: KeyboardInterrupt) -> str:
    """How the run was stopped, as the first word of the line that says what was kept."""
    return "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"


def stop_code(err: KeyboardInterrupt) -> int:
    """The exit status of a run stopped by `err`."""
    return SIGTERM_EXIT if isinstance(err, Terminated) else SIGINT_EXIT
