"""Sweep launching with the fake train function: idempotence, kill/relaunch, concurrent
launchers, divergence, leases, status and the submitit (local executor) path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import GRID6, tiny_grid

from scaling.cli import main
from sweeps import registry as R
from sweeps.fake import fake_train
from sweeps.grid import load_grid, plan_grid
from sweeps.lease import HOST, Lease
from sweeps.runner import run_local
from sweeps.status import collect

FAKE = "sweeps.fake:fake_train"


def _six(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "six.toml"
    path.write_text(GRID6 + extra)
    return path


def _cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    full_env = {**os.environ, **(env or {})}
    cmd = [sys.executable, "-m", "scaling.cli", "sweep", "run", *args, "--train-fn", FAKE]
    return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _calls(root: Path, run_id: str) -> int:
    log = R.run_dir(root, run_id) / "train_calls.log"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def _one_record_per_cell(root: Path, plan) -> list[dict]:
    records = R.read_records(root)
    ids = [r["run_id"] for r in records]
    assert sorted(ids) == sorted(c.run_id for c in plan.cells)  # each exactly once
    return records


def test_cpu_small_twice_nothing_retrained_and_results_unchanged(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    assert main(["sweep", "run", "cpu-small", "--out", str(root), "--train-fn", FAKE]) == 0
    plan = plan_grid(load_grid("cpu-small"))
    records = _one_record_per_cell(root, plan)
    before = (root / "results.jsonl").read_bytes()
    assert main(["sweep", "run", "cpu-small", "--out", str(root), "--train-fn", FAKE]) == 0
    assert (root / "results.jsonl").read_bytes() == before
    assert all(_calls(root, c.run_id) == 1 for c in plan.cells)
    r = records[0]
    for key in (
        "run_id sweep cell config N_total N_nonembed D C_6ND C_exact final_val_loss "
        "best_val_loss curve evals status diverged_at_step wall_time_s device_kind seed"
    ).split():
        assert key in r, key
    cell = plan.by_id()[r["run_id"]]
    assert r["sweep"] == "cpu-small" and r["cell"]["budget"] == cell.cell["budget"]
    assert r["C_exact"] == pytest.approx(cell.c_exact) and r["D"] == cell.tokens
    assert (root / r["curve"]).is_file() and r["status"] == "done"
    assert json.loads((root / "plan.json").read_text())["sweep"] == "cpu-small"


def test_kill_launcher_mid_sweep_then_relaunch(tmp_path: Path) -> None:
    grid, root = _six(tmp_path), tmp_path / "sweep"
    proc = _cli(str(grid), "--out", str(root), env={"SWEEP_FAKE_SECONDS": "0.6"})
    deadline = time.time() + 30
    while time.time() < deadline and len(R.read_records(root)) < 2:
        time.sleep(0.05)
    time.sleep(0.25)  # somewhere inside the third run
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    plan = plan_grid(load_grid(grid))
    assert 2 <= len(R.read_records(root)) < len(plan.cells)
    assert list((root / "leases").glob("*.json"))  # the dead launcher's lease is left behind
    info = collect(root)
    assert info["counts"]["done"] >= 2 and info["counts"]["done"] < 6
    assert main(["sweep", "run", str(grid), "--out", str(root), "--train-fn", FAKE]) == 0
    _one_record_per_cell(root, plan)
    assert not list((root / "leases").glob("*.json"))
    # The interrupted cell resumed from its metrics instead of starting over.
    steps = [
        json.loads(x)["step"]
        for c in plan.cells
        for x in (R.run_dir(root, c.run_id) / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(steps) == 10 * len(plan.cells)


def test_two_launchers_train_every_cell_once(tmp_path: Path) -> None:
    grid, root = _six(tmp_path), tmp_path / "sweep"
    env = {"SWEEP_FAKE_SECONDS": "0.3"}
    procs = [_cli(str(grid), "--out", str(root), env=env) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    plan = plan_grid(load_grid(grid))
    _one_record_per_cell(root, plan)
    assert [_calls(root, c.run_id) for c in plan.cells] == [1] * len(plan.cells)


def test_diverging_cell_is_recorded_and_the_rest_finish(tmp_path: Path) -> None:
    extra = '[[overrides]]\nwhere = {shape = "d16-l1-h2"}\nset = {"train.lr" = 50.0}\n'
    grid, root = _six(tmp_path, extra), tmp_path / "sweep"
    assert main(["sweep", "run", str(grid), "--out", str(root), "--train-fn", FAKE]) == 0
    plan = plan_grid(load_grid(grid))
    records = _one_record_per_cell(root, plan)
    diverged = [r for r in records if r["status"] == "diverged"]
    assert len(diverged) == 2 and all(r["cell"]["shape"] == "d16-l1-h2" for r in diverged)
    assert all(r["diverged_at_step"] >= 1 and r["final_val_loss"] is None for r in diverged)
    assert sum(r["status"] == "done" for r in records) == 4
    assert collect(root)["counts"]["diverged"] == 2


def test_status_of_a_finished_sweep_with_diverged_cells_has_no_time_left(tmp_path: Path) -> None:
    """A diverged run is recorded and never resumed: its unspent FLOPs are not work left, so a
    sweep whose every cell is done or diverged shows no time left; a pending cell still does."""
    from sweeps.status import format_status

    extra = '[[overrides]]\nwhere = {shape = "d16-l1-h2"}\nset = {"train.lr" = 50.0}\n'
    grid, root = _six(tmp_path, extra), tmp_path / "sweep"
    plan = plan_grid(load_grid(grid))
    R.write_plan(root, plan)
    run_local(root, plan, train_fn=fake_train, progress=False, max_runs=5)
    partway = collect(root)
    assert partway["counts"]["pending"] == 1 and partway["eta_s"] > 0
    run_local(root, plan, train_fn=fake_train, progress=False)
    info = collect(root)
    assert info["counts"]["diverged"] == 2 and info["counts"]["done"] == 4
    assert info["spent"] < info["planned"]  # the diverged runs stopped early
    assert info["eta_s"] is None and " left " not in format_status(info)


def test_run_summary_says_how_many_cells_max_runs_left(tmp_path: Path, capsys) -> None:
    """--max-runs stops early: the summary counts the cells still to train instead of saying
    "nothing to do" (--max-runs 0) or only what it trained."""
    root = tmp_path / "sweep"
    argv = ["sweep", "run", "cpu-small", "--out", str(root), "--train-fn", FAKE, "--no-progress"]
    assert main([*argv, "--max-runs", "0"]) == 0
    err = capsys.readouterr().err
    assert "nothing to do" not in err and "4 of 4 cell(s) not finished yet" in err
    assert main([*argv, "--max-runs", "1"]) == 0
    assert "3 of 4 cell(s) not finished yet" in capsys.readouterr().err
    assert main(argv) == 0
    assert "not finished" not in capsys.readouterr().err
    assert main(argv) == 0
    assert "nothing to do" in capsys.readouterr().err


def test_failed_run_is_marked_and_retried(tmp_path: Path) -> None:
    grid, root = _six(tmp_path), tmp_path / "sweep"
    plan = plan_grid(load_grid(grid))
    bad = plan.cells[0].run_id

    def flaky(cfg, out, progress=False):
        if Path(out).name == bad:
            raise RuntimeError("boom")
        return fake_train(cfg, out, progress=progress)

    counts = run_local(root, plan, train_fn=flaky, progress=False)
    assert counts["failed"] == 1 and counts["done"] == 5
    R.write_plan(root, plan)
    info = collect(root)
    row = next(r for r in info["rows"] if r["run_id"] == bad)
    assert row["state"] == "failed" and "boom" in row["note"]
    assert run_local(root, plan, train_fn=fake_train, progress=False)["done"] == 1
    _one_record_per_cell(root, plan)
    assert R.read_failure(root, bad) is None


def test_status_eta_counts_the_runs_in_flight(tmp_path: Path) -> None:
    """With two cells running at once (two launchers, or array tasks) the sweep's time left is
    half the one-at-a-time figure, and the footer says which it assumed."""
    from sweeps.status import format_status

    grid, root = _six(tmp_path), tmp_path / "sweep"
    plan = plan_grid(load_grid(grid))
    assert run_local(root, plan, train_fn=fake_train, progress=False, max_runs=2)["done"] == 2
    R.write_plan(root, plan)
    alone = collect(root)
    assert alone["eta_at_once"] == 1 and alone["eta_s"] > 0
    assert "one run at a time" in format_status(alone)
    pending = [c.run_id for c in plan.cells if c.run_id not in R.finished_ids(root)]
    held = [
        Lease(root / "leases", rid, f"launcher{i}", ttl=60) for i, rid in enumerate(pending[:2])
    ]
    assert all(lease.acquire() for lease in held)
    busy = collect(root)
    assert busy["counts"]["running"] == 2 and busy["eta_at_once"] == 2
    assert busy["eta_s"] == pytest.approx(alone["eta_s"] / 2)
    assert "2 runs at a time, as now" in format_status(busy)


def test_status_names_a_trained_run_its_launcher_did_not_record(tmp_path: Path) -> None:
    """Killed between result.json and results.jsonl: status says the next sweep run records the
    run without training it, and it does."""
    grid, root = _six(tmp_path), tmp_path / "sweep"
    plan = plan_grid(load_grid(grid))
    assert run_local(root, plan, train_fn=fake_train, progress=False)["done"] == 6
    R.write_plan(root, plan)
    lines = (root / "results.jsonl").read_text().splitlines()
    (root / "results.jsonl").write_text("\n".join(lines[1:]) + "\n")  # the first one unrecorded
    lost = json.loads(lines[0])["run_id"]
    row = next(r for r in collect(root)["rows"] if r["run_id"] == lost)
    assert row["state"] == "pending" and row["note"].startswith("trained, not yet recorded")
    run_local(root, plan, train_fn=fake_train, progress=False)
    _one_record_per_cell(root, plan)
    assert _calls(root, lost) == 1  # recorded from its result.json, not trained again


def test_leases_exclusive_expire_and_stolen(tmp_path: Path) -> None:
    a = Lease(tmp_path, "r1", "A", ttl=30)
    b = Lease(tmp_path, "r1", "B", ttl=30)
    assert a.acquire() and not b.acquire()
    assert Lease(tmp_path, "r1", "A", ttl=30).acquire()  # same owner (requeued job) re-takes
    a.release()
    # A lease from another host is honoured until it expires, then stolen.
    path = tmp_path / "r1.json"
    path.write_text(json.dumps(dict(owner="X", host="elsewhere", pid=1, expires=time.time() + 60)))
    assert not b.acquire()
    path.write_text(json.dumps(dict(owner="X", host="elsewhere", pid=1, expires=time.time() - 1)))
    assert b.acquire()
    assert json.loads(path.read_text())["owner"] == "B"
    b.release()
    assert not path.exists()
    # Heartbeat: a short-ttl lease stays alive while held, and notices when it is taken.
    c = Lease(tmp_path, "r2", "C", ttl=0.4)
    assert c.acquire()
    time.sleep(0.8)
    assert not Lease(tmp_path, "r2", "D", ttl=1).acquire() and not c.lost.is_set()
    (tmp_path / "r2.json").write_text(
        json.dumps(dict(owner="D", host=HOST, pid=os.getpid(), expires=time.time() + 60))
    )
    time.sleep(0.3)
    assert c.lost.is_set()
    c.release()


def test_append_record_is_idempotent(tmp_path: Path) -> None:
    assert R.append_record(tmp_path, {"run_id": "a", "x": float("nan")})
    assert not R.append_record(tmp_path, {"run_id": "a", "x": 2})
    assert R.append_record(tmp_path, {"run_id": "b"})
    assert [r["run_id"] for r in R.read_records(tmp_path)] == ["a", "b"]
    assert R.read_records(tmp_path)[0]["x"] is None  # strict JSON: NaN -> null


def test_status_cli_and_replan_guard(tmp_path: Path, capsys) -> None:
    grid, root = _six(tmp_path), tmp_path / "sweep"
    assert (
        main(["sweep", "run", str(grid), "--out", str(root), "--train-fn", FAKE, "--max-runs", "2"])
        == 0
    )
    capsys.readouterr()
    assert main(["sweep", "status", str(root)]) == 0
    out = capsys.readouterr().out
    assert "2 done, 0 diverged, 0 running, 0 failed, 4 pending" in out
    assert "FLOPs spent" in out and "planned" in out
    assert main(["sweep", "run", "cpu-small", "--out", str(root), "--train-fn", FAKE]) == 2
    assert "different set of runs" in capsys.readouterr().err
    assert main(["sweep", "status", str(tmp_path / "nope")]) == 2


def test_status_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """`scaling sweep status DIR | head`: the reader left before we wrote; no traceback."""
    plan, root = plan_grid(load_grid(_six(tmp_path))), tmp_path / "sweep"
    R.write_plan(root, plan)
    r, w = os.pipe()
    os.close(r)  # a reader that has already gone: the first write raises EPIPE
    cmd = [sys.executable, "-m", "scaling.cli", "sweep", "status", str(root)]
    p = subprocess.run(cmd, stdout=w, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(w)
    assert p.returncode == 141, p.stderr  # 128 + SIGPIPE, as shells report it
    assert p.stderr == ""


def test_status_partial_run_resumes_from_its_checkpoint_not_its_last_log(tmp_path: Path) -> None:
    plan, root = plan_grid(load_grid(_six(tmp_path))), tmp_path / "sweep"
    R.write_plan(root, plan)
    first, second = (R.run_dir(root, c.run_id) for c in plan.cells[:2])
    for out in (first, second):
        out.mkdir(parents=True)
        lines = [json.dumps({"step": s}) for s in (10, 20, 30, 40)]
        (out / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    for name in ("10", "30", "40.orbax-checkpoint-tmp-1"):  # 40 was cut by the kill
        (first / "checkpoints" / name).mkdir(parents=True)
    rows = {r["run_id"]: r for r in collect(root)["rows"]}
    a, b = (rows[c.run_id] for c in plan.cells[:2])
    assert a["note"] == "partial, resumes at step 30"
    assert b["note"] == "partial, no checkpoint yet"
    # the work left is counted from where each resumes: step 30, and step 0 (not the logged 40)
    c0, c1 = plan.cells[:2]
    assert a["_left"] == pytest.approx(c0.c_exact * (1 - 30 / c0.steps))
    assert b["_left"] == pytest.approx(c1.c_exact)


def test_sweep_out_is_a_file_exits_2(tmp_path: Path, capsys) -> None:
    out = tmp_path / "a_file"
    out.write_text("x")
    assert main(["sweep", "run", "cpu-small", "--out", str(out), "--train-fn", FAKE]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err


def test_submitit_local_executor_runs_two_cells(tmp_path: Path) -> None:
    extra = '[[overrides]]\nwhere = {tokens = 40000}\nset = {"train.lr" = 50.0}\n'
    path = tmp_path / "two.toml"
    path.write_text(tiny_grid("two", count=1, extra=extra))
    root = tmp_path / "sweep"
    rc = main(
        [
            "sweep",
            "run",
            str(path),
            "--out",
            str(root),
            "--backend",
            "slurm",
            "--cluster",
            "local",
            "--wait",
            "--timeout-min",
            "2",
            "--train-fn",
            FAKE,
        ]
    )
    assert rc == 0
    plan = plan_grid(load_grid(path))
    records = _one_record_per_cell(root, plan)
    assert len(records) == 2 and {r["status"] for r in records} == {"done", "diverged"}
    assert list((root / "slurm").iterdir())  # submitit's job folders and logs
    # Resubmitting a finished grid submits nothing.
    assert (
        main(
            [
                "sweep",
                "run",
                str(path),
                "--out",
                str(root),
                "--backend",
                "slurm",
                "--cluster",
                "local",
                "--wait",
                "--train-fn",
                FAKE,
            ]
        )
        == 0
    )


def test_user_error_in_train_stops_the_sweep_with_exit_2(tmp_path: Path, capsys) -> None:
    grid, root = _six(tmp_path), tmp_path / "sweep"
    bad = grid.read_text().replace("[base.model]", '[base.data]\ndataset = "nope"\n[base.model]')
    grid.write_text(bad)
    rc = main(
        [
            "sweep",
            "run",
            str(grid),
            "--out",
            str(root),
            "--train-fn",
            "sweeps.fake:fake_train_checking_data",
        ]
    )
    assert rc == 2 and "unknown dataset 'nope'" in capsys.readouterr().err
    assert R.read_records(root) == [] and not list((root / "leases").glob("*.json"))
    assert collect(root)["counts"]["failed"] == 1


def test_launcher_that_loses_its_lease_stops_training_and_records_nothing(tmp_path: Path) -> None:
    """A launcher stalled past the lease TTL finds its lease taken over: the train function is
    told to stop (should_stop), the cell is left to the new owner, and no record is written."""
    from sweeps.runner import run_cell

    grid, root = _six(tmp_path), tmp_path / "sweep"
    plan = plan_grid(load_grid(grid))
    cell = plan.cells[0]
    summary = cell.summary()
    seen = {}

    def slow_train(cfg, out, progress=False, should_stop=None):
        lease_path = root / "leases" / f"{cell.run_id}.json"
        info = json.loads(lease_path.read_text())
        info["owner"] = "someone-else"  # another launcher takes the run over
        lease_path.write_text(json.dumps(info))
        deadline = time.time() + 10
        while not should_stop():
            assert time.time() < deadline, "should_stop never fired"
            time.sleep(0.02)
        seen["stopped"] = True
        return {"status": "stopped", "step": 3, "run_id": cell.run_id}

    outcome = run_cell(root, plan.name, summary, train_fn=slow_train, lease_ttl=0.4)
    assert outcome == "busy" and seen["stopped"]
    assert R.read_records(root) == []


class _Job:
    """What `sweeps.slurm.wait_for` reads of a submitit job: its id and result-pickle path."""

    def __init__(self, job_id: str, folder: Path) -> None:
        self.job_id = job_id
        self.paths = type("Paths", (), {"result_pickle": folder / f"{job_id}_result.pkl"})()


def test_slurm_wait_never_hangs_without_accounting(tmp_path: Path, monkeypatch) -> None:
    """--wait decides from squeue and the sweep's files: a task gone from the queue without a
    result is reported `stopped` with its resume step; a failing squeue ends the wait."""
    from sweeps import slurm

    plan, root = plan_grid(load_grid(_six(tmp_path))), tmp_path / "sweep"
    R.write_plan(root, plan)
    cells = [c.summary() for c in plan.cells[:3]]
    jobs = [_Job(f"7_{i}", tmp_path) for i in range(3)]
    R.append_record(
        root,
        R.make_record(
            root,
            "six",
            cells[0],
            fake_train(plan.cells[0].config, R.run_dir(root, cells[0]["run_id"])),
        ),
    )
    (R.run_dir(root, cells[1]["run_id"]) / "checkpoints" / "40").mkdir(parents=True)
    monkeypatch.setattr(slurm, "queued_jobs", lambda ids: set())  # all three left the queue
    out = slurm.wait_for(root, cells, jobs, poll_s=0.01)
    assert out[cells[0]["run_id"]] == "done"
    assert out[cells[1]["run_id"]].startswith("stopped: job 7_1 left the queue without a result")
    assert out[cells[1]["run_id"]].endswith("resubmit to resume from checkpoint step 40")
    assert "from the start (no checkpoint yet)" in out[cells[2]["run_id"]]
    monkeypatch.setattr(slurm, "queued_jobs", lambda ids: None)  # squeue keeps failing
    t0 = time.time()
    out = slurm.wait_for(root, cells, jobs, poll_s=0.01, squeue_patience_s=0.2)
    assert time.time() - t0 < 10
    assert set(out.values()) == {"unknown: squeue failed for 0.2 s"}
