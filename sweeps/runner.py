"""Run the cells of a plan: skip finished ones, lease, train (or resume), record once.

`run_cell` is the unit both backends execute: the local backend calls it for each cell in turn
in one process (so `scaling.train`'s compiled-step cache is reused across cells of the same
shape); the SLURM backend calls it inside each array task (sweeps.slurm).

The train function is injectable: `train_fn(cfg, out_dir, progress=bool) -> result dict`, by
default `scaling.train.train`, imported only when a run starts. `resolve_train_fn("mod:attr")`
loads another one by name (used by tests, e.g. `sweeps.fake:fake_train`).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scaling import config as C
from scaling import results, signals
from scaling.errors import DiskFullError, UserError
from scaling.fileio import is_disk_full
from sweeps import registry as R
from sweeps.lease import Lease, default_owner

TrainFn = Callable[..., dict[str, Any]]
DEFAULT_TRAIN = "scaling.train:train"


def resolve_train_fn(spec: str | None) -> TrainFn:
    """`module:attr` -> callable. The engine (spec None, empty or DEFAULT_TRAIN) is imported
    normally, so the import graph shows it; only another train function, named by the user or
    a test (a name is what crosses into a SLURM task), is loaded by its name."""
    if not spec or spec == DEFAULT_TRAIN:
        from scaling.train import train  # JAX from here on

        return train
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "train")


def run_cell(
    root: Path,
    sweep: str,
    summary: dict[str, Any],
    *,
    train_fn: TrainFn | str | None = None,
    owner: str | None = None,
    lease_ttl: float = 120.0,
    progress: bool = False,
    launchers: int = 1,
) -> str:
    """Train one planned cell unless done or leased elsewhere; `launchers` (how many train on
    this machine at once, `--workers N`) goes to the train function when it takes it.

    Returns "skipped" (already recorded), "busy" (another live launcher holds it), "done",
    "diverged" or "failed" (exception; written to runs/<id>/failed.json, retried next launch).
    A `UserError` (bad dataset, mesh, ...) is recorded the same way and re-raised: it stops the
    sweep with exit code 2 instead of failing every cell alike; so does a full disk
    (`DiskFullError`, exit 1). SIGINT/SIGTERM (`signals.Interrupted`) pass through; the lease is
    released on every way out.
    """
    root = Path(root)
    run_id = summary["run_id"]
    if run_id in R.finished_ids(root):
        return "skipped"
    lease = Lease(root / "leases", run_id, owner or default_owner(), lease_ttl)
    with signals.graceful():  # a signal while claiming must not leave a claimed lease behind
        if not lease.acquire():
            return "busy"
    try:
        signals.check()
        if run_id in R.finished_ids(root):  # finished while we were claiming
            return "skipped"
        out = R.run_dir(root, run_id)
        out.mkdir(parents=True, exist_ok=True)
        result = results.finished_result(out, run_id)  # finished, launcher died before recording
        if result is None:
            fn = resolve_train_fn(train_fn) if not callable(train_fn) else train_fn
            cfg = C.from_dict(summary["config"])
            kwargs = {}
            if "should_stop" in inspect.signature(fn).parameters:
                kwargs["should_stop"] = lease.lost.is_set  # stop if another launcher took over
            if "launchers" in inspect.signature(fn).parameters:  # recorded in result.json
                kwargs["launchers"] = launchers
            if "tb_dir" in inspect.signature(fn).parameters:  # one TensorBoard dir per sweep
                kwargs["tb_dir"] = root / "tensorboard" / summary["label"].replace("/", "-")
            result = fn(cfg, out, progress=progress, **kwargs)
            if result.get("status") == "stopped":
                print(
                    f"run {run_id} ({summary['label']}): lease taken over by another launcher "
                    "(this one stalled past --lease-ttl); leaving the run to it",
                    file=sys.stderr,
                )
                return "busy"
        R.append_record(root, R.make_record(root, sweep, summary, result))
        R.clear_failure(root, run_id)
        return str(result.get("status", "done"))
    except UserError as e:  # bad input (dataset, mesh, ...): every cell would fail alike
        _record_failure(root, run_id, f"UserError: {e}")
        if "--restart" in str(e):  # unreadable checkpoints: say how, for this run
            out = R.run_dir(root, run_id)
            raise UserError(
                f"{e}. For this sweep cell: scaling train {out}/config.toml --out {out} "
                f"--restart, then rerun the sweep"
            ) from None
        raise
    except Exception as e:  # a failed run must not stop the sweep; a full disk stops it
        if is_disk_full(e):
            _record_failure(root, run_id, f"disk full: {e}")
            if isinstance(e, DiskFullError):
                raise
            raise DiskFullError(R.run_dir(root, run_id)) from None
        _record_failure(root, run_id, "".join(traceback.format_exception(e))[-4000:])
        print(f"run {run_id} ({summary['label']}) failed: {e!r}", file=sys.stderr)
        return "failed"
    finally:
        with signals.graceful():  # a signal while releasing must not leave the lease behind
            lease.release()


def _record_failure(root: Path, run_id: str, message: str) -> None:
    """failed.json, best effort: when the disk is full the original error is what matters."""
    with contextlib.suppress(DiskFullError, OSError):
        R.write_failure(root, run_id, message)


def run_local(
    root: Path,
    plan,
    *,
    train_fn: TrainFn | str | None = None,
    lease_ttl: float = 120.0,
    wait: bool = True,
    poll_s: float = 1.0,
    progress: bool = True,
    max_runs: int | None = None,
    failed_since: float | None = None,
    launchers: int = 1,
) -> dict[str, int]:
    """Run every unfinished cell in sequence in this process; returns outcome counts. Cells
    leased by another live launcher are skipped; with `wait`, this launcher then polls until
    they are recorded or their lease goes stale (and takes them over). A cell whose failure
    another launcher recorded since `failed_since` (a time.time()) is not tried again (one
    attempt per call, as with one launcher); each run records `launchers` (this call's)."""
    from tqdm import tqdm

    root = Path(root)
    if max_runs is not None and max_runs < 0:
        raise UserError(f"--max-runs {max_runs}: must be >= 0 (the number of runs to train)")
    fn = train_fn if callable(train_fn) else resolve_train_fn(train_fn) if train_fn else None
    owner = default_owner()
    counts = dict(done=0, diverged=0, failed=0, skipped=0, busy=0)
    failed: set[str] = set()
    summaries = [c.summary() for c in plan.cells]
    bar = tqdm(
        total=len(summaries),
        desc=f"sweep {plan.name}",
        unit="run",
        disable=not progress or not sys.stderr.isatty(),
        position=0,
    )
    started = 0
    try:
        while True:
            busy = 0
            finished = R.finished_ids(root)
            bar.n = len(finished & {s["run_id"] for s in summaries})
            bar.refresh()
            for s in summaries:
                if s["run_id"] in finished or s["run_id"] in failed:
                    continue
                if failed_since is not None and R.failed_since(root, s["run_id"], failed_since):
                    failed.add(s["run_id"])
                    continue
                if max_runs is not None and started >= max_runs:
                    break
                signals.check()
                bar.set_postfix_str(s["label"])
                outcome = run_cell(
                    root,
                    plan.name,
                    s,
                    train_fn=fn or DEFAULT_TRAIN,
                    owner=owner,
                    lease_ttl=lease_ttl,
                    progress=progress,
                    launchers=launchers,
                )
                counts[outcome] = counts.get(outcome, 0) + 1
                if outcome == "busy":
                    busy += 1
                    continue
                if outcome != "skipped":
                    started += 1
                if outcome == "failed":
                    failed.add(s["run_id"])
                finished = R.finished_ids(root)
                bar.n = len(finished & {x["run_id"] for x in summaries})
                bar.refresh()
            if not busy or not wait or (max_runs is not None and started >= max_runs):
                break
            counts["busy"] -= busy  # they are re-tried: count only the final outcome
            time.sleep(poll_s)
    finally:
        bar.close()
    return counts
