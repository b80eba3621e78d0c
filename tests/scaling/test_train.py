"""scaling.train end to end on the real `python_source/small` corpus (8 fake CPU devices).

Every fast test uses the same model and batch shape, so the compiled step is built once per
process (the module-level engine cache) and each extra run costs only its steps.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_RUN

from scaling import config, engine, optim
from scaling.errors import UserError
from scaling.train import train

BASE = FAST_RUN
SHORT = ["train.steps=12", "train.checkpoint_every=4", "train.eval_every=4", "train.log_every=2"]


def tiny(*overrides: str) -> config.RunConfig:
    return config.load("tiny", [*BASE, *overrides])


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One uninterrupted 12-step run, the yardstick for the resume tests."""
    out = tmp_path_factory.mktemp("ref")
    return out, train(tiny(*SHORT), out, progress=False)


# ----------------------------------------------------------------------------- schedule


def test_schedule_warmup_then_cosine_to_min() -> None:
    t = config.TrainConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [optim.lr_at(t, s) for s in range(t.steps)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10], strict=False))  # warmup rises
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))  # decay falls
    assert lrs[-1] == pytest.approx(1e-4)  # exactly min at the run's last update
    mid = 10 + (100 - 1 - 10) / 2
    assert optim.lr_at(t, int(mid)) == pytest.approx(1e-4 + 0.9e-3 * 0.5, rel=0.03)


def test_auto_warmup_and_decay_mask() -> None:
    assert optim.warmup_steps(config.TrainConfig(steps=300)) == 30
    assert optim.warmup_steps(config.TrainConfig(steps=10**6)) == 1000
    assert optim.warmup_steps(config.TrainConfig(steps=5)) == 0
    assert optim.lr_at(config.TrainConfig(steps=5, lr=1.0), 0) == 1.0
    mask = optim.decay_mask({"w": np.zeros((2, 3)), "scale": np.zeros(3), "s": np.zeros(())})
    assert mask == {"w": True, "scale": False, "s": False}


# ----------------------------------------------------------------------------- runs


def test_run_outputs(reference: tuple[Path, dict]) -> None:
    out, r = reference
    assert r["status"] == "done" and r["step"] == 12 and r["diverged_at_step"] is None
    assert r["D"] == 12 * 16 * 32
    assert r["C_exact"] == pytest.approx(r["flops_per_token"] * r["D"])
    assert r["C_6ND"] == pytest.approx(6 * r["N_total"] * r["D"])
    assert r["N_total"] == r["N_embed"] + r["N_nonembed"]
    # validation compute apart from the budget: 3 validations x 4 batches of 16 x 32 tokens
    # ((2048 - 1) // 32 = 63 windows), forward only: a third of the training FLOPs per token
    assert r["flops_val"] == pytest.approx(3 * 4 * 16 * 32 * r["flops_per_token"] / 3)
    assert "causal attention halved" in r["flops_convention"]
    assert (
        r["mfu"] is None
        and r["n_devices"] == 8
        and r["mesh"] == {"data": 8, "fsdp": 1, "tensor": 1}
    )
    assert r["final_val_loss"] < math.log(259) and r["best_val_loss"] <= r["final_val_loss"] + 1e-9
    assert r["evals"] is None and r["data_info"]["dataset"] == "python_source/small"
    assert r["epochs"] == pytest.approx(r["D"] / r["data_info"]["n_train_tokens"])
    stored = json.loads((out / "result.json").read_text())
    assert stored["run_id"] == r["run_id"] == config.config_hash(tiny(*SHORT))
    assert config.load(out / "config.toml") == tiny(*SHORT)
    lines = _metrics(out)
    assert [m["step"] for m in lines] == [2, 4, 6, 8, 10, 12]
    assert all(
        {"step", "tokens", "flops", "train_loss", "lr", "tokens_per_s", "mfu"} <= set(m)
        for m in lines
    )
    assert [m["step"] for m in lines if "val_loss" in m] == [4, 8, 12]
    assert lines[-1]["val_loss"] == r["final_val_loss"]
    assert lines[-1]["lr"] == pytest.approx(optim.lr_at(tiny(*SHORT).train, 11))
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == [
        "12",
        "4",
        "8",
    ]


def test_finished_run_is_not_retrained(reference: tuple[Path, dict]) -> None:
    out, r = reference
    before = (out / "metrics.jsonl").read_text()
    again = train(tiny(*SHORT), out, progress=False)
    assert again == json.loads((out / "result.json").read_text())
    assert again["final_val_loss"] == r["final_val_loss"]
    assert (out / "metrics.jsonl").read_text() == before
    with pytest.raises(UserError, match="different run"):
        train(tiny(*SHORT, "train.lr=1e-3"), out, progress=False)


def test_kill_and_resume_is_bitwise_identical(reference: tuple[Path, dict], tmp_path: Path) -> None:
    ref_out, ref = reference
    cfg = tiny(*SHORT)
    part = train(cfg, tmp_path, progress=False, stop_after=6)  # "killed" after update 6
    assert part["status"] == "stopped" and not (tmp_path / "result.json").exists()
    r = train(cfg, tmp_path, progress=False)  # resumes from checkpoint 4, replays 5 and 6
    assert r["resumed_from_step"] == 4 and r["checkpoint_warnings"] == []
    assert r["final_val_loss"] == ref["final_val_loss"]  # bitwise, not approx
    assert r["best_val_loss"] == ref["best_val_loss"]
    strip = [
        {k: v for k, v in m.items() if k not in ("tokens_per_s", "elapsed_s", "mfu")}
        for m in _metrics(tmp_path)
    ]
    want = [
        {k: v for k, v in m.items() if k not in ("tokens_per_s", "elapsed_s", "mfu")}
        for m in _metrics(ref_out)
    ]
    assert strip == want  # same losses, lrs, grad norms at every logged step; no duplicates


def test_corrupted_latest_checkpoint_falls_back(
    reference: tuple[Path, dict], tmp_path: Path
) -> None:
    _, ref = reference
    cfg = tiny(*SHORT)
    train(cfg, tmp_path, progress=False, stop_after=10)  # checkpoints at 4 and 8
    for p in (tmp_path / "checkpoints" / "8").rglob("*"):
        if p.is_file():
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    r = train(cfg, tmp_path, progress=False)
    assert r["resumed_from_step"] == 4
    assert len(r["checkpoint_warnings"]) == 1 and "step 8" in r["checkpoint_warnings"][0]
    assert any("warnings" in m for m in _metrics(tmp_path))  # recorded in the metrics too
    assert r["final_val_loss"] == ref["final_val_loss"]


def test_unreadable_checkpoints_never_restart_silently(tmp_path: Path) -> None:
    cfg = tiny(*SHORT)
    train(cfg, tmp_path, progress=False, stop_after=5)  # one checkpoint, at 4
    for p in (tmp_path / "checkpoints" / "4").rglob("*"):
        if p.is_file():
            p.write_bytes(b"")
    for _ in range(2):  # regression (issue 12): the rerun refused too, not trained from 0
        with pytest.raises(UserError, match="refusing to restart from step 0 silently"):
            train(cfg, tmp_path, progress=False)
    assert (tmp_path / "checkpoints" / "4").is_dir()  # the evidence stays where it was
    r = train(cfg, tmp_path, progress=False, restart=True)  # the explicit way out
    assert r["status"] == "done" and r["resumed_from_step"] is None
    assert (tmp_path / "checkpoints" / "restarted-4").is_dir()


def test_signal_saves_a_checkpoint_at_the_interrupt_step_and_resumes_bitwise(
    reference: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM after update 6 (periodic checkpoints at 4, 8): the run saves step 6, raises
    Interrupted (exit 143) and the resume starts at 6, ending bitwise equal to the reference."""
    import signal

    from scaling import signals

    _, ref = reference
    polls = iter(range(10**6))  # one poll per dispatch: one update per dispatch here
    monkeypatch.setattr(signals, "requested", lambda: signal.SIGTERM if next(polls) == 6 else None)
    with pytest.raises(signals.Interrupted, match="step 6") as e:
        train(tiny(*SHORT, "train.steps_per_dispatch=1"), tmp_path, progress=False)
    assert e.value.exit_code == 143 and "checkpoint saved at step 6" in e.value.detail
    monkeypatch.undo()
    r = train(tiny(*SHORT), tmp_path, progress=False)
    assert r["resumed_from_step"] == 6
    assert r["final_val_loss"] == ref["final_val_loss"]  # bitwise


def test_an_interrupt_between_metrics_lines_resumes_the_same_curve(
    reference: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM after update 5 (lines every 2 steps): the checkpoint at 5 carries step 5's loss,
    so the resumed line at step 6 still averages steps 5 and 6 (it used to hold step 6 alone)."""
    import signal

    from scaling import signals

    ref_out, _ = reference
    polls = iter(range(10**6))
    monkeypatch.setattr(signals, "requested", lambda: signal.SIGTERM if next(polls) == 5 else None)
    with pytest.raises(signals.Interrupted, match="step 5"):
        train(tiny(*SHORT, "train.steps_per_dispatch=1"), tmp_path, progress=False)
    monkeypatch.undo()
    assert train(tiny(*SHORT), tmp_path, progress=False)["resumed_from_step"] == 5
    assert _losses(tmp_path) == _losses(ref_out)  # every train_loss bitwise, no duplicates


def test_a_signal_during_the_last_chunk_stops_before_the_final_evals(
    reference: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal landing while the last chunk ran was never read (signals are polled between
    chunks): the run went on to its final evals and exited 0. It now stops there with the
    checkpoint of the last step, and the resume only evaluates, bitwise equal to the reference."""
    import signal

    from scaling import signals

    _, ref = reference
    polls = iter(range(10**6))  # 12 one-update dispatches poll 12 times; the 13th is the end
    monkeypatch.setattr(signals, "requested", lambda: signal.SIGINT if next(polls) >= 12 else None)
    with pytest.raises(signals.Interrupted, match="step 12") as e:
        train(tiny(*SHORT, "train.steps_per_dispatch=1"), tmp_path, progress=False)
    assert e.value.exit_code == 130 and not (tmp_path / "result.json").exists()
    monkeypatch.undo()
    r = train(tiny(*SHORT), tmp_path, progress=False)
    assert r["resumed_from_step"] == 12 and r["final_val_loss"] == ref["final_val_loss"]


def test_a_signal_while_the_session_closes_leaves_the_run_unfinished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal that landed while the loop closed its logs (or Orbax waited for the last save)
    was dropped: the final evals ran and the command exited 0. It now stops before them."""
    import signal

    from scaling import signals
    from scaling.loop import Loop

    close = Loop.close

    def close_then_signal(self: Loop) -> None:
        close(self)
        signals._received.append(signal.SIGINT)  # as the handler records one inside graceful()

    monkeypatch.setattr(Loop, "close", close_then_signal)
    try:
        with pytest.raises(signals.Interrupted) as e:
            train(tiny(*SHORT), tmp_path, progress=False)
    finally:
        signals.reset()
    assert e.value.exit_code == 130 and not (tmp_path / "result.json").exists()
    monkeypatch.undo()
    assert train(tiny(*SHORT), tmp_path, progress=False)["resumed_from_step"] == 12


LONG = ["train.steps=24", "train.checkpoint_every=10", "train.eval_every=10", "train.log_every=1"]
STRIP = ("tokens_per_s", "elapsed_s", "mfu")


def _losses(run: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in STRIP} for m in _metrics(run)]


def test_steps_per_dispatch_is_bitwise_invisible_across_a_mid_chunk_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """24 steps (saves and validations at 10, 20, 24), one update per dispatch versus 8: every
    logged loss, grad norm and val loss is bitwise equal (8 fake devices, data parallel). A
    third run with 3 updates per dispatch is interrupted after its dispatch 10..13, saves at 13
    (mid-way through the n = 8 run's dispatch 10..18), and resumes with n = 8 from there."""
    import signal

    from scaling import signals

    one = train(tiny(*LONG, "train.steps_per_dispatch=1"), tmp_path / "n1", progress=False)
    eight = train(tiny(*LONG, "train.steps_per_dispatch=8"), tmp_path / "n8", progress=False)
    assert one["final_val_loss"] == eight["final_val_loss"]  # bitwise
    assert _losses(tmp_path / "n8") == _losses(tmp_path / "n1")
    lines = _losses(tmp_path / "n1")
    assert [m["step"] for m in lines] == list(range(1, 25))  # log_every = 1
    assert [m["step"] for m in lines if "val_loss" in m] == [10, 20, 24]
    # n = 3 dispatches 0-3, 3-6, 6-9, 9-10, 10-13: SIGTERM arrives before the 6th dispatch
    polls = iter(range(10**6))
    monkeypatch.setattr(signals, "requested", lambda: signal.SIGTERM if next(polls) == 5 else None)
    with pytest.raises(signals.Interrupted, match="step 13"):
        train(tiny(*LONG, "train.steps_per_dispatch=3"), tmp_path / "mid", progress=False)
    monkeypatch.undo()
    r = train(tiny(*LONG, "train.steps_per_dispatch=8"), tmp_path / "mid", progress=False)
    assert r["resumed_from_step"] == 13 and r["final_val_loss"] == one["final_val_loss"]
    assert _losses(tmp_path / "mid") == _losses(tmp_path / "n1")


def test_validation_in_one_call_equals_one_call_per_batch() -> None:
    import jax

    from scaling import sharding
    from scaling.data import open_dataset

    cfg = tiny(*SHORT)
    mesh = sharding.make_mesh(cfg)
    eng = engine.engine(cfg, mesh)
    data = open_dataset(cfg.data, cfg.model.seq_len, progress=False)
    val = [engine.pad_rows(b, 16) for b in data.val_batches(16)]
    assert len(val) == 4 and val[-1].shape == (16, 33)  # 63 windows: the last batch padded
    with jax.set_mesh(mesh):
        state = eng.init(jax.random.key(0))
    each = engine.val_loss(eng, state, [engine.put(b, eng.batch_sharding) for b in val])
    stacked = engine.val_loss(eng, state, engine.put(np.stack(val), eng.chunk_sharding))
    assert stacked == each  # bitwise: the same per-batch sums, added on the host in order


def test_dispatch_chunks_end_at_every_boundary() -> None:
    from scaling.loop import StepsPerCall, chunk_end

    assert chunk_end(0, 8, 24, [10, 10, 0], None) == 8
    assert chunk_end(8, 8, 24, [10, 10, 0], None) == 10  # validation / checkpoint at 10
    assert chunk_end(20, 8, 24, [10, 5, 0], None) == 24  # the last step
    assert chunk_end(10, 8, 24, [10, 10, 6], None) == 12  # few-shot evals every 6
    assert chunk_end(10, 8, 24, [10, 10, 0], 13) == 13  # stop_after
    auto = StepsPerCall(0)
    assert auto.next() == 1
    auto.observe(5.0, 1)  # the first call compiles: not a measurement
    assert auto.next() == 1
    auto.observe(0.01, 1)  # 10 ms a step -> about 0.2 s of steps per call
    assert auto.next() == 20
    auto.observe(0.0, 20)  # (a zero reading is ignored)
    assert auto.next() == 20 and StepsPerCall(5).next() == 5


def test_huge_lr_diverges_and_is_recorded(tmp_path: Path) -> None:
    r = train(tiny(*SHORT, "train.lr=1e9", "train.warmup_steps=0"), tmp_path, progress=False)
    assert r["status"] == "diverged"
    assert isinstance(r["diverged_at_step"], int) and 1 <= r["diverged_at_step"] <= 12
    assert r["final_val_loss"] is None and r["evals"] is None
    stored = json.loads((tmp_path / "result.json").read_text())
    assert stored["status"] == "diverged" and stored["diverged_at_step"] == r["diverged_at_step"]
    assert all(math.isfinite(m["train_loss"]) for m in _metrics(tmp_path))


def test_short_run_learns_well_below_uniform(tmp_path: Path) -> None:
    """200 steps of a 12K-param model on real Python source: far below ln(256) = 5.55 nats."""
    r = train(tiny("train.steps=200", "train.lr=1e-2"), tmp_path, progress=False)
    lines = [m for m in _metrics(tmp_path) if "val_loss" in m]
    assert r["final_val_loss"] < 3.0 < math.log(256)
    assert lines[0]["val_loss"] > lines[-1]["val_loss"] + 0.5


def test_fewer_validations_change_only_the_curve(
    reference: tuple[Path, dict], tmp_path: Path
) -> None:
    """train.validations (with eval_every 0) spaces the validations evenly; the model, its final
    loss and the run id are those of the reference, whose 12 steps validated every 4."""
    short = [o for o in SHORT if not o.startswith("train.eval_every")]
    cfg = tiny(*short, "train.validations=2")
    r = train(cfg, tmp_path, progress=False)
    assert [m["step"] for m in _metrics(tmp_path) if "val_loss" in m] == [6, 12]
    assert r["final_val_loss"] == reference[1]["final_val_loss"]
    assert r["flops_val"] == pytest.approx(reference[1]["flops_val"] * 2 / 3)
    assert config.config_hash(cfg) == config.config_hash(tiny(*short))
    with pytest.raises(UserError, match="train.validations = 0"):
        tiny(*short, "train.validations=0")


def test_compiled_step_is_shared_across_runs(reference: tuple[Path, dict], tmp_path: Path) -> None:
    before = len(engine._CACHE)
    train(tiny(*SHORT, "train.lr=2e-3", "train.seed=1", "train.steps=8"), tmp_path, progress=False)
    assert len(engine._CACHE) == before  # other lr, seed and length: same compiled engine


@pytest.mark.slow
def test_tiny_config_few_hundred_steps(tmp_path: Path) -> None:
    """The `make demo` config as shipped (cpu-s, seq 128, 300 steps, task mix on)."""
    cfg = config.load("tiny", ["data.dataset=python_source/small", "eval.enabled=false"])
    r = train(cfg, tmp_path, progress=False)
    assert r["status"] == "done" and r["final_val_loss"] < 3.0
    shutil.rmtree(tmp_path / "checkpoints")


def test_few_shot_evals_at_the_end_and_periodically(tmp_path: Path) -> None:
    cfg = tiny(*SHORT, "eval.enabled=true", "eval.every=6", "eval.n_items=8", "eval.shots=[0, 1]")
    r = train(cfg, tmp_path, progress=False)
    assert r["evals"] is not None and set(r["evals"]["scores"]) == set(r["evals"]["chance"])
    scores = next(iter(r["evals"]["scores"].values()))
    assert set(scores) == {"0", "1"} and scores["0"]["n_items"] == 8
    periodic = [json.loads(x) for x in (tmp_path / "evals.jsonl").read_text().splitlines()]
    assert [e["step"] for e in periodic] == [6]
    assert set(periodic[0]["evals"]["scores"]) == set(r["evals"]["scores"])


def test_a_resume_with_no_steps_left_keeps_the_runs_throughput(tmp_path: Path, monkeypatch) -> None:
    """result.json failing to save after the final checkpoint (a full disk), then a rerun: the
    resumed session trained no steps, and its result said tokens_per_s null. The checkpoints
    now carry the throughput (and the launchers, the first start and the wall time so far), and
    a session that measures none reports the one its checkpoint carried."""
    from scaling import results
    from scaling.checkpoint import Checkpointer
    from scaling.errors import DiskFullError

    cfg, lost, metas = tiny(*SHORT), [], {}
    real_save = Checkpointer.save

    def save(self, step, state, meta=None):
        metas[step] = meta
        return real_save(self, step, state, meta)

    def full(path, result):
        lost.append(result)
        raise DiskFullError(path)

    monkeypatch.setattr(Checkpointer, "save", save)
    with monkeypatch.context() as m:
        m.setattr(results, "write_result", full)
        with pytest.raises(DiskFullError):
            train(cfg, tmp_path, progress=False, launchers=2)  # two launchers on the machine
    (first,) = lost
    assert first["tokens_per_s"] > 0 and first["launchers"] == 2
    assert metas[12]["tokens_per_s"] > 0 and metas[12]["started_at"] == first["started_at"]
    r = train(cfg, tmp_path, progress=False)  # alone now
    assert r["status"] == "done" and r["resumed_from_step"] == 12
    assert r["tokens_per_s"] == metas[12]["tokens_per_s"]
    assert r["started_at"] == first["started_at"]
    assert r["wall_time_s"] > metas[12]["wall_time_s"]  # the sessions add up
    assert 1 < r["launchers"] < 2  # its sessions' counts, weighted by their wall time
    stored = json.loads((tmp_path / "result.json").read_text())
    assert stored["tokens_per_s"] == r["tokens_per_s"] and stored["launchers"] == r["launchers"]
