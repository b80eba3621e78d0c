"""result.json's wall_time_s over a run's sessions (scaling.wallclock): the seconds a session
spent after its last checkpoint (steps a kill threw away, a result that failed to save) count
when a rerun finishes the run; --restart counts from zero again."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import FAST_RUN

from scaling import config, loop, results, wallclock
from scaling.errors import DiskFullError
from scaling.train import train

SHORT = ["train.steps=12", "train.checkpoint_every=4", "train.eval_every=4", "train.log_every=2"]
SLEEP = 1.0


def tiny(*overrides: str) -> config.RunConfig:
    return config.load("tiny", [*FAST_RUN, *SHORT, *overrides])


def _carried(first_end: float, second: tuple[float, float], r: dict) -> tuple[float, float]:
    """(the seconds result.json carried over from the first session, that session's length
    measured from the run's start to its return)."""
    t1, t2 = second
    return r["wall_time_s"] - (t2 - t1), first_end - r["started_at"]


def test_a_kill_after_the_last_checkpoint_still_counts_its_seconds(tmp_path, monkeypatch) -> None:
    """Killed (stop_after) two slow steps after the checkpoint at 4: result.json of the resumed
    run used to carry only the wall time up to that checkpoint, missing those seconds."""
    monkeypatch.setattr(wallclock, "BEAT_S", 0.0)  # every chunk beats (a kill: no final beat)
    real = loop.Loop._dispatch

    def slow(self, state, s, end):
        if s >= 4:
            time.sleep(SLEEP)
        return real(self, state, s, end)

    cfg = tiny("train.steps_per_dispatch=1")
    with monkeypatch.context() as m:
        m.setattr(loop.Loop, "_dispatch", slow)
        assert train(cfg, tmp_path, progress=False, stop_after=6)["status"] == "stopped"
    t1 = time.time()
    r = train(cfg, tmp_path, progress=False)
    t2 = time.time()
    assert r["status"] == "done" and r["resumed_from_step"] == 4
    carried, first = _carried(t1, (t1, t2), r)
    assert carried >= first - SLEEP  # the 2 s slept after the checkpoint are in
    assert r["wall_time_s"] <= t2 - r["started_at"]  # and nothing counts twice
    stored = json.loads((tmp_path / wallclock.FILE).read_text())
    assert stored["run_id"] == r["run_id"] and stored["started_at"] == r["started_at"]


def test_a_result_that_failed_to_save_counts_its_seconds(tmp_path, monkeypatch) -> None:
    """The session trained to the end, then its result.json failed (a full disk, after a slow
    second): the rerun, which trains no steps, counts that session to its end."""
    cfg = tiny()

    def full(path, result):
        time.sleep(SLEEP)
        raise DiskFullError(path)

    with monkeypatch.context() as m:
        m.setattr(results, "write_result", full)
        with pytest.raises(DiskFullError):
            train(cfg, tmp_path, progress=False)
    t1 = time.time()
    r = train(cfg, tmp_path, progress=False)
    t2 = time.time()
    assert r["resumed_from_step"] == 12
    carried, first = _carried(t1, (t1, t2), r)
    assert carried >= first - SLEEP / 2
    assert r["wall_time_s"] <= t2 - r["started_at"]


def test_restart_counts_from_zero_and_a_damaged_file_is_ignored(tmp_path: Path) -> None:
    cfg = tiny()
    train(cfg, tmp_path, progress=False, stop_after=6)
    old = json.loads((tmp_path / wallclock.FILE).read_text())
    t0 = time.time()
    r = train(cfg, tmp_path, progress=False, restart=True)
    assert r["resumed_from_step"] is None and r["started_at"] >= t0 > old["started_at"]
    assert r["wall_time_s"] <= time.time() - t0
    (tmp_path / "result.json").unlink()
    (tmp_path / wallclock.FILE).write_text("{not json")
    again = train(cfg, tmp_path, progress=False)  # from the checkpoint at 12 and its meta
    assert again["resumed_from_step"] == 12 and again["started_at"] == r["started_at"]
    assert again["wall_time_s"] >= r["wall_time_s"] - 1.0
