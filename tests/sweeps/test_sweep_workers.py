"""`scaling sweep run --workers N`: N launchers of one local sweep (sweeps.workers), with the
fake trainer. Every cell is trained and recorded once, the first launcher sums up for all of
them, and a stop of the first launcher (a signal, or kill -9) stops the others."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import GRID6

from scaling.cli import main
from sweeps import registry as R
from sweeps.grid import load_grid, plan_grid

FAKE = "sweeps.fake:fake_train"


@pytest.fixture
def six(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    grid = tmp_path / "six.toml"
    grid.write_text(GRID6)
    return grid, tmp_path / "sweep", [c.run_id for c in plan_grid(load_grid(grid)).cells]


def pids(root: Path, run_id: str) -> list[int]:
    log = R.run_dir(root, run_id) / "train_calls.log"
    return [int(x) for x in log.read_text().split()] if log.is_file() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose (its parent, the launcher, may not have reaped it yet)
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def launch(grid: Path, root: Path, *flags: str, **env: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "scaling.cli", "sweep", "run", str(grid), "--out", str(root)]
    cmd += ["--train-fn", FAKE, "--no-progress", *flags]
    return subprocess.Popen(
        cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_three_workers_train_every_cell_once_and_sum_up(six, monkeypatch, capsys) -> None:
    grid, root, ids = six
    monkeypatch.setenv("SWEEP_FAKE_SECONDS", "1")
    argv = ["sweep", "run", str(grid), "--out", str(root), "--workers", "3", "--train-fn", FAKE]
    assert main([*argv, "--no-progress"]) == 0
    assert sorted(r["run_id"] for r in R.read_records(root)) == sorted(ids)  # each once
    trainers = [pids(root, i) for i in ids]
    assert all(len(p) == 1 for p in trainers)  # nothing trained twice
    assert len({p[0] for p in trainers}) == 3  # by three processes
    # each run records the launchers of the call (the time estimate's calibration reads it)
    assert [r["launchers"] for r in R.read_records(root)] == [3] * 6
    err = capsys.readouterr().err
    assert f"sweep 'six' in {root}: 6 done" in err and err.count("sweep 'six'") == 1
    assert main([*argv, "--no-progress"]) == 0  # rerun: nothing to do
    assert all(len(pids(root, i)) == 1 for i in ids)


def test_a_worker_failure_is_counted_once_and_not_retried(six, capsys, monkeypatch) -> None:
    grid, root, ids = six
    monkeypatch.setenv("SWEEP_FAKE_FAIL", ids[1])  # the second cell: a worker's first
    monkeypatch.setenv("SWEEP_FAKE_SECONDS", "0.5")
    argv = ["sweep", "run", str(grid), "--out", str(root), "--workers", "2", "--train-fn", FAKE]
    assert main([*argv, "--no-progress"]) == 1
    assert len(pids(root, ids[1])) == 1  # one attempt in this call, by whoever took it
    assert "5 done, 1 failed" in capsys.readouterr().err
    assert len(R.read_records(root)) == 5


def test_a_cell_the_first_launcher_failed_is_not_retried_by_a_worker(six, monkeypatch) -> None:
    grid, root, ids = six
    monkeypatch.setenv("SWEEP_FAKE_FAIL", ids[0])  # the first launcher's first cell fails at
    monkeypatch.setenv("SWEEP_FAKE_SECONDS", "1")  # once; the worker, starting, comes to it
    argv = ["sweep", "run", str(grid), "--out", str(root), "--workers", "2", "--train-fn", FAKE]
    assert main([*argv, "--no-progress"]) == 1
    assert len(pids(root, ids[0])) == 1  # one attempt in this call
    assert len(R.read_records(root)) == 5


def test_sigterm_to_the_launcher_stops_every_worker(six) -> None:
    grid, root, ids = six
    release = root.parent / "release"  # cells train until it exists
    p = launch(grid, root, "--workers", "2", SWEEP_FAKE_HOLD=str(release))
    wait_for(lambda: sum(bool(pids(root, i)) for i in ids) >= 2)  # both launchers training
    trainers = {x for i in ids for x in pids(root, i)}
    assert len(trainers) == 2
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert not any(alive(x) for x in trainers)  # the launcher waited for its worker
    assert not list((root / "leases").glob("*.json"))  # both leases released
    assert not R.read_records(root)
    release.touch()
    assert main(["sweep", "run", str(grid), "--out", str(root), "--train-fn", FAKE]) == 0
    assert sorted(r["run_id"] for r in R.read_records(root)) == sorted(ids)


def test_kill_9_of_the_launcher_stops_its_workers(six) -> None:
    grid, root, ids = six
    release = root.parent / "release"
    p = launch(grid, root, "--workers", "2", SWEEP_FAKE_HOLD=str(release))
    wait_for(lambda: sum(bool(pids(root, i)) for i in ids) >= 2)
    (worker,) = {x for i in ids for x in pids(root, i)} - {p.pid}
    p.kill()
    p.wait()
    wait_for(lambda: not alive(worker), timeout=30)  # PR_SET_PDEATHSIG: SIGTERM, not orphaned
    release.touch()
    assert main(["sweep", "run", str(grid), "--out", str(root), "--train-fn", FAKE]) == 0
    assert sorted(r["run_id"] for r in R.read_records(root)) == sorted(ids)


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--workers", "0"], "--workers 0: must be >= 1"),
        (["--workers", "2", "--backend", "slurm"], "is for --backend local"),
        (["--workers", "2", "--max-runs", "1"], "use it with --workers 1"),
    ],
)
def test_bad_worker_counts_exit_2_before_any_work(six, capsys, flags, needle) -> None:
    grid, root, _ = six
    assert main(["sweep", "run", str(grid), "--out", str(root), "--train-fn", FAKE, *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not root.exists()


def test_no_more_launchers_than_unfinished_cells(six, monkeypatch, capsys) -> None:
    """--workers 3 with one cell left starts no extra launcher (they would find nothing to
    train), and the plan's estimate does not charge the idle ones' contention either."""
    from sweeps import workers as W
    from sweeps.estimate import wall_seconds
    from sweeps.fake import fake_train
    from sweeps.runner import run_local

    grid, root, ids = six
    plan = plan_grid(load_grid(grid))
    assert run_local(root, plan, train_fn=fake_train, progress=False, max_runs=5)["done"] == 5
    started: list[int] = []
    real_start = W.start
    monkeypatch.setattr(W, "start", lambda n, argv: started.append(n) or real_start(n, argv))
    argv = ["sweep", "run", str(grid), "--out", str(root), "--workers", "3", "--train-fn", FAKE]
    assert main([*argv, "--no-progress"]) == 0
    assert started == [0] and len(R.read_records(root)) == len(ids)
    assert [r["launchers"] for r in R.read_records(root)] == [1] * 6  # it trained alone
    cpu = ("cpu", 1)
    assert wall_seconds([10.0, 10.0], 64, cpu, cores=2) == wall_seconds([10.0, 10.0], 2, cpu, 2)
