"""TensorBoard event files (read back with TensorBoard's own reader), extra trackers, status ETA."""

from __future__ import annotations

import importlib.machinery
import json
import re
import sys
import types
from pathlib import Path

import pytest
from conftest import FAST_RUN
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from scaling import config, tracking
from scaling.errors import UserError
from scaling.train import train
from sweeps.status import fmt_duration, progress_of


def _scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_tracker_writes_scalars_and_evals(tmp_path: Path) -> None:
    t = tracking.Tracker(tmp_path, run_name="r", run_id="abc", config={}, backends=())
    t.log({"step": 10, "train_loss": 2.5, "lr": 1e-3, "grad_norm": 0.75, "tokens_per_s": 900.0})
    t.log({"step": 20, "train_loss": 2.25, "val_loss": 2.375, "mfu": None, "val_bpb": 3.4})
    evals = {"scores": {"copy": {"0": {"exact_match": 0.5, "token_acc": 0.625, "n_items": 8}}}}
    t.log_evals(20, evals)
    t.close()
    s = _scalars(tmp_path)
    assert s["loss/train"] == {10: 2.5, 20: 2.25}
    assert s["loss/val"] == {20: 2.375} and s["loss/val_bpb"] == {20: pytest.approx(3.4)}
    assert s["opt/lr"] == {10: pytest.approx(1e-3)} and s["opt/grad_norm"] == {10: 0.75}
    assert s["perf/tokens_per_s"] == {10: 900.0} and "perf/mfu" not in s  # None is skipped
    assert s["evals/copy/0shot/exact_match"] == {20: 0.5}
    assert s["evals/copy/0shot/token_acc"] == {20: 0.625}


def test_disabled_tracker_writes_nothing(tmp_path: Path) -> None:
    """What a process other than 0 of a multi-process run gets."""
    t = tracking.Tracker(tmp_path / "tb", run_name="r", run_id="x", config={}, enabled=False)
    t.log({"step": 1, "train_loss": 1.0})
    t.close()
    assert not (tmp_path / "tb").exists()


def test_train_writes_events_matching_metrics(tmp_path: Path) -> None:
    cfg = config.load(
        "tiny", [*FAST_RUN, "train.steps=8", "train.eval_every=4", "train.log_every=2"]
    )
    train(cfg, tmp_path / "run", progress=False, tb_dir=tmp_path / "tb" / "cell")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    s = _scalars(tmp_path / "tb" / "cell")
    assert s["loss/train"] == {r["step"]: pytest.approx(r["train_loss"], rel=1e-6) for r in lines}
    assert s["loss/val"] == {
        r["step"]: pytest.approx(r["val_loss"]) for r in lines if "val_loss" in r
    }
    assert sorted(s["loss/val"]) == [4, 8]
    assert set(s) >= {"opt/lr", "opt/grad_norm", "perf/tokens_per_s"}


def test_unknown_or_missing_tracker_is_one_clear_error(monkeypatch) -> None:
    with pytest.raises(UserError, match="unknown tracker 'neptune'"):
        tracking.requested_backends("wandb,neptune")
    assert tracking.requested_backends(" WandB , mlflow") == ("wandb", "mlflow")
    monkeypatch.setenv(tracking.ENV, "")
    assert tracking.requested_backends() == ()
    try:
        import wandb  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(UserError, match=r"pip install 'scaling\[wandb\]'"):
            tracking._import("wandb")


def test_status_progress_eta_and_last_loss(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    recs = [
        {"step": s, "train_loss": 3.0 - s / 100, "elapsed_s": 5.0 + s / 10} for s in (10, 20, 40)
    ]
    recs[1]["val_loss"] = 2.9
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"step": 5')  # cut last line
    p = progress_of(path, planned_steps=100)
    assert p["step"] == 40 and p["train_loss"] == pytest.approx(2.6) and p["val_loss"] == 2.9
    assert p["eta_s"] == pytest.approx(60 * 0.1)
    assert progress_of(tmp_path / "none.jsonl", 100)["eta_s"] is None
    assert [fmt_duration(x) for x in (None, 42.4, 185, 7620)] == ["", "42s", "3m05s", "2h07m"]


def test_status_eta_uses_the_resumed_session_only(tmp_path: Path) -> None:
    """elapsed_s counts from each session's start: the rate used to span the resume (session 1
    at step 10, 10 s; session 2 at step 50, 28 s), 0.45 s/step where both ran at 1 s/step."""
    path = tmp_path / "metrics.jsonl"
    recs = [(10, 10.0), (20, 20.0), (30, 8.0), (40, 18.0), (50, 28.0)]  # resumed from 20
    path.write_text("".join(json.dumps({"step": s, "elapsed_s": e}) + "\n" for s, e in recs))
    assert progress_of(path, planned_steps=100)["eta_s"] == pytest.approx(50 * 1.0)


def test_sweep_runs_share_one_tensorboard_dir(tmp_path: Path) -> None:
    """The launcher gives every cell SWEEP/tensorboard/<cell label>, so one viewer shows all."""
    from sweeps import registry as R
    from sweeps.fake import fake_train
    from sweeps.grid import load_grid, plan_grid
    from sweeps.runner import run_cell

    plan = plan_grid(load_grid("cpu-small"))
    R.write_plan(tmp_path, plan)
    seen = []

    def train_fn(cfg, out_dir, *, progress=False, tb_dir=None):
        seen.append(Path(tb_dir))
        return fake_train(cfg, out_dir, progress=progress)

    for cell in plan.cells[:2]:
        assert run_cell(tmp_path, plan.name, cell.summary(), train_fn=train_fn) == "done"
    labels = [c.label.replace("/", "-") for c in plan.cells[:2]]
    assert seen == [tmp_path / "tensorboard" / lab for lab in labels]


def test_wandb_extra_logs_offline_by_default(tmp_path: Path, monkeypatch) -> None:
    """Runs where `pip install 'scaling[wandb]'` was done; nothing leaves the machine."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "unset")  # so that teardown restores the original state
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_SILENT", "true")
    t = tracking.Tracker(tmp_path, run_name="r", run_id="wb1", config={"x": 1}, backends=("wandb",))
    t.log({"step": 10, "train_loss": 2.5, "lr": 1e-3})
    t.close()
    import os

    assert os.environ["WANDB_MODE"] == "offline"
    runs = list((tmp_path / "wandb").glob("offline-run-*-wb1/run-wb1.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0
    assert _scalars(tmp_path)["loss/train"] == {10: 2.5}  # TensorBoard is written as well


# ----------------------------------------------------------------------------- fake W&B, MLflow


class _FakeMLflow(types.ModuleType):
    """The part of mlflow's module API that `tracking._MLflow` uses, over one in-memory store
    that outlives a session (as the mlruns directory does)."""

    def __init__(self) -> None:
        super().__init__("mlflow")
        self.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)  # find_spec finds it
        self.runs: dict[str, dict] = {}
        self.active: str | None = None

    def set_tracking_uri(self, uri: str) -> None:
        self.uri = uri

    def search_runs(self, *, filter_string, max_results, order_by, output_format):
        key, value = re.fullmatch(r"tags\.(\w+) = '(\w+)'", filter_string).groups()
        assert output_format == "list" and max_results == 1
        hits = [r for r in self.runs.values() if r["tags"].get(key) == value]
        return [types.SimpleNamespace(info=types.SimpleNamespace(run_id=r["id"])) for r in hits]

    def start_run(self, run_id=None, run_name=None, tags=None):
        assert self.active is None, "one active run at a time"
        if run_id is None:
            run_id = f"mlflow-{len(self.runs)}"
            self.runs[run_id] = {"id": run_id, "tags": dict(tags or {}), "metrics": []}
        self.runs[run_id]["status"] = "RUNNING"
        self.active = run_id
        return self.runs[run_id]

    def log_params(self, params: dict) -> None:
        self.runs[self.active]["params"] = params

    def log_metrics(self, vals: dict, step: int) -> None:
        self.runs[self.active]["metrics"].append((step, vals["loss/train"]))

    def end_run(self, status: str = "FINISHED") -> None:
        self.runs[self.active]["status"] = status
        self.active = None


def _fake_wandb(finished: list[int | None]) -> types.ModuleType:
    """wandb.init() -> a run whose finish(exit_code) is recorded in `finished`."""
    wandb = types.ModuleType("wandb")
    wandb.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    wandb.init = lambda **kw: types.SimpleNamespace(
        log=lambda vals, step: None, finish=lambda exit_code=None: finished.append(exit_code)
    )
    return wandb


def test_mlflow_resumes_the_run_it_started(tmp_path: Path, monkeypatch) -> None:
    """Each session used to start a new MLflow run: a resumed run was split in two."""
    fake = _FakeMLflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    for run_id, step in (("abc", 10), ("abc", 20), ("other", 10)):
        t = tracking.Tracker(tmp_path, run_name="r", run_id=run_id, config={}, backends=("mlflow",))
        t.log({"step": step, "train_loss": step / 10})
        t.close()
    assert len(fake.runs) == 2
    first, second = fake.runs.values()
    assert first["tags"] == {tracking.MLFLOW_TAG: "abc"} and first["metrics"] == [(10, 1), (20, 2)]
    assert second["metrics"] == [(10, 1)] and first["status"] == second["status"] == "FINISHED"
    assert first["params"] == {"run_id": "abc", "name": "r"}


def _both_fakes(monkeypatch) -> tuple[_FakeMLflow, list]:
    """W&B and MLflow stand-ins, both tracking (SCALING_TRACK): the MLflow module and W&B's
    list of finish() exit codes."""
    fake, finished = _FakeMLflow(), []
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.setitem(sys.modules, "wandb", _fake_wandb(finished))
    monkeypatch.setenv(tracking.ENV, "wandb,mlflow")
    return fake, finished


def test_trackers_close_when_the_run_is_interrupted_or_fails(tmp_path: Path, monkeypatch) -> None:
    """A signal or an error in the step loop flushed the trackers but never closed them: W&B's
    finish() and MLflow's end_run() were skipped. Now they record the run killed / failed, and
    the resumed session finishes the same MLflow run."""
    import signal

    from scaling import signals

    fake, finished = _both_fakes(monkeypatch)
    cfg = config.load("tiny", [*FAST_RUN, "train.steps=8", "train.steps_per_dispatch=1"])
    polls = iter(range(10**6))
    with monkeypatch.context() as m:
        m.setattr(signals, "requested", lambda: signal.SIGTERM if next(polls) == 3 else None)
        with pytest.raises(signals.Interrupted):
            train(cfg, tmp_path / "run", progress=False)
    (run,) = fake.runs.values()
    assert run["status"] == "KILLED" and finished == [130] and fake.active is None

    def fail() -> bool:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        train(cfg, tmp_path / "run", progress=False, should_stop=fail)
    assert run["status"] == "FAILED" and finished == [130, 1] and fake.active is None
    assert train(cfg, tmp_path / "run", progress=False)["status"] == "done"
    assert list(fake.runs.values()) == [run] and run["status"] == "FINISHED"
    assert finished == [130, 1, 0] and [s for s, _ in run["metrics"]][-1] == 8


def test_a_tracker_that_fails_to_close_never_costs_a_finished_run_its_result(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """A backend whose close raised at the end of a finished run (W&B's finish, here) used to
    propagate before result.json was written: a traceback, the result lost, and the sweep
    counted the run unfinished. A TensorBoard flush that raised also skipped closing Orbax.
    Now result.json is written first and each tracker failure is one warning line."""
    from scaling import results

    def finish(exit_code=None):
        raise RuntimeError("wandb: connection lost\nmore detail")

    wandb = _fake_wandb([])
    wandb.init = lambda **kw: types.SimpleNamespace(log=lambda vals, step: None, finish=finish)
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setenv(tracking.ENV, "wandb")

    def flush(self) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tracking.Tracker, "flush", flush)
    cfg = config.load("tiny", [*FAST_RUN, "train.steps=8"])
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "done" and result["step"] == 8
    stored = results.finished_result(tmp_path / "run", result["run_id"])
    assert stored is not None and stored["final_val_loss"] == result["final_val_loss"]
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "warning: an experiment tracker failed to flush (OSError: " in err
    closing = "warning: an experiment tracker failed to close (RuntimeError: wandb: connection"
    assert f"{closing} lost)\n" in err  # one line: the first line of the error's text
    assert list((tmp_path / "run" / "checkpoints").iterdir())  # Orbax closed, the save is there


def test_a_failed_final_save_closes_the_trackers_as_failed(tmp_path: Path, monkeypatch) -> None:
    """Orbax raising while the run's last saves were waited on (at the end of the loop) left
    the trackers open: MLflow's run stayed active, so in a sweep (which goes on past a failed
    cell) the next cell's start_run failed as well. Now they are closed as failed."""
    from scaling.checkpoint import Checkpointer

    fake = _FakeMLflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.setenv(tracking.ENV, "mlflow")
    cfg = config.load("tiny", [*FAST_RUN, "train.steps=4"])

    def wait(self) -> None:
        raise RuntimeError("orbax: commit failed")

    with monkeypatch.context() as m:
        m.setattr(Checkpointer, "wait", wait)
        with pytest.raises(RuntimeError, match="commit failed"):
            train(cfg, tmp_path / "run", progress=False)
    (run,) = fake.runs.values()
    assert run["status"] == "FAILED" and fake.active is None
    assert train(cfg, tmp_path / "run", progress=False)["status"] == "done"  # the next cell
    assert run["status"] == "FINISHED"


def test_a_session_whose_lease_was_taken_over_is_not_closed_finished(
    tmp_path: Path, monkeypatch
) -> None:
    """A sweep session that stops because another launcher took its lease over (it stalled
    past --lease-ttl) closed W&B and MLflow as finished while the other launcher went on
    logging into the same run. Now it closes them as killed; the run's end finishes them."""
    fake, finished = _both_fakes(monkeypatch)
    cfg = config.load("tiny", [*FAST_RUN, "train.steps=8", "train.steps_per_dispatch=1"])
    polls = iter(range(10**6))
    lost = train(cfg, tmp_path / "run", progress=False, should_stop=lambda: next(polls) >= 3)
    assert lost["status"] == "stopped"
    (run,) = fake.runs.values()
    assert run["status"] == "KILLED" and finished == [130] and fake.active is None
    assert train(cfg, tmp_path / "run", progress=False)["status"] == "done"  # the other one
    assert list(fake.runs.values()) == [run] and run["status"] == "FINISHED"
    assert finished == [130, 0]
