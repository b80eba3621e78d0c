"""SLURM backend through submitit: one job-array task per unfinished cell.

Each task runs `sweeps.runner.run_cell` (same lease/record logic as the local backend) inside
`CellJob`, a `submitit.helpers.Checkpointable`. What the signals mean:

- **USR2** (preemption or time limit; submitit asks SLURM for it): submitit calls `checkpoint()`,
  which requeues the same call; `scaling.train.train` then resumes from the run's latest
  checkpoint in DIR/runs/<run_id>. The lease owner is the SLURM array job/task id, which
  survives requeue, so the requeued task re-takes its own lease at once.
- **SIGTERM** (`scancel`, `scontrol requeue`, node shutdown): submitit ignores it, so a cancelled
  task used to train on until SLURM's KillWait and then die by SIGKILL. `CellJob` routes it to
  the CLI's interrupt mechanism instead: the run stops at the next step boundary, the lease is
  released, and the task exits 143. Nothing is recorded; the next submission (or the requeue)
  resumes from the newest checkpoint.

`wait_for` follows the tasks through `squeue` and the sweep's own records, not through submitit's
`sacct` polling, which never learns the state of a cancelled task on a cluster without accounting
(it used to hang `--wait` forever).

Multi-process runs (`nodes * tasks_per_node > 1`): only global rank 0 decides (finished? leased
elsewhere? take the lease) and writes the record. It writes its decision atomically to
DIR/slurm/decisions/<run_id>-<job>-<attempt>.json ("train", or its outcome: "busy", "skipped",
...); the other ranks wait for that file (up to max(600 s, 2 x lease ttl)) BEFORE they touch
JAX, and train only on "train". Training calls `scaling.sharding.maybe_initialize_distributed()`
(jax.distributed from the SLURM environment); every rank stops at the step rank 0 stops at
(a signal, or rank 0's lease lost: `scaling.distributed.agree_stop`).

CI runs this path with submitit's local executor (`cluster="local"`) and, where the machine
allows, on a real one-node cluster (scripts/slurm-local.sh, tests/sweeps/test_slurm.py).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scaling.errors import UserError, install_interrupt_handler
from scaling.fileio import atomic_write, file_lock
from sweeps import registry as R
from sweeps.runner import DEFAULT_TRAIN, resolve_train_fn, run_cell
from sweeps.status import last_checkpoint

try:
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - submitit is a declared dependency
    Checkpointable = object  # type: ignore[misc,assignment]


def _owner() -> str:
    for key in ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID"):
        if os.environ.get(key):
            task = os.environ.get("SLURM_ARRAY_TASK_ID", "")
            return f"slurm:{os.environ[key]}_{task}"
    try:
        import submitit

        return f"submitit:{submitit.JobEnvironment().job_id}"
    except RuntimeError:
        return f"submitit:{os.getpid()}"


def _rank() -> int:
    try:
        import submitit

        return submitit.JobEnvironment().global_rank
    except RuntimeError:
        return 0


def stop_on_sigterm() -> None:
    """Route SIGTERM to the handler the CLI installs for Ctrl-C (flag + KeyboardInterrupt at the
    next step boundary), replacing submitit's "bypass". USR2 stays with submitit."""
    install_interrupt_handler()
    signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))


class CellJob(Checkpointable):
    """The callable each array task runs; requeued (same arguments) on preemption."""

    def __call__(
        self, root: str, sweep: str, summary: dict[str, Any], train_spec: str, lease_ttl: float
    ) -> str:
        stop_on_sigterm()
        try:
            return self._run(root, sweep, summary, train_spec, lease_ttl)
        except KeyboardInterrupt:
            print(
                f"run {summary['run_id']} ({summary['label']}): stopped by SIGTERM (scancel or "
                "requeue); lease released, nothing recorded; the next submission resumes from "
                "its newest checkpoint",
                file=sys.stderr,
            )
            raise SystemExit(143) from None

    def _run(
        self, root: str, sweep: str, summary: dict[str, Any], train_spec: str, lease_ttl: float
    ) -> str:
        path = decision_path(Path(root), summary["run_id"])
        if _rank() != 0:  # worker ranks of a multi-node run: join the training rank 0 starts
            return _follow(path, summary, train_spec, max(DECISION_WAIT_S, 2 * lease_ttl))
        fn = resolve_train_fn(train_spec)
        decided: list[str] = []

        @functools.wraps(fn)  # run_cell reads its signature (should_stop, tb_dir) through this
        def train(*args: Any, **kwargs: Any) -> dict[str, Any]:
            decided.append("train")
            _decide(path, "train")  # leased and unfinished: the workers join
            return fn(*args, **kwargs)

        outcome = "stopped"
        try:
            outcome = run_cell(
                Path(root),
                sweep,
                summary,
                train_fn=train,
                owner=_owner(),
                lease_ttl=lease_ttl,
                progress=False,
            )
        finally:
            if not decided:  # busy, skipped, recorded without training, or failed: not theirs
                _decide(path, outcome)
        return outcome


DECISION_WAIT_S = 600.0


def decision_path(root: Path, run_id: str) -> Path:
    """Where rank 0 of this SLURM task (and this attempt of it: a requeue starts a new one)
    writes whether its worker ranks train: DIR/slurm/decisions/<run_id>-<job>-<attempt>.json.
    Workers must learn it before they initialise JAX: a worker that trains a cell rank 0 found
    leased elsewhere or finished waited forever in `jax.distributed.initialize`."""
    job = _owner().removeprefix("slurm:").removeprefix("submitit:").replace("/", "_")
    attempt = os.environ.get("SLURM_RESTART_COUNT", "0")
    return root / "slurm" / "decisions" / f"{run_id}-{job}-{attempt}.json"


def _decide(path: Path, decision: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps({"decision": decision, "at": time.time()}))


def _follow(path: Path, summary: dict[str, Any], train_spec: str, wait_s: float) -> str:
    """A worker rank: wait for rank 0's decision; train only when rank 0 trains. Returns
    "worker" (it trained), or rank 0's outcome ("busy", "skipped", ...) as "worker: <outcome>"."""
    from scaling import config as C
    from scaling import signals

    deadline = time.monotonic() + wait_s
    while not path.is_file():
        signals.check()
        if time.monotonic() > deadline:
            raise UserError(
                f"worker rank {_rank()}: rank 0 did not say within {wait_s:g} s whether to train "
                f"run {summary['run_id']} ({path} is missing); see rank 0's log for its error"
            )
        time.sleep(0.5)
    decision = json.loads(path.read_text()).get("decision")
    if decision != "train":
        return f"worker: {decision}"
    out = R.run_dir(path.parents[2], summary["run_id"])
    # should_stop is not needed here: every process stops at the step rank 0 stops at
    # (scaling.distributed.agree_stop), so a lease lost on rank 0 stops the workers too
    resolve_train_fn(train_spec)(C.from_dict(summary["config"]), out, progress=False)
    return "worker"


def submit(
    root: Path,
    plan,
    *,
    cluster: str | None = "slurm",
    train_fn: str | None = None,
    lease_ttl: float = 300.0,
    wait: bool = False,
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Submit one array task per unfinished cell; optionally wait. Returns job ids/outcomes."""
    import submitit

    root = Path(root)
    pending = [c.summary() for c in plan.cells if c.run_id not in R.finished_ids(root)]
    if not pending:
        return dict(submitted=0, job_ids=[], outcomes={})
    try:
        executor = submitit.AutoExecutor(folder=root / "slurm" / "%j", cluster=cluster)
    except (ValueError, RuntimeError) as e:
        raise UserError(f"--backend slurm: cannot create a submitit executor ({e})") from e
    params = dict(parameters or {})
    params.setdefault("name", f"sweep-{plan.name}")
    try:
        executor.update_parameters(**params)
    except (TypeError, ValueError) as e:
        raise UserError(f"--backend slurm: bad submitit parameter ({e})") from e
    spec = train_fn or DEFAULT_TRAIN
    job = CellJob()
    # one submission into DIR at a time: a refused one removes the temporary files that appeared
    # while it ran, which are then its own, never those of a submission still waiting on sbatch
    with file_lock(root / SUBMIT_LOCK):
        before = _temp_files(root / "slurm")
        try:
            with executor.batch():
                jobs = [
                    executor.submit(job, str(root), plan.name, s, spec, lease_ttl) for s in pending
                ]
        except submitit.core.utils.FailedJobError as e:  # sbatch said no: nothing was submitted
            _remove_new_temp_files(root / "slurm", before)  # the pickles this call wrote
            lines = [x.strip(" '\"") for x in str(e).strip().splitlines() if x.strip()]
            raise UserError(
                f"--backend slurm: sbatch refused the submission ({lines[-1] if lines else e!r}); "
                f"nothing was submitted: check the cluster (sinfo) and the SLURM options "
                f"(--partition, --slurm-arg, ...), or use --backend local"
            ) from None
    out: dict[str, Any] = dict(submitted=len(jobs), job_ids=[j.job_id for j in jobs], outcomes={})
    out["cells"] = [(s["run_id"], s["label"], j.job_id) for s, j in zip(pending, jobs, strict=True)]
    if wait and cluster == "slurm":
        out["outcomes"] = wait_for(root, pending, jobs)
    elif wait:
        for s, j in zip(pending, jobs, strict=True):
            out["outcomes"][s["run_id"]] = _job_result(j)
    return out


# what submitit writes in DIR/slurm before sbatch answers: the pickled call of each task
# (<uuid>.pkl) and the sbatch script (.submission_file_<uuid>.sh); both move into the job's
# folder once sbatch accepts, and were left behind when it refused
_TEMP_GLOBS = ("*.pkl", ".submission_file_*.sh")
SUBMIT_LOCK = ".submit.lock"  # in DIR: held from before submitit writes them until sbatch answers


def _temp_files(folder: Path) -> set[Path] | None:
    """submitit's temporary files now in `folder` (None: the folder does not exist yet)."""
    if not folder.is_dir():
        return None
    return {p for g in _TEMP_GLOBS for p in folder.glob(g)}


def _remove_new_temp_files(folder: Path, before: set[Path] | None) -> None:
    """Remove the temporary files a refused submission wrote in `folder` (those not there
    before it), and the folder itself when the submission created it and left it empty."""
    for path in (_temp_files(folder) or set()) - (before or set()):
        path.unlink(missing_ok=True)
    if before is None and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _job_result(job: Any) -> str:
    try:
        return str(job.result())
    except Exception as e:  # a task that crashed outside run_cell
        return f"error: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else e!r}"


def queued_jobs(job_ids: list[str]) -> set[str] | None:
    """Job ids (array tasks as "123_4") still known to squeue (pending, running, completing,
    requeued); None when squeue itself fails (controller unreachable)."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    cmd = ["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(arrays)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        if "Invalid job id" in p.stderr:  # every job already purged from the queue
            return set()
        return None
    return {line.strip() for line in p.stdout.splitlines() if line.strip()}


def wait_for(
    root: Path,
    pending: list[dict[str, Any]],
    jobs: list[Any],
    *,
    poll_s: float = 2.0,
    squeue_patience_s: float = 60.0,
) -> dict[str, str]:
    """Wait until every task has left the queue (requeued tasks stay in it); outcome per run id.

    Outcomes: the task's own return (done / diverged, "busy": another launcher holds the cell,
    "skipped": already recorded), else the cell's record, "failed: ..." (runs/<id>/failed.json),
    or "stopped: ..." for a task that left without a result (scancel, SIGKILL, node failure).
    If squeue keeps failing for `squeue_patience_s`, returns "unknown: ..." instead of hanging.
    """
    left = {s["run_id"]: (s, j) for s, j in zip(pending, jobs, strict=True)}
    outcomes: dict[str, str] = {}
    squeue_failing_since: float | None = None
    while left:
        queued = queued_jobs([j.job_id for _, j in left.values()])
        if queued is None:  # squeue failing: wait a while, then say so rather than hang
            squeue_failing_since = squeue_failing_since or time.monotonic()
            if time.monotonic() - squeue_failing_since > squeue_patience_s:
                for rid in left:
                    outcomes[rid] = f"unknown: squeue failed for {squeue_patience_s:g} s"
                return outcomes
        else:
            squeue_failing_since = None
            records = {r["run_id"]: r for r in R.read_records(root)}
            for rid, (_, j) in list(left.items()):
                if j.job_id not in queued:  # finished, failed, cancelled or purged
                    outcomes[rid] = _gone(root, rid, j, records.get(rid))
                    del left[rid]
        if left:
            time.sleep(poll_s)
    return outcomes


def _gone(root: Path, run_id: str, job: Any, record: dict[str, Any] | None) -> str:
    """Outcome of a task that has left the queue: what it returned, else the cell's record,
    failure file, or where a resubmission resumes."""
    if job.paths.result_pickle.exists():
        return _job_result(job)  # done / diverged / "busy" / "skipped", or the error it raised
    if record is not None:
        return str(record.get("status", "done"))
    failure = R.read_failure(root, run_id)
    if failure is not None:
        msg = failure.get("message", "").strip().splitlines()
        return f"failed: {msg[-1][:200] if msg else 'see runs/' + run_id + '/failed.json'}"
    step = last_checkpoint(R.run_dir(root, run_id) / "checkpoints")
    where = f"checkpoint step {step}" if step else "the start (no checkpoint yet)"
    return (
        f"stopped: job {job.job_id} left the queue without a result (scancel, time limit or "
        f"node failure); resubmit to resume from {where}"
    )
