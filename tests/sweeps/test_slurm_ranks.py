"""The ranks of a multi-task SLURM cell (no cluster needed: the rank is mocked, as in a task
of `nodes * tasks_per_node > 1`): only rank 0 decides whether the cell trains, and the worker
ranks follow its decision before they would initialise JAX."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scaling.errors import UserError
from sweeps import slurm
from sweeps.fake import fake_train
from sweeps.grid import load_grid, plan_grid
from sweeps.lease import Lease


@pytest.fixture
def cell(monkeypatch, tmp_path: Path) -> tuple[dict[str, Any], list[int]]:
    """One planned cell; a recording train function (calls: the ranks that trained)."""
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    calls: list[int] = []

    def train(cfg, out, *, progress: bool = False) -> dict[str, Any]:
        calls.append(slurm._rank())
        return fake_train(cfg, out, progress=progress)

    monkeypatch.setattr(slurm, "resolve_train_fn", lambda spec: train)
    return plan_grid(load_grid("cpu-small", [])).cells[0].summary(), calls


def _as_rank(monkeypatch, rank: int) -> None:
    monkeypatch.setattr(slurm, "_rank", lambda: rank)


def test_workers_do_not_train_a_cell_leased_elsewhere(tmp_path, monkeypatch, cell) -> None:
    summary, calls = cell
    held = Lease(tmp_path / "leases", summary["run_id"], "slurm:999_0", 120)
    assert held.acquire()
    try:
        for rank in (0, 1, 2):
            _as_rank(monkeypatch, rank)
            out = slurm.CellJob()._run(str(tmp_path), "s", summary, "x:y", 120.0)
            assert out == ("busy" if rank == 0 else "worker: busy")
    finally:
        held.release()
    assert calls == []  # nobody trained: the workers no longer block in jax init


def test_workers_train_when_rank_0_does_and_skip_a_finished_cell(
    tmp_path, monkeypatch, cell
) -> None:
    summary, calls = cell
    for rank in (0, 1):
        _as_rank(monkeypatch, rank)
        assert slurm.CellJob()._run(str(tmp_path), "s", summary, "x:y", 120.0) == (
            "done" if rank == 0 else "worker"
        )
    assert calls == [0, 1]
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # a resubmission of a recorded cell
    for rank in (0, 1):
        _as_rank(monkeypatch, rank)
        out = slurm.CellJob()._run(str(tmp_path), "s", summary, "x:y", 120.0)
        assert out == ("skipped" if rank == 0 else "worker: skipped")
    assert calls == [0, 1]


def test_a_worker_without_a_decision_gives_up_with_a_clear_error(
    tmp_path, monkeypatch, cell
) -> None:
    summary, calls = cell
    monkeypatch.setattr(slurm, "DECISION_WAIT_S", 0.2)
    _as_rank(monkeypatch, 1)
    with pytest.raises(UserError, match="rank 0 did not say within 0.2 s"):
        slurm.CellJob()._run(str(tmp_path), "s", summary, "x:y", 0.05)
    assert calls == []
