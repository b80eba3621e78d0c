"""`scaling sweep run --workers N` (local backend): N launchers on one machine, one sweep.

The local backend trains one cell at a time. On a CPU a tiny cell keeps only part of the
machine busy: on the 2-core machine the demo grid's sweep ran at a load of about 1.7, and with
two launchers the whole 20-run sweep finished 1.53x sooner (879 s -> 576 s, same losses; the
README has the figures). Launchers can already share a sweep directory: each cell is leased
(`sweeps.lease`), trained once and recorded once. So `--workers N` starts N-1 more launchers
of the same grid beside this one (`sweep run ... --no-wait --no-progress --worker-since T
--launchers N`), each taking the next cell nobody holds, and this launcher keeps the progress
bar, waits for every cell and prints one summary for all of them. Each run records N (its
`launchers`): the time estimate's calibration divides its wall time by the cores' contention.

Stopping is the same as with one launcher:
- SIGINT or SIGTERM to this launcher (a Ctrl-C in the terminal included: the workers have
  process groups of their own) is passed on to the workers once; each saves a checkpoint and
  releases its lease, and this launcher waits for them before it exits 128 + signum.
- If this launcher dies without that (`kill -9`), Linux sends each worker SIGTERM
  (PR_SET_PDEATHSIG), so no training goes on without its launcher.
- A worker that stops on bad input (exit 2) makes the whole sweep exit 2.

Nothing here imports JAX: the workers are started before this launcher trains anything.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
from pathlib import Path

from scaling.errors import UserError
from sweeps import registry as R

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def check_workers(workers: int, backend: str, max_runs: int | None) -> None:
    """Exit 2 before any work for a count that cannot mean anything."""
    if workers < 1:
        raise UserError(f"--workers {workers}: must be >= 1 (launchers on this machine)")
    if workers > 1 and backend != "local":
        raise UserError(
            f"--workers {workers} is for --backend local; on SLURM every cell is its own "
            f"array task already (--array-parallelism sets how many run at once)"
        )
    if workers > 1 and max_runs is not None:
        raise UserError(
            f"--max-runs {max_runs} counts the trainings of one launcher; use it with --workers 1"
        )


def worker_argv(
    grid: str,
    root: Path,
    overrides: list[str],
    lease_ttl: float,
    train_fn: str | None,
    since: float,
    launchers: int,
) -> list[str]:
    """The command of one extra launcher: the same grid and directory, no bar, no waiting for
    cells the others hold (this launcher waits for them), and no retry of a cell another
    launcher failed since `since` (this call's start, a time.time()); `launchers`: how many
    launchers this call runs in all (each run records it)."""
    argv = [sys.executable, "-m", "scaling.cli", "sweep", "run", grid, "--out", str(root)]
    for item in overrides:
        argv += ["--set", item]
    argv += ["--lease-ttl", repr(lease_ttl), "--no-wait", "--no-progress"]
    argv += ["--worker-since", repr(since), "--launchers", str(launchers)]
    if train_fn:
        argv += ["--train-fn", train_fn]
    return argv


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the launcher that started it dies (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))


def start(n: int, argv: list[str]) -> list[subprocess.Popen]:
    """Start n extra launchers; their output goes to this launcher's stdout and stderr. Each
    is in a process group of its own: a Ctrl-C in the terminal reaches this launcher only,
    which passes it on once (two Ctrl-Cs must not be counted four times in a worker, where
    the third signal ends it without a checkpoint)."""
    return [subprocess.Popen(argv, preexec_fn=_die_with_parent, process_group=0) for _ in range(n)]


def stop(procs: list[subprocess.Popen], signum: int) -> None:
    """Pass a stop signal on to the workers still running."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signum)


def wait(procs: list[subprocess.Popen]) -> list[int]:
    """Wait for every worker (a stopping worker is saving a checkpoint); their exit codes."""
    return [p.wait() for p in procs]


def outcome(root: Path, run_ids: list[str], since: float) -> dict[str, int]:
    """What every launcher of this call did, read back from the sweep directory: the cells
    recorded (by status), failed in this call (a failed.json written since `since`), and left.
    One launcher's own counts miss the cells its workers trained."""
    records = {r["run_id"]: r for r in R.read_records(root)}
    counts: dict[str, int] = {}
    for rid in run_ids:
        rec = records.get(rid)
        if rec is not None:
            key = str(rec.get("status", "done"))
        else:
            key = "failed" if R.failed_since(root, rid, since) else "not run"
        counts[key] = counts.get(key, 0) + 1
    return counts
