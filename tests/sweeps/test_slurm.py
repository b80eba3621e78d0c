"""The SLURM backend on a real one-node cluster (scripts/slurm-local.sh; `.ci/run` starts it).

Without the cluster every test here skips with the script's reason. Cells use the fake trainer
(sweeps.fake) except where training itself is under test: the scancel/resume test (real engine,
resumes from an Orbax checkpoint) and the 2-task `srun` run (must equal 1 process x 4 devices).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import SMALL_DATA, assert_same_run, finish, scaling_env, spawn, tiny_grid

from sweeps import registry as R
from sweeps.grid import load_grid, plan_grid
from sweeps.slurm import queued_jobs

pytestmark = pytest.mark.slurm
FAKE = "sweeps.fake:fake_train"
REAL = (
    SMALL_DATA
    + """[base.train]
checkpoint_every = 100
log_every = 100
eval_every = 1000000
"""
)


def grid(tmp_path: Path, name: str, tokens: str = "[2e4, 4e4]", count: int = 2) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(tiny_grid(name, tokens, count=count))
    return path


def sweep_cmd(path: Path, root: Path, *flags: str, fake: bool = True) -> list[str]:
    """The README's `scaling sweep run GRID --out DIR --backend slurm ...`."""
    cmd = ["scaling", "sweep", "run", str(path), "--out", str(root), "--backend", "slurm"]
    cmd += ["--timeout-min", "10", "--no-progress", *flags]
    return cmd + (["--train-fn", FAKE] if fake else [])


def start(cmd: list[str], conf: str, **env: str) -> subprocess.Popen:
    return spawn(cmd, SLURM_CONF=conf, **env)


def run(cmd: list[str], conf: str, timeout: float = 300, **env: str) -> tuple[int, str]:
    return finish(start(cmd, conf, **env), timeout)


def job_ids(log: str) -> list[str]:
    line = next(x for x in log.splitlines() if x.startswith("submitted "))
    return line.split(":", 1)[1].split()


def wait_until(cond, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def metric_steps(out: Path) -> list[int]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(x)["step"] for x in path.read_text().splitlines() if x.strip()]


def calls(out: Path) -> int:
    log = out / "train_calls.log"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def records_once(root: Path, path: Path) -> list[dict]:
    plan = plan_grid(load_grid(path))
    ids = [r["run_id"] for r in R.read_records(root)]
    assert sorted(ids) == sorted(c.run_id for c in plan.cells)  # every cell, each exactly once
    return R.read_records(root)


def slurm(*args: str, conf: str) -> str:
    env = dict(os.environ, SLURM_CONF=conf)
    return subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout


# ----------------------------------------------------------------------------- the tests


def test_array_sweep_records_every_cell_once(tmp_path: Path, slurm_cluster: str) -> None:
    path, root = grid(tmp_path, "arr"), tmp_path / "sweep"
    rc, log = run(sweep_cmd(path, root, "--wait"), slurm_cluster)
    assert rc == 0, log
    ids = job_ids(log)
    assert len(ids) == 4 and len({i.split("_")[0] for i in ids}) == 1  # one array, 4 tasks
    records = records_once(root, path)
    assert {r["status"] for r in records} == {"done"}
    assert log.count(" done") >= 4  # the per-cell status lines
    rc, log = run(sweep_cmd(path, root, "--wait"), slurm_cluster)  # resubmitting: nothing to do
    assert rc == 0 and "submitted 0 task(s)" in log, log


def test_scancel_then_resubmit_resumes_from_checkpoint(tmp_path: Path, slurm_cluster) -> None:
    """Real engine. `--wait` returns after the cancel with a per-cell line, the task stops on
    SIGTERM (lease released, nothing recorded) and the resubmission resumes, not from step 0."""
    path, root = grid(tmp_path, "cancel", tokens="[8e5]", count=1), tmp_path / "sweep"
    path.write_text(path.read_text() + REAL)  # 3125 steps: the cancel comes mid-run
    plan = plan_grid(load_grid(path))
    (cell,) = plan.cells
    out = R.run_dir(root, cell.run_id)
    waiter = start(sweep_cmd(path, root, "--wait", fake=False), slurm_cluster)
    ckpt = wait_until(
        lambda: (
            [d for d in (out / "checkpoints").glob("*") if d.name.isdigit()]
            if (out / "checkpoints").is_dir()
            else None
        ),
        600,
        "a first checkpoint",
    )
    assert ckpt
    # only this test's job (named sweep-<grid>): an earlier test's array may still hold queued
    # tasks that skip and end at any moment, and `scancel` of an ended job exits 1
    slurm("scancel", "--name", "sweep-cancel", conf=slurm_cluster)
    rc, log = finish(waiter, 120)  # --wait must come back, with a clear status
    assert rc == 1, log
    assert "stopped: job" in log and "resubmit to resume from checkpoint step" in log, log
    assert "1 of 1 cell(s) did not finish" in log
    assert not R.read_records(root)
    assert not (root / "leases" / f"{cell.run_id}.json").exists()  # released on SIGTERM
    logs = "".join(p.read_text() for p in (root / "slurm").rglob("*.err"))
    assert "stopped by SIGTERM" in logs  # handled, not SIGKILLed after KillWait
    # SIGTERM saves a checkpoint at the interrupt step, which may lie past the last metrics line
    stopped_at = max(int(d.name) for d in (out / "checkpoints").glob("*") if d.name.isdigit())
    assert stopped_at >= max(metric_steps(out))
    rc, log = run(sweep_cmd(path, root, "--wait", fake=False), slurm_cluster, timeout=600)
    assert rc == 0, log
    (rec,) = records_once(root, path)
    result = json.loads((out / "result.json").read_text())
    assert result["resumed_from_step"] and result["resumed_from_step"] >= 100
    assert result["resumed_from_step"] <= stopped_at
    assert rec["status"] == "done"


def test_usr2_preemption_and_scontrol_requeue_resume(tmp_path: Path, slurm_cluster) -> None:
    """Cell 0 gets USR2 (what SLURM sends before preemption or the time limit: submitit
    checkpoints and requeues); cell 1 is requeued by the admin (`scontrol requeue`: SIGTERM,
    then back in the queue). Both resume and are recorded once."""
    path, root = grid(tmp_path, "pre", tokens="[2e4]"), tmp_path / "sweep"
    plan = plan_grid(load_grid(path))
    outs = [R.run_dir(root, c.run_id) for c in plan.cells]
    waiter = start(sweep_cmd(path, root, "--wait"), slurm_cluster, SWEEP_FAKE_SECONDS="10")
    wait_until(lambda: all(len(metric_steps(o)) >= 2 for o in outs), 300, "both cells running")
    tasks = wait_until(
        lambda: sorted(x for x in slurm("squeue", "-h", "-o", "%i", conf=slurm_cluster).split()),
        30,
        "the tasks in squeue",
    )
    by_cell = {}
    for task in tasks:  # which task trains which cell: the lease owner is slurm:<job>_<task>
        for i, c in enumerate(plan.cells):
            lease = root / "leases" / f"{c.run_id}.json"
            if lease.is_file() and json.loads(lease.read_text())["owner"] == f"slurm:{task}":
                by_cell[i] = task
    assert sorted(by_cell) == [0, 1], (tasks, by_cell)
    slurm("scancel", "--signal=USR2", by_cell[0], conf=slurm_cluster)
    slurm("scontrol", "requeue", by_cell[1], conf=slurm_cluster)
    rc, log = finish(waiter)
    assert rc == 0, log
    records_once(root, path)
    for out in outs:
        assert calls(out) == 2  # trained in two sessions: before and after the requeue
        steps = metric_steps(out)
        assert steps == sorted(set(steps)) and steps[-1] == max(steps)  # resumed, no repeat


def test_duplicate_submission_skips(tmp_path: Path, slurm_cluster: str) -> None:
    path, root = grid(tmp_path, "dup", tokens="[2e4]"), tmp_path / "sweep"
    plan = plan_grid(load_grid(path))
    outs = [R.run_dir(root, c.run_id) for c in plan.cells]
    release = tmp_path / "release"  # the first submission's cells train until it exists
    env = dict(SWEEP_FAKE_SECONDS="1", SWEEP_FAKE_HOLD=str(release))
    first = start(sweep_cmd(path, root, "--wait"), slurm_cluster, **env)
    wait_until(lambda: all(metric_steps(o) for o in outs), 300, "the first submission running")
    second = start(sweep_cmd(path, root, "--wait"), slurm_cluster)  # while the first runs

    def arrays() -> set[str]:  # the array jobs of this grid in the queue
        return set(
            slurm("squeue", "-h", "--name", "sweep-dup", "-o", "%F", conf=slurm_cluster).split()
        )

    wait_until(lambda: len(arrays()) >= 2, 300, "the second submission in the queue")
    release.touch()  # the first's cells finish; the second's tasks (queued behind them) start
    rc, log = finish(second)
    assert rc in (0, 1), log
    second = [x for x in log.splitlines() if " job " in x]
    assert len(second) == 2 and all(x.split()[-1] in ("busy", "skipped") for x in second), log
    rc, log = finish(first)
    assert rc == 0, log
    records_once(root, path)
    assert [calls(out) for out in outs] == [1, 1]  # the duplicates trained nothing


def test_srun_two_tasks_match_one_process(tmp_path: Path, slurm_cluster, mp_reference) -> None:
    """`srun -n 2 scaling train mp-check`: 2 SLURM tasks x 2 CPU devices, jax.distributed from
    the SLURM environment, few-shot evals on; equal to 1 process x 4 devices to 1e-6."""
    out = tmp_path / "run"
    cmd = ["srun", "-n", "2", "scaling", "train", "mp-check", "--out", str(out), "--no-progress"]
    # the reference's flags (conftest's -O1 included), with 2 devices per task
    flags = scaling_env()["XLA_FLAGS"] + " --xla_force_host_platform_device_count=2"
    rc, log = run(cmd, slurm_cluster, timeout=900, XLA_FLAGS=flags)
    assert rc == 0, log
    assert log.count("done at step 8") == 1  # process 0 alone prints
    assert_same_run(mp_reference["result"], mp_reference["metrics"], out)


def test_queued_jobs_reads_squeue(slurm_cluster: str, monkeypatch) -> None:
    monkeypatch.setenv("SLURM_CONF", slurm_cluster)
    assert queued_jobs(["999999_0"]) == set()  # unknown or purged: not queued
    job = subprocess.run(
        ["sbatch", "--parsable", "--array=0-1", "--wrap", "sleep 30", "-o", "/dev/null"],
        env=dict(os.environ, SLURM_CONF=slurm_cluster),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        assert queued_jobs([f"{job}_0", f"{job}_1"]) == {f"{job}_0", f"{job}_1"}
    finally:
        slurm("scancel", job, conf=slurm_cluster)
