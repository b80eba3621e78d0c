"""The sweep directory's guards: one plan per DIR even when two launchers race to write it, and
`sweep status` on a path that is not a sweep directory names what it is."""

from __future__ import annotations

import threading
from pathlib import Path

from conftest import GRID6, tiny_grid

from scaling.cli import main
from scaling.errors import UserError
from sweeps import registry as R
from sweeps.grid import load_grid, plan_grid


def _plan(tmp_path: Path, name: str, toml: str):
    path = tmp_path / f"{name}.toml"
    path.write_text(toml)
    return plan_grid(load_grid(path))


def test_two_launchers_racing_on_a_fresh_dir_leave_one_plan(tmp_path: Path, monkeypatch) -> None:
    """Launcher A is held between reading plan.json (absent) and writing it while launcher B,
    with a different grid, tries the same DIR: B must see A's plan and refuse, not overwrite it."""
    plan_a = _plan(tmp_path, "six", GRID6)
    plan_b = _plan(tmp_path, "other", tiny_grid("other", tokens="[3e4, 6e4]"))
    assert {c.run_id for c in plan_a.cells}.isdisjoint(c.run_id for c in plan_b.cells)
    root = tmp_path / "sweep"
    root.mkdir()
    a_paused, b_done = threading.Event(), threading.Event()
    real_write = R.atomic_write

    def slow_write(path, data):  # A only: give B every chance to slip in before A writes
        if threading.current_thread().name == "A":
            a_paused.set()
            b_done.wait(timeout=1.0)  # without the lock B finishes here; with it B waits on A
        real_write(path, data)

    monkeypatch.setattr(R, "atomic_write", slow_write)
    errors: dict[str, BaseException] = {}

    def launch(name: str, plan) -> None:
        try:
            R.write_plan(root, plan)
        except BaseException as e:  # noqa: BLE001 - collected for the assertions below
            errors[name] = e
        finally:
            if name == "B":
                b_done.set()

    a = threading.Thread(target=launch, args=("A", plan_a), name="A")
    a.start()
    assert a_paused.wait(timeout=30)
    b = threading.Thread(target=launch, args=("B", plan_b), name="B")
    b.start()
    a.join(timeout=30)
    b.join(timeout=30)
    assert "A" not in errors
    assert isinstance(errors.get("B"), UserError), errors
    assert "different set of runs" in str(errors["B"])
    stored = R.read_plan(root)
    assert stored["sweep"] == "six"
    assert [c["run_id"] for c in stored["cells"]] == [c.run_id for c in plan_a.cells]


def _status(path: Path, capsys) -> str:
    assert main(["sweep", "status", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_status_of_a_path_that_is_not_a_sweep_dir_says_what_it_is(tmp_path: Path, capsys) -> None:
    file = tmp_path / "results.csv"
    file.write_text("N,D,loss\n")
    err = _status(file, capsys)
    assert f"{file} is a file" in err and "expects a sweep directory" in err
    assert "launch one" not in err
    # A `scaling train` run directory: config.toml and result.json, no plan.json/results.jsonl.
    run = tmp_path / "train-run"
    run.mkdir()
    (run / "config.toml").write_text("[model]\n")
    (run / "result.json").write_text("{}\n")
    err = _status(run, capsys)
    assert "single run's directory" in err and "launch one" not in err
    # A run folder inside a sweep names the sweep directory above it.
    plan = _plan(tmp_path, "six", GRID6)
    root = tmp_path / "sweep"
    R.write_plan(root, plan)
    cell = R.run_dir(root, plan.cells[0].run_id)
    cell.mkdir(parents=True)
    (cell / "config.toml").write_text("[model]\n")
    assert f"scaling sweep status {root}" in _status(cell, capsys)
    # An empty or absent directory: nothing launched yet, so the launch hint stays.
    assert f"scaling sweep run GRID --out {tmp_path / 'new'}" in _status(tmp_path / "new", capsys)


def test_same_runs_in_another_order_are_the_same_sweep(tmp_path: Path, capsys) -> None:
    """seeds = [1, 0] after [0, 1] plans the same runs: no 'different set of runs' refusal."""
    root = tmp_path / "sweep"
    argv = ["sweep", "run", "cpu-small", "--out", str(root), "--train-fn", "sweeps.fake:fake_train"]
    assert main([*argv, "--set", "seeds=[0,1]", "--max-runs", "1", "--no-progress"]) == 0
    assert main([*argv, "--set", "seeds=[1,0]", "--no-progress"]) == 0
    assert len(R.read_records(root)) == 8
    assert main([*argv, "--set", "seeds=[1,2]", "--no-progress"]) == 2  # really different
    assert "with a different set of runs" in capsys.readouterr().err


def test_run_into_a_dir_that_cannot_be_made_exits_2(tmp_path: Path, capsys) -> None:
    """An --out that cannot be created (here under /proc) is one `error:` line naming it,
    exit 2, before any cell trains; not a traceback."""
    out = Path("/proc/no-such-sweep-dir")
    argv = ["sweep", "run", "cpu-small", "--out", str(out), "--train-fn", "sweeps.fake:fake_train"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out /proc/no-such-sweep-dir: cannot")
