"""One status line on stderr while a long analysis runs: the stage it is in and the seconds so
far, redrawn every second, erased when the work ends (before the results are printed).

Shown only when stderr is a terminal, so logs, pipes and tests never see it. The analysis code
marks its stages with `stage("...")`, a no-op when no status line is open:

    with status("scaling analyze"):
        res = run_analysis(table)      # calls stage("joint law: bootstrap ...") etc.
    print(results)
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

_active: _Line | None = None


class _Line:
    def __init__(self, label: str, stream: TextIO, every: float):
        self.label, self.stream, self.t0 = label, stream, time.monotonic()
        self.what, self.width = "starting", 0
        self.lock, self.done = threading.Lock(), threading.Event()
        self.ticker = threading.Thread(target=self._tick, args=(every,), daemon=True)

    def _tick(self, every: float) -> None:
        while not self.done.wait(every):
            self.draw()

    def draw(self) -> None:
        with self.lock:
            if self.done.is_set():
                return
            secs = f" ({time.monotonic() - self.t0:.0f} s)"
            msg = f"{self.label}: {self.what}"[: max(0, _columns(self.stream) - 1 - len(secs))]
            msg += secs  # cut to the terminal: a wrapped line can't be redrawn
            self.stream.write("\r" + msg.ljust(self.width))
            self.stream.flush()
            self.width = len(msg)

    def close(self) -> None:
        with self.lock:
            self.done.set()
            if self.width:
                self.stream.write("\r" + " " * self.width + "\r")
                self.stream.flush()
        if self.ticker.ident is not None:  # started
            self.ticker.join()


def _columns(stream: TextIO) -> int:
    """The width of the terminal `stream` writes to: $COLUMNS, else the terminal's, else 80
    (a pseudo-terminal may report 0)."""
    try:
        cols = int(os.environ.get("COLUMNS", "0")) or os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        cols = 0
    return cols if cols > 0 else 80


@contextmanager
def status(
    label: str, *, stream: TextIO | None = None, enabled: bool | None = None, every: float = 1.0
) -> Iterator[None]:
    """Open the status line for the `with` block (nested blocks keep the outer line)."""
    global _active
    stream = stream or sys.stderr
    tty = getattr(stream, "isatty", lambda: False)()
    on = (tty if enabled is None else enabled) and _active is None
    if not on:
        yield
        return
    line = _active = _Line(label, stream, every)
    try:
        line.draw()
        line.ticker.start()
        yield
    finally:
        _active = None
        line.close()


def stage(what: str) -> None:
    """Name the stage now running on the open status line (nothing when none is open)."""
    line = _active
    if line is not None:
        line.what = what
        line.draw()
