"""Faults never cost progress and never print a traceback (issue 12).

Damaged bookkeeping files, a lease ttl <= 0, a clock going backwards, a full disk, hostile run
names, and a fit that fails after skipping runs: each test drives the real CLI in-process (the
fake train function stands in for the engine) and checks the exit code, the ONE line on stderr,
and that every intact record survives.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import tiny_grid

from scaling import config as C
from scaling import fileio
from scaling.cli import main
from scaling.errors import DiskFullError, UserError
from sweeps import lease as lease_mod
from sweeps import registry as R
from sweeps.grid import load_grid, plan_grid
from sweeps.lease import HOST, Lease, is_stale

FAKE = "sweeps.fake:fake_train"
GRID = tiny_grid("faults", n_max="9e3", count=2)


@pytest.fixture
def sweep(tmp_path: Path) -> tuple[Path, Path]:
    grid, root = tmp_path / "g.toml", tmp_path / "sweep"
    grid.write_text(GRID)
    return grid, root


def _run(grid: Path, root: Path, *extra: str) -> int:
    return main(["sweep", "run", str(grid), "--out", str(root), "--train-fn", FAKE, *extra])


def _one_line(capsys) -> tuple[str, str]:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return out, err


def _errors(err: str) -> list[str]:
    return [x for x in err.splitlines() if x.startswith("error:")]


# ----------------------------------------------------------------------------- damaged files


def test_torn_and_non_utf8_results_keep_every_intact_record(sweep, capsys) -> None:
    grid, root = sweep
    assert _run(grid, root, "--max-runs", "2") == 0
    intact = R.read_records(root)
    assert len(intact) == 2
    path = root / "results.jsonl"
    path.write_bytes(path.read_bytes() + b'{"run_id": "torn", "sweep": "fau')  # a kill mid-line
    capsys.readouterr()
    assert [r["run_id"] for r in R.read_records(root)] == [r["run_id"] for r in intact]
    assert "cut short" in capsys.readouterr().err
    assert main(["sweep", "status", str(root)]) == 0  # status still works
    _one_line(capsys)
    path.write_bytes(path.read_bytes() + b"\n\xff\xfe garbage \x00\n")
    assert _run(grid, root) == 0  # the sweep finishes the remaining cells
    _, err = _one_line(capsys)
    assert "damaged" in err and not _errors(err)
    records = R.read_records(root)
    assert len(records) == 4 and {r["run_id"] for r in intact} <= {r["run_id"] for r in records}
    damaged = (root / "results.jsonl.damaged").read_bytes()
    assert b"torn" in damaged and b"\xff\xfe" in damaged  # evidence kept beside the table
    assert fileio.split_jsonl(path.read_bytes())[1] == []  # the table itself is clean again


def test_damaged_plan_is_rewritten_by_run_and_named_by_status(sweep, capsys) -> None:
    grid, root = sweep
    assert _run(grid, root, "--max-runs", "1") == 0
    (root / "plan.json").write_bytes(b'{"sweep": "faults", "cells": [{"run_id": \xff')
    assert main(["sweep", "status", str(root)]) == 2
    _, err = _one_line(capsys)
    assert len(_errors(err)) == 1 and "plan.json" in err and "sweep run" in err
    assert _run(grid, root) == 0
    _, err = _one_line(capsys)
    assert "rewriting it from the grid" in err
    assert len(R.read_records(root)) == 4 and R.read_plan(root)["sweep"] == "faults"


@pytest.mark.parametrize(
    "garbage", [b"", b"{", b"\xff\xfe\x00", b"[1, 2]", b'{"expires": "soon"}', b"null"]
)
def test_garbage_lease_failed_and_result_files_do_not_block(sweep, capsys, garbage) -> None:
    grid, root = sweep
    plan = plan_grid(load_grid(grid))
    a, b = plan.cells[0].run_id, plan.cells[1].run_id
    (root / "leases").mkdir(parents=True)
    (root / "leases" / f"{a}.json").write_bytes(garbage)  # corrupt lease: expired
    R.run_dir(root, b).mkdir(parents=True)
    (R.run_dir(root, b) / "failed.json").write_bytes(garbage)
    (R.run_dir(root, b) / "result.json").write_bytes(garbage)
    capsys.readouterr()
    assert main(["sweep", "status", str(root)]) == 2  # no plan yet: one clear line
    assert len(_errors(_one_line(capsys)[1])) == 1
    assert _run(grid, root) == 0
    _, err = _one_line(capsys)
    assert not _errors(err)
    assert len(R.read_records(root)) == 4
    assert main(["sweep", "status", str(root), "--json"]) == 0
    out, _ = _one_line(capsys)
    assert json.loads(out)["counts"] == dict(done=4, diverged=0, running=0, failed=0, pending=0)


def test_damaged_failure_marker_counts_as_one_attempt(tmp_path: Path, capsys) -> None:
    (R.run_dir(tmp_path, "x")).mkdir(parents=True)
    (R.run_dir(tmp_path, "x") / "failed.json").write_bytes(b"\x00\x01")
    assert R.read_failure(tmp_path, "x")["attempts"] == 1
    R.write_failure(tmp_path, "x", "boom")
    assert R.read_failure(tmp_path, "x") == {**R.read_failure(tmp_path, "x"), "attempts": 2}
    assert "failed.json" in capsys.readouterr().err


def test_read_text_and_json_name_the_file_and_the_fix(tmp_path: Path) -> None:
    p = tmp_path / "x.toml"
    p.write_bytes(b"a = 1\nb = \xe9\n")
    with pytest.raises(UserError, match=r"x.toml is not UTF-8 text \(byte 0xe9 on line 2\)"):
        C.read_toml(p)
    with pytest.raises(UserError, match=r"y.json is damaged .*; do this"):
        (tmp_path / "y.json").write_text("{")
        fileio.read_json(tmp_path / "y.json", fix="do this")


# ----------------------------------------------------------------------------- leases


def test_lease_ttl_must_be_positive(sweep, capsys) -> None:
    grid, root = sweep
    for bad in ("0", "-5", "nan", "inf"):
        assert _run(grid, root, "--lease-ttl", bad) == 2
        _, err = _one_line(capsys)
        assert len(_errors(err)) == 1 and "--lease-ttl" in err
    assert not root.exists()  # refused before anything was written
    with pytest.raises(UserError):
        Lease(root, "r", "A", ttl=0)


def test_lease_survives_a_clock_going_backwards(tmp_path: Path, monkeypatch) -> None:
    """A dead owner's lease from another host, written before the observer's wall clock was
    set back an hour, must not block the cell for an hour: watched by the monotonic clock it
    goes stale after one ttl of no heartbeat. A live owner (content changing) stays live."""
    path = tmp_path / "r.json"
    info = dict(owner="X", host="elsewhere", pid=1, heartbeat=1e9, beat=1, ttl=0.3)
    info["expires"] = time.time() + 3600.3  # "now" on the owner's clock was an hour ahead
    path.write_text(json.dumps(info))
    assert not Lease(tmp_path, "r", "B", ttl=5).acquire()  # first look: trust expires
    time.sleep(0.4)
    taker = Lease(tmp_path, "r", "B", ttl=5)
    assert taker.acquire()  # unchanged for > ttl: stale
    taker.release()
    live = dict(info, owner="Y", path=str(tmp_path / "s.json"))
    for beat in range(3):  # an owner that keeps beating is never stale, whatever the clocks
        live["beat"] = beat
        monkeypatch.setattr(lease_mod.time, "time", lambda: 0.0)  # clock far in the past
        assert not is_stale(live, path=tmp_path / "s.json")
        time.sleep(0.2)
    monkeypatch.setattr(lease_mod.time, "time", lambda: 1e12)  # and far in the future
    live["beat"] = 99
    assert not is_stale(live, path=tmp_path / "s.json")
    assert is_stale(dict(live, host=HOST, pid=2**22 + 12345))  # a dead local pid: stale


# ----------------------------------------------------------------------------- disk full


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_stops_the_sweep_with_one_line_and_keeps_results(
    sweep, capsys, monkeypatch
) -> None:
    grid, root = sweep
    assert _run(grid, root, "--max-runs", "2") == 0
    before = (root / "results.jsonl").read_bytes()
    capsys.readouterr()
    real_open = open

    def full_open(file, mode="r", *a, **k):  # every new file write fails, like a full disk
        if any(c in mode for c in "wax") and "sweep" in str(file):
            _enospc()
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr("builtins.open", full_open)
    assert _run(grid, root) == 1
    monkeypatch.undo()
    _, err = _one_line(capsys)
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines[-1].startswith("error: no space left on device writing ")
    assert lines[-1].endswith("free space and rerun to resume") and len(_errors(err)) == 1
    assert (root / "results.jsonl").read_bytes() == before  # earlier results intact
    assert not list((root / "leases").glob("*.json"))  # lease released
    assert _run(grid, root) == 0 and len(R.read_records(root)) == 4  # space back: resumes


def test_disk_full_in_analyze_and_atomic_write(tmp_path: Path, capsys, monkeypatch) -> None:
    target = tmp_path / "f.json"
    target.write_text("old")
    monkeypatch.setattr(fileio.os, "fsync", _enospc)
    with pytest.raises(DiskFullError, match=r"writing .*f.json; free space and rerun to resume"):
        fileio.atomic_write(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]
    csv = tmp_path / "t.csv"
    csv.write_text(
        "N,D,loss\n"
        + "".join(f"{n},{20 * n},{2 + 100 / n**0.3}\n" for n in (1e6, 2e6, 4e6, 8e6, 16e6, 32e6))
    )
    args = ["analyze", "--csv", str(csv), "--map", "N=N", "--map", "D=D", "--map", "loss=loss"]
    args += ["--no-approach2", "--resamples", "10", "--holdout", "none", "--method", "varpro"]
    args += ["--out", str(tmp_path)]
    import matplotlib.figure

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", _enospc)  # the first figure fails
    assert main(args) == 1
    _, err = _one_line(capsys)
    assert len(_errors(err)) == 1 and "no space left on device writing" in _errors(err)[0]
    assert ".png; free space and rerun to resume" in err


# ----------------------------------------------------------------------------- names, notes


def test_run_names_become_safe_slugs_and_toml_round_trips() -> None:
    name = '../../x"q\\\n[evil]'
    cfg = C.from_dict({"name": name, "train": {"steps": 10}})
    assert C.slug(name) == "x-q-evil" and C.slug("../..") == "run" and C.slug("a b") == "a-b"
    from scaling.train_cli import default_out_dir

    out = default_out_dir(cfg)
    assert out.parent == Path("runs") and ".." not in out.parts
    text = C.to_toml(cfg)
    back = C.from_dict(__import__("tomllib").loads(text))
    assert back == cfg and C.config_hash(back) == C.config_hash(cfg)


def test_notes_about_skipped_runs_are_printed_when_the_fit_fails(tmp_path: Path, capsys) -> None:
    rec = dict(run_id="a", status="done", N_total=1e6, D=2e7, final_val_loss=3.0)
    lines = [rec, dict(rec, run_id="b", status="diverged", final_val_loss=None)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert main(["analyze", str(tmp_path), "--resamples", "10"]) == 2
    _, err = _one_line(capsys)
    assert "note: skipped run b: status 'diverged'" in err and len(_errors(err)) == 1


# ----------------------------------------------------------------------------- the suite itself


def _faults_script():
    """scripts/faults.py loaded as a module (it puts scripts/ on sys.path), and its harness
    scripts/faults_run.py."""
    import importlib
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[2] / "scripts" / "faults.py"
    spec = importlib.util.spec_from_file_location("faults_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module, importlib.import_module("faults_run")


def test_fault_suite_kills_a_hung_case_reports_it_and_goes_on(monkeypatch, capsys) -> None:
    """Regression: one hung `sweep run` raised TimeoutExpired out of `make faults` and the
    later sections never ran. A hung child is killed (its process group) and reported; a
    crashing section is one [FAIL] line and the next section still runs."""
    import sys

    faults, harness = _faults_script()
    proc = harness.spawn(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
    )
    ran = harness.finish(proc, 1)
    assert ran.returncode is None and ran.stdout == "up\n" and "hung" in ran.stderr
    assert proc.poll() is not None  # killed, not left running

    def crash(tmp: Path) -> None:
        raise subprocess.TimeoutExpired("scaling sweep run", 300)

    def fine(tmp: Path) -> None:
        harness.record("disk full", "a case", True)

    monkeypatch.setattr(faults, "SECTIONS", [("signals", crash), ("disk full", fine)])
    monkeypatch.setattr(sys, "argv", ["faults.py"])
    assert faults.main() == 1
    out = capsys.readouterr().out
    assert "[FAIL] signals: the section itself - crashed: TimeoutExpired" in out
    assert "signal cases clean             0/1 (0%)" in out
    assert "disk-full cases clear          1/1 (100%)" in out


def test_fault_suite_starts_as_make_faults_runs_it() -> None:
    """`python scripts/faults.py` in a fresh process (not under pytest's sys.path) finds its
    modules and tests/cli/fuzz_cases.py; a section name that matches nothing runs no case."""
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "faults.py"
    p = subprocess.run(
        [sys.executable, str(script), "no-such-section"], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert "bad inputs handled             0/0 (n/a)" in p.stdout


def test_lease_ttl_below_the_minimum_is_refused(sweep, capsys) -> None:
    """A tiny --lease-ttl let a second launcher take a cell whose owner was still training."""
    grid, root = sweep
    assert _run(grid, root, "--lease-ttl", "0.02") == 2
    _, err = _one_line(capsys)
    assert "--lease-ttl 0.02: must be at least 5 seconds" in err
    assert not root.exists()


def test_a_live_owner_on_this_host_is_never_stale(tmp_path: Path) -> None:
    """Whatever its expiry says (a heartbeat late on a busy host, a tiny ttl)."""
    info = dict(owner="X", host=HOST, pid=os.getpid(), expires=time.time() - 3600, ttl=0.01)
    assert not is_stale(info) and not is_stale(info, path=tmp_path / "r.json")
    (tmp_path / "r.json").write_text(json.dumps(info))
    assert not Lease(tmp_path, "r", "B", ttl=5).acquire()
