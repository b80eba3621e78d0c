"""The harness of `make faults` (scripts/faults.py): the tally of every case, child processes
(spawned in their own process group, killed when hung), and the small checks the cases share.
Imported by the driver after it has put the repository and tests/cli/ on sys.path.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from scaling.fileio import read_jsonl

ENV = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
TRAIN_SETS = [
    "model.preset=cpu-3xs",
    "model.seq_len=32",
    "train.batch_size=8",
    "train.log_every=1",
    "train.checkpoint_every=25",
    "data.dataset=python_source/small",
    "data.val_tokens=2048",
    "data.task_mix=0.0",
    "eval.enabled=false",
    "mesh.data=1",
]
GRID = """name = "faults"
kind = "nxd"
[nxd]
tokens = [{tokens}]
[shapes]
n_min = 3e3
n_max = 9e3
count = 2
[hparams]
batch_size = 8
batch_multiple = 8
min_steps = 1
[base.model]
seq_len = 32
[base.data]
dataset = "python_source/small"
val_tokens = 2048
task_mix = 0.0
[base.train]
log_every = 1
checkpoint_every = 25
[base.eval]
enabled = false
"""


@dataclass
class Tally:
    """Every case's outcome by section, and finished records lost to any fault."""

    results: dict[str, list[tuple[str, bool, str]]] = field(default_factory=dict)
    records_lost: int = 0


TALLY = Tally()


def record(section: str, name: str, ok: bool, why: str = "") -> None:
    TALLY.results.setdefault(section, []).append((name, ok, why))
    print(f"  [{'ok' if ok else 'FAIL'}] {section}: {name}{'' if ok else ' - ' + why}", flush=True)


@dataclass
class Ran:
    """How a child process ended: `returncode` None when it hung past its timeout (killed)."""

    returncode: int | None
    stdout: str
    stderr: str


def spawn(argv: list[str]) -> subprocess.Popen:
    """Start a child in its own process group, so that a hung one is killed with its children."""
    return subprocess.Popen(
        argv,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group this suite started for `proc` (by its PID)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def finish(proc: subprocess.Popen, timeout: float) -> Ran:
    """Wait for `proc`; a child still running after `timeout` s is killed and reported hung."""
    try:
        out, err = proc.communicate(timeout=timeout)
        return Ran(proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # a grandchild that left the group holds the pipes
            out, err = "", ""
        return Ran(None, out or "", f"hung: still running after {timeout:.0f} s, killed; {err}")
    finally:
        kill_group(proc)


def call(argv: list[str], timeout: float = 300) -> Ran:
    return finish(spawn(argv), timeout)


def scaling(*args: str) -> list[str]:
    return [sys.executable, "-m", "scaling.cli", *args]


def train_argv(out: Path, steps: int, *extra: str) -> list[str]:
    sets = [*TRAIN_SETS, f"train.steps={steps}"]
    return scaling("train", "tiny", "--out", str(out), "--no-progress", *extra) + [
        x for s in sets for x in ("--set", s)
    ]


def last_step(metrics: Path) -> int:
    recs = read_jsonl(metrics, quiet=True) if metrics.is_file() else []
    return max((r.get("step", 0) for r in recs), default=0)


def wait_for(pred: Callable[[], bool], proc: subprocess.Popen, timeout: float = 600) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if pred():
            return True
        time.sleep(0.05)
    return False


def clean(code: int, err: str, want: int) -> str:
    """'' when the process ended as promised, else what went wrong."""
    if code != want:
        return f"exit {code}, want {want}: {err.strip()[-300:]}"
    if "Traceback" in err or "Segmentation" in err or "Fatal Python" in err:
        return f"traceback or crash: {err.strip()[-300:]}"
    if len([x for x in err.splitlines() if x.strip()]) != 1:
        return f"want one line on stderr, got: {err.strip()[-400:]}"
    return ""


def ckpt_steps(run: Path) -> list[int]:
    d = run / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []
