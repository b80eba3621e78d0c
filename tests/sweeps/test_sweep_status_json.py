"""`scaling sweep status DIR --json`: machine-readable (every state's count, 0 included; rows
as numbers), while the text table stays as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import GRID6

from scaling.cli import main
from sweeps import registry as R
from sweeps.fake import fake_train
from sweeps.grid import load_grid, plan_grid
from sweeps.lease import Lease
from sweeps.runner import run_local
from sweeps.status import STATES


def _sweep(tmp_path: Path):
    """Six cells: two done, one running (a live lease, metrics to step 20), one partial
    (checkpoint at step 10), two pending."""
    grid = tmp_path / "six.toml"
    grid.write_text(GRID6)
    plan, root = plan_grid(load_grid(grid)), tmp_path / "sweep"
    assert run_local(root, plan, train_fn=fake_train, progress=False, max_runs=2)["done"] == 2
    R.write_plan(root, plan)
    left = [c for c in plan.cells if c.run_id not in R.finished_ids(root)]
    for c in left[:2]:
        out = R.run_dir(root, c.run_id)
        out.mkdir(parents=True, exist_ok=True)
        recs = [dict(step=s, train_loss=3.0 - s / 100, elapsed_s=s / 10) for s in (10, 20)]
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (R.run_dir(root, left[1].run_id) / "checkpoints" / "10").mkdir(parents=True)
    lease = Lease(root / "leases", left[0].run_id, "launcher-a", ttl=60)
    assert lease.acquire()
    return plan, root, left


def test_status_json_has_every_count_and_numbers(tmp_path: Path, capsys) -> None:
    plan, root, left = _sweep(tmp_path)
    assert main(["sweep", "status", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"] == dict(done=2, diverged=0, running=1, failed=0, pending=3)
    assert list(data["counts"]) == list(STATES)
    rows = {r["run_id"]: r for r in data["rows"]}
    running, partial = rows[left[0].run_id], rows[left[1].run_id]
    assert running["state"] == "running" and running["step"] == 20
    assert running["steps"] == left[0].steps
    assert running["progress"] == 20 / left[0].steps
    assert running["train_loss"] == 2.8 and running["val_loss"] is None
    assert running["eta_s"] == pytest.approx((left[0].steps - 20) * 0.1)
    assert running["C_planned"] == left[0].c_exact
    assert partial["resume_step"] == 10 and partial["eta_s"] is None
    done = [r for r in data["rows"] if r["state"] == "done"]
    assert len(done) == 2
    for r in done:
        assert r["progress"] == 1.0 and r["C_spent"] == r["C_planned"]
        assert isinstance(r["val_loss"], float) and r["resume_step"] is None
    assert all(not k.startswith("_") for r in data["rows"] for k in r)
    assert data["spent"] == sum(r["C_spent"] for r in data["rows"])
    assert isinstance(data["eta_s"], float) and data["eta_at_once"] == 1


def test_status_text_table_keeps_its_formatted_columns(tmp_path: Path, capsys) -> None:
    plan, root, left = _sweep(tmp_path)
    assert main(["sweep", "status", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"sweep {plan.name!r}: 2 done, 0 diverged, 1 running, 0 failed, ")
    line = next(x for x in out.splitlines() if x.startswith(left[0].run_id))
    steps = left[0].steps
    assert f"20/{steps} ({100 * 20 / steps:.0f}%)" in line and "train 2.8000" in line
    assert "owner launcher-a" in line and f"{left[0].c_exact:.3g}" in line
    partial = next(x for x in out.splitlines() if x.startswith(left[1].run_id))
    assert "partial, resumes at step 10" in partial


def test_status_with_finished_runs_that_name_no_device(tmp_path: Path, capsys) -> None:
    """Finished rows with "device_kind": null (a train_fn that records none) made the time left
    a StopIteration traceback: the model was looked up for the kind "None", then no row matched
    it. They now fall back to the finished runs' FLOP rate."""
    plan, root, left = _sweep(tmp_path)
    path = root / "results.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    path.write_text("".join(json.dumps(r | {"device_kind": None}) + "\n" for r in rows))
    assert main(["sweep", "status", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["done"] == 2 and isinstance(data["eta_s"], float)
    assert main(["sweep", "status", str(root)]) == 0
    assert "left by the FLOP rate of the 2 finished run(s)" in capsys.readouterr().out


def test_a_failed_cell_trained_on_retry_but_not_recorded_is_not_failed(
    tmp_path: Path, capsys
) -> None:
    """A cell that failed once, then trained on a retry whose launcher died before recording
    it (result.json written, failed.json not yet removed): status says the next run records it
    without training, and counts nothing of it as left to train (no time left)."""
    grid = tmp_path / "six.toml"
    grid.write_text(GRID6)
    plan, root = plan_grid(load_grid(grid)), tmp_path / "sweep"
    assert run_local(root, plan, train_fn=fake_train, progress=False)["done"] == 6
    R.write_plan(root, plan)
    lines = (root / "results.jsonl").read_text().splitlines()
    (root / "results.jsonl").write_text("\n".join(lines[1:]) + "\n")  # the first one unrecorded
    lost = json.loads(lines[0])["run_id"]
    R.write_failure(root, lost, "RuntimeError: the first attempt")
    assert main(["sweep", "status", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["counts"]["failed"] == 0 and info["counts"]["pending"] == 1
    row = next(r for r in info["rows"] if r["run_id"] == lost)
    assert row["state"] == "pending" and row["note"].startswith("trained, not yet recorded")
    assert row["resume_step"] is None and info["eta_s"] is None
