"""Leases: a heartbeat file per run so that exactly one launcher trains each cell.

DIR/leases/<run_id>.json holds {owner, host, pid, pid_start, expires, ...}. Every claim, steal,
refresh and release happens under an exclusive `flock` on DIR/leases/.lock, so reading a lease
and replacing it is one atomic step across processes (flock also works on NFS/Lustre mounts that
support locking). A fresh lease is created with O_CREAT | O_EXCL; a stale one is replaced (temp
file + os.replace). A lease is stale when `expires` has passed, or when its owner ran on this
host and that process is gone: exited (a SIGKILLed launcher on the same machine is picked up at
once, reaped or not), or its pid now names another process (`pid_start`, the owner's start
time, differs: a lease left before a reboot). A lease whose owner runs on this host and is alive
is never stale, whatever the clocks say. A background thread refreshes `expires` every ttl/4
(timed by the monotonic clock); if it finds the lease owned by someone else it sets `lost`.
Owners with the same `owner` string (a requeued SLURM job) may re-take their lease.

Clocks: wall-clock `expires` is only the first guess. A launcher that keeps looking at a lease
(a waiting `sweep run`) judges it by its own monotonic clock: a lease whose content changed less
than its ttl ago is live, one unchanged for longer than its ttl is stale, whatever the wall clocks
of the two hosts say (a clock set back, or ahead, cannot keep a dead lease alive for longer than
one ttl of watching). A damaged lease file counts as expired, with a warning.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from scaling.errors import DiskFullError, UserError
from scaling.fileio import atomic_write, file_lock, read_json, writing

HOST = socket.gethostname()
_seen: dict[str, tuple[tuple, float]] = {}  # lease path -> (content key, monotonic first seen)


MIN_TTL_S = 5.0  # --lease-ttl: below this a heartbeat (every ttl/4) cannot keep a lease alive
# above this the heartbeat thread's wait overflows, and a dead launcher's cells stay held for
# longer than any run needs (the heartbeat renews a live one, so a long run needs no long ttl)
MAX_TTL_S = 7 * 24 * 3600.0


def check_ttl(ttl: float, minimum: float = 0.0) -> float:
    """The lease ttl in seconds, or UserError (0, negative or infinite: every lease would be
    expired at once, or never). The CLI asks for at least `MIN_TTL_S`: with a tiny ttl the
    heartbeat cannot keep up (a file write, a lock, a busy host), the lease of a launcher on
    another host expires while it trains, and a second launcher trains the same cell."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise UserError(f"--lease-ttl {ttl!r}: must be a finite number of seconds, e.g. 120")
    if ttl <= 0:
        raise UserError(f"--lease-ttl {ttl:g}: must be > 0 seconds (default 120 local, 300 slurm)")
    if ttl > MAX_TTL_S:
        raise UserError(
            f"--lease-ttl {ttl:g}: must be at most {MAX_TTL_S:g} seconds (a week; the heartbeat "
            f"renews a live lease, so long runs need no long ttl); the defaults are 120 (local) "
            f"and 300 (slurm)"
        )
    if ttl < minimum:
        raise UserError(
            f"--lease-ttl {ttl:g}: must be at least {minimum:g} seconds, or leases expire while "
            f"their launcher trains and two launchers train the same run; the defaults are 120 "
            f"(local) and 300 (slurm)"
        )
    return float(ttl)


def default_owner() -> str:
    """A unique owner id for this launcher process."""
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _locked(lease_dir: Path):
    return file_lock(Path(lease_dir) / ".lock")


_EXPIRED = {"owner": "?", "expires": 0.0}


def read_lease(path: Path) -> dict[str, Any] | None:
    """The lease's content; None when absent; an expired stand-in (with a warning) when damaged."""
    if not Path(path).is_file():
        return None
    info = read_json(path, fix="treating the lease as expired", default=_EXPIRED)
    if not isinstance(info, dict) or not _number(info.get("expires")):
        return dict(_EXPIRED)
    return info


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _pid_alive(pid: int) -> bool:
    """Whether the process runs. A zombie (exited, not yet reaped) does not: a `--workers`
    launcher killed by SIGKILL (the OOM killer) stays one until the first launcher reaps it,
    and that launcher reaps only after waiting for the cell the zombie's lease holds."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name, from the state on ([] when it
    cannot be read: not Linux, or no such process)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def _zombie(pid: int) -> bool:
    """True when /proc says the process has exited and waits to be reaped (Linux)."""
    return _proc_stat(pid)[:1] == ["Z"]


def _pid_start(pid: int) -> int | None:
    """When the process started (clock ticks after boot, /proc/PID/stat field 22; None when
    unknown): with the pid it names one process, where a pid alone is reused after a reboot."""
    fields = _proc_stat(pid)
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def _owner_alive(info: dict[str, Any], pid: int) -> bool:
    """Whether the lease's owner process on this host still runs: its pid is alive and, when
    the lease recorded the owner's start time, belongs to the same process (not one that got
    the pid after a reboot or a wrap-around)."""
    if not _pid_alive(pid):
        return False
    start = info.get("pid_start")
    if not isinstance(start, int) or isinstance(start, bool):
        return True  # a lease written before the start time was recorded
    now = _pid_start(pid)
    return now is None or now == start


def is_stale(info: dict[str, Any], now: float | None = None, path: Path | None = None) -> bool:
    """True when a lease may be taken over: its same-host owner process is dead (one that is
    alive holds it, however late its heartbeat: a busy host must not hand its run to a second
    launcher on the same host). An owner on another host: when this process has watched
    `path`, its content has not changed for longer than its ttl by the monotonic clock; or
    else its wall-clock `expires` has passed."""
    pid = info.get("pid")
    if info.get("host") == HOST and isinstance(pid, int) and not isinstance(pid, bool):
        return not _owner_alive(info, pid)  # a live owner here is never stale, whatever its ttl
    ttl = info.get("ttl")
    if path is not None and _number(ttl) and ttl > 0:
        key = (info.get("owner"), info.get("heartbeat"), info.get("beat"), info.get("expires"))
        mono = time.monotonic()
        prev = _seen.get(str(path))
        if prev is None or prev[0] != key:
            _seen[str(path)] = (key, mono)
            if prev is not None:
                return False  # it changed since we last looked: its owner is beating
        elif mono - prev[1] > ttl:
            return True  # unchanged for a whole ttl of our own (monotonic) time
        else:
            return False  # watched, and unchanged for less than a ttl
    now = time.time() if now is None else now
    expires = info.get("expires", 0.0)
    return not _number(expires) or float(expires) < now


class Lease:
    """A claim on one run id, kept alive by a heartbeat thread while held."""

    def __init__(self, lease_dir: Path, run_id: str, owner: str, ttl: float = 120.0) -> None:
        self.dir = Path(lease_dir)
        self.path = self.dir / f"{run_id}.json"
        self.owner = owner
        self.ttl = check_ttl(ttl)
        self._beats = 0
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _payload(self) -> bytes:
        now = time.time()
        self._beats += 1
        pid = os.getpid()  # read now, not at import: a forked child is another process
        info = dict(owner=self.owner, host=HOST, pid=pid, pid_start=_pid_start(pid))
        info.update(heartbeat=now, beat=self._beats)
        info.update(expires=now + self.ttl, ttl=self.ttl)
        return json.dumps(info).encode()

    def _replace(self) -> None:
        atomic_write(self.path, self._payload())

    def acquire(self) -> bool:
        """Claim the run; True if this owner now holds it. Starts the heartbeat."""
        with _locked(self.dir):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                info = read_lease(self.path) or {}
                if info.get("owner") != self.owner and not is_stale(info, path=self.path):
                    return False
                self._replace()  # steal a stale lease, or re-take our own (requeued job)
            else:
                try:
                    with writing(self.path), os.fdopen(fd, "wb") as f:
                        f.write(self._payload())
                except BaseException:  # a full disk: leave no empty lease file behind
                    self.path.unlink(missing_ok=True)
                    raise
        self._start()
        return True

    def refresh(self) -> bool:
        """Extend the expiry; False (and `lost` set) if someone else holds the lease now."""
        with _locked(self.dir):
            info = read_lease(self.path)
            if info is None or info.get("owner") != self.owner:
                self.lost.set()
                return False
            self._replace()
        return True

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with _locked(self.dir):
            info = read_lease(self.path)
            if info is not None and info.get("owner") == self.owner:
                self.path.unlink(missing_ok=True)

    def _start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.path.stem}")
        self._thread.daemon = True
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                if not self.refresh():
                    return
            except (OSError, DiskFullError):
                continue  # transient filesystem error (or a full disk): try again next beat

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def live_leases(lease_dir: Path) -> dict[str, dict[str, Any]]:
    """run_id -> lease info for every lease that is not stale."""
    out = {}
    if not Path(lease_dir).is_dir():
        return out
    for path in Path(lease_dir).glob("*.json"):
        info = read_lease(path)
        if info is not None and not is_stale(info, path=path):
            out[path.stem] = info
    return out
