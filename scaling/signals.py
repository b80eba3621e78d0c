"""SIGINT and SIGTERM: one policy for `scaling train` and `scaling sweep run` (SLURM/k8s style).

1. The FIRST signal inside a `graceful()` block (the training step loop, a lease's claim and
   release) only sets a flag: the loop finishes the dispatch in flight (`scaling.loop`), saves a
   checkpoint at its last step and raises `Interrupted`; the sweep runner releases the cell's
   lease on the way out; the CLI prints one line and exits 128 + signum (130 for SIGINT, 143 for
   SIGTERM). Outside such a block (importing JAX, preparing data, between cells) the first
   signal raises `Interrupted` at once: there is nothing to save yet.
2. LATER signals never raise: the stop is already under way (the chunk in flight, one
   checkpoint save, closing Orbax's threads), and an exception raised into that clean-up (a
   thread join, an Orbax save, a lock) printed tracebacks or hung the process. They are only
   counted, so a second Ctrl-C changes nothing: the save finishes and the same one line comes.
3. The user insists: the THIRD signal ends the process at once (`os._exit`), printing one line,
   with exit code 128 + signum, even while the main thread is stuck in C code (an XLA
   computation, a thread join): CPython runs a Python handler only when the main thread is back
   in the interpreter, and then only once for all the signals that arrived meanwhile, so a
   thread counts the deliveries themselves (`signal.set_wakeup_fd` writes one byte per
   delivery). A save cut short that way leaves only Orbax's temporary directory, so the
   previous checkpoint stays the newest readable one (and the temporary directory is removed at
   the next start). The lease file stays behind but is stale at once
   for launchers on the same host (its process is gone) and after --lease-ttl elsewhere.
4. Once the CLI has its exit code (`exit_quietly`), a signal during interpreter shutdown ends
   the process with that code at once, with nothing printed.

A flag is needed as well as the exception: Python drops exceptions raised inside the garbage
collector callbacks JAX registers, so `check()` re-raises from the flag at every step and cell
(and `install` keeps such a dropped `Interrupted` from printing an "Exception ignored" report).
Other launchers (e.g. submitit tasks on SLURM) reuse `install`, `graceful`, `check`, `requested`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
FORCE_AFTER = 3  # the signal that ends the process at once
# reentrant: Python runs a signal's handler in the main thread between two bytecodes, which may
# be inside `with _lock` (another handler, or reset()); a plain Lock deadlocked there
_lock = threading.RLock()
_received: list[int] = []
_delivered = [0]  # SIGINT/SIGTERM deliveries counted by the watcher thread (`_watch`)
_graceful_depth = 0
_watch: dict[str, Any] = {}  # the wakeup pipe and its reader thread, while installed
_quiet_code: list[int] = []  # set by exit_quietly: a signal then ends the process with this code
_forcing = threading.Lock()


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
    if n >= FORCE_AFTER:
        _force_exit(signum, n)
    if n == 1 and _graceful_depth == 0:
        raise Interrupted(signum)
    # inside the step loop (it saves and raises at the next step boundary), or a later signal
    # while the stop is under way: nothing is raised into the clean-up


def _force_exit(signum: int, n: int) -> None:
    if not _forcing.acquire(blocking=False):  # the other thread is ending the process already
        threading.Event().wait(5.0)
    name = signal.Signals(signum).name
    line = (
        f"\ninterrupted by {name} ({n} signals): stopped at once; the newest complete "
        f"checkpoint is kept, rerun the same command to resume\n"
    )
    with contextlib.suppress(OSError):
        os.write(2, line.encode())
    os._exit(128 + signum)


def _unraisable(previous: Any) -> Any:
    """sys.unraisablehook that drops an `Interrupted` raised where Python cannot propagate it
    (a garbage-collector callback, a __del__): the flag re-raises it at the next `check()`."""

    def hook(args: Any) -> None:
        if not isinstance(args.exc_value, Interrupted):
            previous(args)

    hook.previous = previous  # type: ignore[attr-defined]
    return hook


def install() -> dict[int, object]:
    """Forget earlier signals and route SIGINT and SIGTERM to the shared handler (main thread
    only; elsewhere a no-op). Returns the previous handlers for `restore`."""
    reset()
    if threading.current_thread() is not threading.main_thread():
        return {}
    if not hasattr(sys.unraisablehook, "previous"):  # not wrapped twice
        sys.unraisablehook = _unraisable(sys.unraisablehook)
    previous = {sig: signal.signal(sig, _handler) for sig in SIGNALS}
    _start_watch()
    return previous


def _start_watch() -> None:
    """Count deliveries in a thread (module doc, 3.), unless already counting or the wakeup fd
    is someone else's (an asyncio loop's): then only the handler counts."""
    if _watch:
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        theirs = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except ValueError:
        theirs = None
    if theirs != -1:
        if theirs is not None:
            signal.set_wakeup_fd(theirs)
        os.close(r)
        os.close(w)
        return
    thread = threading.Thread(target=_read_deliveries, args=(r,), name="signals", daemon=True)
    _watch.update(r=r, w=w, thread=thread)
    thread.start()


def _read_deliveries(fd: int) -> None:
    """The watcher: one byte (the signal number) per delivery, until the pipe is closed."""
    while True:
        try:
            data = os.read(fd, 64)
        except OSError:
            data = b""
        if not data:
            os.close(fd)
            return
        ours = [b for b in data if b in SIGNALS]
        if not ours:
            continue
        if _quiet_code:
            os._exit(_quiet_code[0])
        with _lock:
            _delivered[0] += len(ours)
            n = _delivered[0]
        if n >= FORCE_AFTER:
            _force_exit(ours[-1], n)


def _forget_watch_in_child() -> None:
    """A forked child has no watcher thread, and its deliveries must not land in our pipe."""
    if _watch:
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(-1)
        for end in ("r", "w"):
            with contextlib.suppress(OSError):
                os.close(_watch[end])
        _watch.clear()


os.register_at_fork(after_in_child=_forget_watch_in_child)


def _stop_watch() -> None:
    if not _watch:
        return
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    os.close(_watch["w"])  # the reader sees end of file, closes its end and returns
    _watch["thread"].join(timeout=2.0)
    _watch.clear()


def restore(previous: dict[int, object]) -> None:
    """Put back the handlers `install` replaced (in-process callers such as tests)."""
    for sig, handler in previous.items():
        if handler is not None:
            signal.signal(sig, handler)
    if previous:
        _stop_watch()
    if previous and hasattr(sys.unraisablehook, "previous"):
        sys.unraisablehook = sys.unraisablehook.previous


def exit_quietly(code: int) -> None:
    """After the exit code is decided (stdout and stderr flushed): a signal during interpreter
    shutdown (joining threads, exit hooks) ends the process with `code` at once, silently."""
    _quiet_code[:] = [code]  # the watcher too: the main thread may be stuck joining threads
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, lambda signum, frame: os._exit(code))


def ignore_after_exit_hooks() -> None:
    """Call first thing in a CLI process: once every later-registered exit hook has run (exit
    hooks run last-registered first), SIGINT and SIGTERM are ignored. Python puts their system
    defaults back while it finalizes its modules, after `exit_quietly`'s handlers can act: a
    Ctrl-C in that last instant killed the process by the signal (exit -2, seen once in `make
    faults`, after the one line was printed) instead of ending it with the code chosen. Nothing
    that could hang runs that late, so ignoring is safe."""
    import atexit

    def ignore() -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_IGN)

    atexit.register(ignore)


def requested() -> int | None:
    """The first signal received (signum), or None."""
    return _received[0] if _received else None


def check() -> None:
    """Raise `Interrupted` if a signal arrived, even if its exception got swallowed."""
    if _received:
        raise Interrupted(_received[0])


@contextlib.contextmanager
def graceful() -> Iterator[None]:
    """Inside this block the first signal only sets the flag: the code polls `requested()`, or
    the caller runs `check()` after the block."""
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
        _delivered[0] = 0
