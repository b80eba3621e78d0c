"""The sweep directory: plan.json, results.jsonl, per-run folders and failure markers.

Layout of DIR:
  plan.json          the resolved plan, written at launch (status compares against it), under
                     an exclusive flock on DIR/.plan.lock (one grid per DIR, however many
                     launchers start at once)
  results.jsonl      one record per finished run (done or diverged), append-only, no duplicates
  runs/<run_id>/     train's out_dir: config.toml, metrics.jsonl, checkpoints/, result.json
  runs/<run_id>/failed.json   last failure (exception text), removed when the run finishes
  leases/            see sweeps.lease
Records (fields: `scaling.results.RECORD_FIELDS`) are appended by `scaling.results.append_record`,
under an exclusive flock on DIR/.results.lock, by rewriting the file to a temp file and
os.replace-ing it, so readers never see a partial line and a run id never appears twice,
whichever launcher (or SLURM task) finishes it.

Every file here is read through the tolerant readers of `scaling.fileio`: a damaged line of
results.jsonl is reported and skipped (every intact record is kept; the next append moves the
damaged bytes to results.jsonl.damaged, so nothing is thrown away); a damaged plan.json is
rewritten from the grid by `sweep run` and named with the fix by `sweep status`; a damaged
failed.json counts as one earlier failure.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from scaling import results
from scaling.errors import UserError
from scaling.fileio import atomic_write, file_lock, read_json, warn
from scaling.results import clean_json

RESULTS = "results.jsonl"
PLAN = "plan.json"
PLAN_LOCK = ".plan.lock"


def run_dir(root: Path, run_id: str) -> Path:
    return Path(root) / "runs" / run_id


def read_records(root: Path) -> list[dict[str, Any]]:
    """All records of DIR/results.jsonl (empty list when absent)."""
    return results.read_records(Path(root) / RESULTS)


def finished_ids(root: Path) -> set[str]:
    return {r["run_id"] for r in read_records(root)}


def append_record(root: Path, record: dict[str, Any]) -> bool:
    """Append one record atomically; False (nothing written) if its run_id is already there."""
    return results.append_record(Path(root) / RESULTS, record)


def write_plan(root: Path, plan, *, replan: bool = False) -> None:
    """Store the plan as DIR/plan.json; refuse to mix a different grid into DIR. The read,
    compare and write hold an exclusive flock on DIR/.plan.lock, so of two launchers started
    at once on a fresh DIR with different grids the second sees the first's plan and refuses."""
    with file_lock(Path(root) / PLAN_LOCK):
        _write_plan_locked(Path(root), plan, replan)


def _write_plan_locked(root: Path, plan, replan: bool) -> None:
    path = root / PLAN
    ids = [c.run_id for c in plan.cells]
    old = _read_plan_file(path, rewrite=True) if path.is_file() else None
    if old is not None:
        old_ids = [c["run_id"] for c in old["cells"]]
        if sorted(old_ids) == sorted(ids):  # the same runs, maybe listed in another order
            return  # (e.g. seeds = [1, 0] after [0, 1]): the same sweep, plan.json kept
        if not replan:
            raise UserError(
                f"{root} already holds sweep {old.get('sweep')!r} with a different set of runs; "
                f"use a new --out directory, or pass --replan to replace plan.json (finished "
                f"results are kept)"
            )
    data = dict(
        sweep=plan.name,
        kind=plan.kind,
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        total_flops=plan.total_flops,
        grid=plan.grid,
        cells=[c.summary() for c in plan.cells],
    )
    atomic_write(path, (json.dumps(clean_json(data), indent=1) + "\n").encode())


def read_plan(root: Path) -> dict[str, Any]:
    path = Path(root) / PLAN
    if not path.is_file():
        raise UserError(_not_a_sweep(Path(root)))
    return _read_plan_file(path)


def _not_a_sweep(root: Path) -> str:
    """Why `root` (no plan.json) is not a sweep directory, and what to pass instead."""
    expects = "expects a sweep directory (the DIR of `scaling sweep run GRID --out DIR`)"
    if root.is_file():
        return f"{root} is a file; `scaling sweep status` {expects}"
    one_run = ("result.json", "config.toml", "metrics.jsonl")
    if not (root / RESULTS).exists() and any((root / n).is_file() for n in one_run):
        sweep = root.parent.parent
        if root.parent.name == "runs" and (sweep / PLAN).is_file():
            return f"{root} is one run of the sweep in {sweep}; run `scaling sweep status {sweep}`"
        return (
            f"{root} is a single run's directory (`scaling train` output: its result is "
            f"result.json there), not a sweep; `scaling sweep status` {expects}"
        )
    return (
        f"{root} has no {PLAN}: it is not a sweep directory; launch one with "
        f"`scaling sweep run GRID --out {root}`"
    )


def _read_plan_file(path: Path, rewrite: bool = False) -> dict[str, Any] | None:
    """plan.json, checked for the fields status needs. Damaged: a UserError with the fix, or
    with `rewrite` (`sweep run`, which rewrites it from the grid) a warning and None."""
    fix = (
        "rewriting it from the grid"
        if rewrite
        else (f"rerun `scaling sweep run GRID --out {path.parent}` with its grid to rewrite it")
    )
    plan = read_json(path, fix=fix, default=None) if rewrite else read_json(path, fix=fix)
    ok = (
        isinstance(plan, dict)
        and isinstance(plan.get("cells"), list)
        and all(_plan_cell_ok(c) for c in plan["cells"])
    )
    if ok:
        return plan
    if plan is not None and rewrite:
        warn(f"{path} is damaged (not a sweep plan); {fix}")
    if not rewrite:
        raise UserError(f"{path} is damaged (not a sweep plan); {fix}")
    return None


def _plan_cell_ok(c: Any) -> bool:
    return (
        isinstance(c, dict)
        and isinstance(c.get("run_id"), str)
        and isinstance(c.get("label"), str)
        and isinstance(c.get("steps"), int)
        and isinstance(c.get("C_exact"), int | float)
    )


def make_record(
    root: Path, sweep: str, summary: dict[str, Any], result: dict[str, Any]
) -> dict[str, Any]:
    """The results.jsonl record of a finished run (schema documented in the README)."""
    metrics = run_dir(root, summary["run_id"]) / "metrics.jsonl"
    return dict(
        run_id=summary["run_id"],
        sweep=sweep,
        label=summary["label"],
        cell=summary["cell"],
        config=summary["config"],
        N_total=summary["N_total"],
        N_nonembed=summary["N_nonembed"],
        D=summary["D"],
        C_6ND=summary["C_6ND"],
        C_exact=summary["C_exact"],
        steps=summary["steps"],
        batch=summary["batch"],
        lr=summary["lr"],
        final_val_loss=result.get("final_val_loss"),
        best_val_loss=result.get("best_val_loss"),
        final_val_bpb=result.get("final_val_bpb"),
        tokenizer=(result.get("data_info") or {}).get("tokenizer"),
        tokenizer_sha256=(result.get("data_info") or {}).get("tokenizer_sha256"),
        curve=os.path.relpath(metrics, root),
        evals=result.get("evals"),
        status=result.get("status", "done"),
        steps_done=result.get("step"),
        diverged_at_step=result.get("diverged_at_step"),
        wall_time_s=result.get("wall_time_s"),
        tokens_per_s=result.get("tokens_per_s"),
        mfu=result.get("mfu"),
        launchers=result.get("launchers"),
        started_at=result.get("started_at"),
        device_kind=result.get("device_kind"),
        n_devices=result.get("n_devices"),
        seed=summary["cell"].get("seed", summary["config"]["train"]["seed"]),
    )


def write_failure(root: Path, run_id: str, message: str) -> None:
    """Record a failed attempt (best effort: a full disk must not hide the first error)."""
    path = run_dir(root, run_id) / "failed.json"
    prev = read_failure(root, run_id) or {}
    attempts = prev.get("attempts", 0)
    attempts = attempts if isinstance(attempts, int) and attempts >= 0 else 1
    info = dict(message=message, attempts=attempts + 1, time=time.time())
    atomic_write(path, json.dumps(info).encode())


def read_failure(root: Path, run_id: str) -> dict[str, Any] | None:
    """The run's failure marker; a damaged one reads as one earlier failure (with a warning)."""
    path = run_dir(root, run_id) / "failed.json"
    if not path.is_file():
        return None
    damaged = {"message": f"({path.name} is damaged)", "attempts": 1}
    info = read_json(path, fix="counting it as one failed attempt", default=damaged)
    return info if isinstance(info, dict) else damaged


def failed_since(root: Path, run_id: str, since: float) -> bool:
    """Whether the run's last failure was recorded at or after `since` (a time.time())."""
    info = read_failure(root, run_id)
    t = info.get("time") if info else None
    return isinstance(t, int | float) and t >= since


def clear_failure(root: Path, run_id: str) -> None:
    (run_dir(root, run_id) / "failed.json").unlink(missing_ok=True)
