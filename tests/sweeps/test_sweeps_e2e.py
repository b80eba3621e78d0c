"""A real (tiny) sweep through scaling.train on python_source/small, 8 fake CPU devices."""

from __future__ import annotations

import json
from pathlib import Path

from scaling.cli import main
from sweeps import registry as R
from sweeps.grid import load_grid, plan_grid
from sweeps.status import collect

GRID = """name = "e2e"
kind = "nxd"
[nxd]
tokens = [8192]
[shapes]
n_min = 3e3
n_max = 9e3
count = 2
[hparams]
batch_size = 8
batch_multiple = 8
min_steps = 1
[base.model]
seq_len = 32
[base.data]
dataset = "python_source/small"
val_tokens = 2048
task_mix = 0.0
[base.train]
log_every = 4
[base.eval]
enabled = false
[[overrides]]
where = {shape = "d16-l1-h2"}
set = {"train.lr" = 1e4, "train.grad_clip" = 1e9, "train.warmup_steps" = 0}
"""


def test_real_engine_sweep_records_divergence_and_is_idempotent(tmp_path: Path) -> None:
    grid, root = tmp_path / "e2e.toml", tmp_path / "sweep"
    grid.write_text(GRID)
    args = ["sweep", "run", str(grid), "--out", str(root), "--no-progress"]
    assert main(args) == 0
    plan = plan_grid(load_grid(grid))
    records = {r["cell"]["shape"]: r for r in R.read_records(root)}
    assert sorted(records) == ["d16-l1-h2", "d8-l1-h1"]
    ok, bad = records["d8-l1-h1"], records["d16-l1-h2"]
    assert ok["status"] == "done" and 1.0 < ok["final_val_loss"] < 6.0
    assert ok["steps_done"] == plan.cells[0].steps == 32
    assert (
        ok["N_total"]
        == json.loads((root / "runs" / ok["run_id"] / "result.json").read_text())["N_total"]
    )
    assert (root / ok["curve"]).is_file() and ok["device_kind"]
    assert bad["status"] == "diverged" and bad["diverged_at_step"] is not None
    before = (root / "results.jsonl").read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in (root / "runs").rglob("result.json")}
    assert main(args) == 0  # relaunch: nothing retrained, nothing appended
    assert (root / "results.jsonl").read_bytes() == before
    assert mtimes == {p: p.stat().st_mtime_ns for p in (root / "runs").rglob("result.json")}
    assert collect(root)["counts"] == {"done": 1, "diverged": 1}
