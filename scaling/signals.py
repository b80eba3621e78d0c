"""SIGINT and SIGTERM: one policy for `scaling train` and `scaling sweep run` (SLURM/k8s style).

The first signal inside a `graceful()` block (the training step loop) only sets a flag: the loop
finishes the dispatch in flight (`scaling.loop`), saves a checkpoint at its last step, and
raises `Interrupted`; the sweep runner releases the cell's lease on the way out and the CLI
prints one line and exits 128 + signum (130 for SIGINT, 143 for SIGTERM). Outside such a
block (data preparation, between cells) the first signal raises `Interrupted` at once. A second
signal raises `Interrupted` wherever the main thread is (a stuck save), and once the CLI has its
exit code every later signal is ignored, so shutdown never prints a traceback.

A flag is needed as well as the exception: Python drops exceptions raised inside the garbage
collector callbacks JAX registers, so `check()` re-raises from the flag at every step and cell.
Other launchers (e.g. submitit tasks on SLURM) reuse `install`, `graceful`, `check`, `requested`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_lock = threading.Lock()
_received: list[int] = []
_graceful_depth = 0


class Interrupted(KeyboardInterrupt):
    """Stopped by SIGINT/SIGTERM; `exit_code` = 128 + signum, `detail` says what was saved."""

    def __init__(self, signum: int = signal.SIGINT, detail: str = "") -> None:
        super().__init__(signum, detail)
        self.signum, self.detail = int(signum), detail

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signame(self) -> str:
        return signal.Signals(self.signum).name


def _handler(signum: int, frame: object) -> None:
    with _lock:
        _received.append(signum)
        n = len(_received)
    if n == 1 and _graceful_depth > 0:
        return  # the step loop saves a checkpoint and raises at the next step boundary
    raise Interrupted(_received[0])


def install() -> dict[int, object]:
    """Forget earlier signals and route SIGINT and SIGTERM to the shared handler (main thread
    only; elsewhere a no-op). Returns the previous handlers for `restore`."""
    reset()
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _handler) for sig in SIGNALS}


def restore(previous: dict[int, object]) -> None:
    """Put back the handlers `install` replaced (in-process callers such as tests)."""
    for sig, handler in previous.items():
        if handler is not None:
            signal.signal(sig, handler)


def ignore_further() -> None:
    """After the exit code is decided: later signals must not interrupt shutdown."""
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def requested() -> int | None:
    """The first signal received (signum), or None."""
    return _received[0] if _received else None


def check() -> None:
    """Raise `Interrupted` if a signal arrived, even if its exception got swallowed."""
    if _received:
        raise Interrupted(_received[0])


@contextlib.contextmanager
def graceful() -> Iterator[None]:
    """Inside this block the first signal only sets the flag (the loop polls `requested()`)."""
    global _graceful_depth
    _graceful_depth += 1
    try:
        yield
    finally:
        _graceful_depth -= 1


def reset() -> None:
    """Forget received signals (tests, and a launcher that handled one and goes on)."""
    with _lock:
        _received.clear()
