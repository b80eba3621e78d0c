"""metrics.jsonl and evals.jsonl of a run (`scaling.loop`): one JSON line per record, appended
and flushed as the run goes; a resume first drops the lines past its checkpoint's step."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scaling.fileio import atomic_write, split_jsonl, writing
from scaling.results import clean_json


class MetricsLog:
    """metrics.jsonl writer (process 0 only). On resume, lines past the resumed step are
    dropped (they were written after the checkpoint by the interrupted session)."""

    def __init__(
        self,
        path: Path,
        resume_step: int,
        enabled: bool,
        on_write: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.path, self.enabled, self.on_write = path, enabled, on_write
        if not enabled:
            return
        kept: list[dict[str, Any]] = []
        if resume_step > 0 and path.is_file():  # lines cut by a kill are dropped
            records, _ = split_jsonl(path.read_bytes())
            kept = [r for r in records if _step_of(r) <= resume_step]
        atomic_write(path, "".join(_line(r) + "\n" for r in kept))
        with writing(path):
            self._fh = path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with writing(self.path):
                self._fh.write(_line(record) + "\n")
                self._fh.flush()
            if self.on_write is not None:
                self.on_write(record)

    def close(self) -> None:
        if self.enabled and not self._fh.closed:
            try:
                self._fh.close()
            except OSError:  # the flush of a full disk: DiskFullError was raised already
                pass


def _line(record: dict[str, Any]) -> str:
    return json.dumps(clean_json(record, keep_nonfinite=True))


def _step_of(record: dict[str, Any]) -> float:
    step = record.get("step", 0)
    return step if isinstance(step, int | float) else math.inf
