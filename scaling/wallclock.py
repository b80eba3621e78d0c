"""A run's wall time over all its sessions, including the seconds after each one's last save.

The checkpoints carry the wall time up to each save (`scaling.loop.Loop.save`), but a session
lives on after its last checkpoint: steps a kill throws away (they are trained again), the
final evals, a result.json that failed to save. `wall_time.json` in the run directory carries
the total up to the last moment a session was seen: written when it starts, at most every
`BEAT_S` (10) seconds while it trains, and when it ends however it ends (a signal, an error, a
`stop_after`), except when another launcher took the run over (it counts from then on). A
resume starts from the larger of that total and its checkpoint's, so `wall_time_s` in
result.json is the sum of every session's wall time. `--restart` starts the count again and
`--from-step N` from checkpoint N's total (`fresh`): the sessions they discard do not count.
Only process 0 writes the file; a failure to write it never stops the run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from scaling.errors import DiskFullError
from scaling.fileio import atomic_write

FILE = "wall_time.json"
BEAT_S = 10.0  # while training, the file is rewritten (atomically, fsynced) at most this often


def _read(path: Path, run_id: str) -> dict[str, Any] | None:
    """The stored totals of this run, or None (absent, damaged, or another run's)."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("run_id") != run_id:
        return None
    wall = rec.get("wall_time_s")
    if isinstance(wall, bool) or not isinstance(wall, int | float) or not wall >= 0:
        return None
    return rec


class WallClock:
    """The run's timing at any moment of this session (`timing`) and its heartbeat (`beat`)."""

    def __init__(
        self,
        out: Path,
        run_id: str,
        meta: dict[str, Any],
        t_start: float,
        launchers: int = 1,
        *,
        write: bool = True,
        fresh: bool = False,
    ):
        self.path, self.run_id, self.t_start = out / FILE, run_id, t_start
        self.launchers, self.write, self.last_beat = launchers, write, 0.0
        before = float(meta.get("wall_time_s", 0.0))
        base = {
            "wall_time_s": before,
            "launcher_s": meta.get("launcher_s", before * launchers),
            "started_at": meta.get("started_at", None if meta else t_start),
        }
        stored = None if fresh else _read(self.path, run_id)
        if stored is not None and stored["wall_time_s"] > before:  # seconds after that save
            base = {k: stored.get(k, base[k]) for k in base}
        self.base = base
        self.beat(t_start)  # a --restart killed before its first beat must not count the old

    def timing(self, now: float) -> dict[str, Any]:
        """wall_time_s and launcher_s (launchers x seconds) over the sessions up to `now`, and
        the first session's start (None: it began before checkpoints carried it)."""
        session = max(now - self.t_start, 0.0)
        return {
            "wall_time_s": self.base["wall_time_s"] + session,
            "launcher_s": self.base["launcher_s"] + session * self.launchers,
            "started_at": self.base["started_at"],
        }

    def beat(self, now: float | None = None, *, every: float = 0.0) -> None:
        """Store the totals at `now` (default: the time now), unless the last store is younger
        than `every` seconds."""
        now = time.time() if now is None else now
        if not self.write or now - self.last_beat < every:
            return
        self.last_beat = now
        rec = {"run_id": self.run_id, **self.timing(now), "at": now}
        try:
            atomic_write(self.path, json.dumps(rec) + "\n")
        except (OSError, DiskFullError):  # a full disk stops the run at its next save, not here
            pass
