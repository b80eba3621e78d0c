"""scaling.checkpoint: sharded round trip, retention, fallback to the newest readable step."""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import numpy as np
import pytest

from scaling import config, engine, sharding
from scaling.checkpoint import Checkpointer, UnreadableCheckpointError
from scaling.errors import DiskFullError, UserError


def _engine(mesh_sizes: tuple[int, int, int], n_devices: int = 8) -> engine.Engine:
    """The compiled engine of a tiny model on a (d, f, t) mesh over the first `n_devices`."""
    d, f, t = mesh_sizes
    cfg = config.load(
        "tiny",
        [
            "model.preset=cpu-3xs",
            "model.seq_len=32",
            "train.batch_size=16",
            f"mesh.data={d}",
            f"mesh.fsdp={f}",
            f"mesh.tensor={t}",
        ],
    )
    return engine.engine(cfg, sharding.make_mesh(cfg, jax.devices()[:n_devices]))


def _sharded_state(mesh_sizes: tuple[int, int, int]) -> tuple[dict, object]:
    """Real training state (params + Adam state + step) of a tiny model on a (d, f, t) mesh."""
    eng = _engine(mesh_sizes)
    with jax.set_mesh(eng.mesh):
        state = eng.init(jax.random.key(0))
    return state, eng


def _truncate_all(step_dir: Path) -> None:
    """Simulate a torn write: cut every file of a checkpoint step in half."""
    for p in step_dir.rglob("*"):
        if p.is_file():
            size = p.stat().st_size
            with p.open("r+b") as fh:
                fh.truncate(size // 2)


def _assert_same(a, b) -> None:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_sharded_state(tmp_path: Path) -> None:
    state, eng = _sharded_state((2, 2, 2))
    state = jax.tree.map(lambda x: x + 1 if x.dtype == np.float32 else x, state)
    ck = Checkpointer(tmp_path / "ck", keep=2)
    ck.save(7, state, {"best_val_loss": 1.5})
    ck.wait()
    assert ck.steps() == [7]
    got = ck.restore_latest(eng.abstract_state)
    ck.close()
    assert got is not None and got.step == 7 and got.warnings == []
    assert got.meta["best_val_loss"] == 1.5 and got.meta["step"] == 7
    _assert_same(state, got.state)
    # restored straight into the sharded layout the rules ask for (not gathered, not replicated)
    for want, have in zip(jax.tree.leaves(state), jax.tree.leaves(got.state), strict=True):
        assert have.sharding.is_equivalent_to(want.sharding, want.ndim)
    wq = got.state["params"]["blocks"][0]["attn"]["wq"]
    assert wq.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    # the optimizer state (Adam moments) is in the checkpoint too, sharded like the params
    mu_wq = jax.tree.leaves(got.state["opt"])[1:]
    assert any(x.shape == wq.shape and x.sharding.spec == wq.sharding.spec for x in mu_wq)


def test_restores_onto_another_mesh_and_device_count(tmp_path: Path) -> None:
    """A run resumed with other mesh sizes or fewer devices (`mesh.data = -1` keeps its run id)
    gets the same values, laid out by the rules on the new mesh."""
    state, _ = _sharded_state((2, 2, 2))
    ck = Checkpointer(tmp_path / "ck", keep=2)
    ck.save(3, state)
    ck.close()
    for sizes, n in (((8, 1, 1), 8), ((1, 2, 2), 4), ((1, 1, 1), 1)):
        eng = _engine(sizes, n)
        ck = Checkpointer(tmp_path / "ck", keep=2)
        got = ck.restore_latest(eng.abstract_state)
        ck.close()
        assert got is not None and got.step == 3 and got.warnings == []
        _assert_same(state, got.state)
        pairs = zip(jax.tree.leaves(eng.abstract_state), jax.tree.leaves(got.state), strict=True)
        for want, have in pairs:
            assert have.sharding.is_equivalent_to(want.sharding, want.ndim)
            assert len(have.sharding.device_set) == n


def test_keeps_only_the_newest(tmp_path: Path) -> None:
    state = {"w": jax.numpy.arange(6.0).reshape(2, 3)}
    ck = Checkpointer(tmp_path, keep=2)
    for step in (1, 2, 3, 4):
        ck.save(step, jax.tree.map(lambda x, s=step: x * s, state))
    ck.wait()
    assert ck.steps() == [3, 4]
    got = ck.restore_latest(state)
    ck.close()
    assert got.step == 4
    np.testing.assert_array_equal(np.asarray(got.state["w"]), np.arange(6.0).reshape(2, 3) * 4)


def test_save_that_cannot_fit_is_refused_before_orbax_writes(tmp_path: Path, monkeypatch) -> None:
    """A full disk is found before the save starts (one DiskFullError naming the step), so no
    half-written step is left and the earlier checkpoints stay readable."""
    import shutil

    state = {"w": jax.numpy.arange(4096.0)}  # 32 KiB
    ck = Checkpointer(tmp_path)
    ck.save(1, state)
    ck.wait()
    real = shutil.disk_usage
    monkeypatch.setattr(
        shutil, "disk_usage", lambda p: real(p)._replace(free=state["w"].nbytes // 2)
    )
    with pytest.raises(DiskFullError, match=r"writing .*/2; free space and rerun to resume"):
        ck.save(2, state)
    monkeypatch.undo()
    assert ck.steps() == [1] and not any("2" in p.name for p in tmp_path.iterdir())
    got = ck.restore_latest(state)
    ck.close()
    assert got.step == 1


def test_empty_directory_restores_nothing(tmp_path: Path) -> None:
    ck = Checkpointer(tmp_path / "none")
    assert ck.restore_latest({"w": jax.numpy.zeros(3)}) is None
    ck.close()


@pytest.mark.parametrize("damage", ["truncate", "delete_data"])
def test_corrupted_latest_falls_back_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    state = {"w": jax.numpy.arange(512.0).reshape(32, 16), "step": jax.numpy.int32(0)}
    ck = Checkpointer(tmp_path, keep=3)
    for step in (10, 20):
        ck.save(step, jax.tree.map(lambda x, s=step: x + s, state))
    ck.wait()
    if damage == "truncate":
        _truncate_all(tmp_path / "20")
    else:  # the array data files vanish, metadata survives
        for p in (tmp_path / "20" / "state").rglob("*"):
            if p.is_file() and p.parent.name == "d":
                p.unlink()
    with caplog.at_level(logging.WARNING, logger="scaling.checkpoint"):
        got = ck.restore_latest(state)
    assert got.step == 10
    np.testing.assert_array_equal(np.asarray(got.state["w"]), np.arange(512.0).reshape(32, 16) + 10)
    assert len(got.warnings) == 1 and "step 20" in got.warnings[0]
    assert "step 20" in caplog.text and "unreadable" in caplog.text
    # moved aside: kept for inspection, no longer listed, and the step can be saved again
    assert (tmp_path / "unreadable-20").is_dir() and ck.steps() == [10]
    ck.save(20, state)
    ck.wait()
    assert ck.steps() == [10, 20]
    ck.close()


def test_all_unreadable_refuses_on_every_rerun_until_restart(tmp_path: Path) -> None:
    """Regression (issue 12): the first refusal used to rename every step to unreadable-*, so a
    plain rerun found no checkpoint and silently trained from step 0."""
    state = {"w": jax.numpy.ones((8, 8))}
    ck = Checkpointer(tmp_path, keep=3)
    for step in (5, 6):
        ck.save(step, state)
    ck.wait()
    for step in (5, 6):
        _truncate_all(tmp_path / str(step))
    before = sorted(p.name for p in tmp_path.iterdir())
    for _ in range(2):  # the rerun decides exactly as the first run did
        with pytest.raises(UnreadableCheckpointError, match="refusing to restart") as e:
            Checkpointer(tmp_path, keep=3).restore_latest(state)
        assert "--restart" in str(e.value) and "--from-step" in str(e.value)
        assert isinstance(e.value, UserError)  # the CLI turns it into exit code 2
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # evidence not moved
    with pytest.raises(UserError, match="--from-step 6: checkpoint step 6 .* is unreadable"):
        ck.restore_latest(state, from_step=6)
    with pytest.raises(UserError, match="no checkpoint step 7"):
        ck.restore_latest(state, from_step=7)
    assert ck.restore_latest(state, restart=True) is None  # explicit: start over
    assert (tmp_path / "restarted-5").is_dir() and (tmp_path / "restarted-6").is_dir()
    assert ck.steps() == []
    ck.close()


def test_from_step_resumes_there_and_keeps_newer_steps_aside(tmp_path: Path) -> None:
    state = {"w": jax.numpy.zeros(4)}
    ck = Checkpointer(tmp_path, keep=5)
    for step in (1, 2, 3):
        ck.save(step, {"w": state["w"] + step})
    ck.wait()
    got = ck.restore_latest(state, from_step=2)
    assert got.step == 2 and float(got.state["w"][0]) == 2.0
    assert ck.steps() == [1, 2] and (tmp_path / "discarded-3").is_dir()
    ck.close()


def test_shape_mismatch_is_unreadable(tmp_path: Path) -> None:
    ck = Checkpointer(tmp_path)
    ck.save(1, {"w": jax.numpy.ones((4, 4))})
    ck.wait()
    with pytest.raises(UnreadableCheckpointError):
        one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        ck.restore_latest({"w": jax.ShapeDtypeStruct((4, 5), np.float32, sharding=one)})
    ck.close()


def test_unreadable_reason_is_one_line_without_tensorstore_dump() -> None:
    from scaling.checkpoint import _reason

    e = Exception(
        "Encountered error while reading array index: (slice(0, 32, 1),). See full TensorStore "
        "details: <bound method pybind11_detail_function_record_v1_system.spec of TensorStore({\n"
        "  'base': {\n    'driver': 'zarr',"
    )
    assert _reason(e) == (
        "Exception: Encountered error while reading array index: (slice(0, 32, 1),)"
    )


def test_orphaned_restore_coroutines_print_nothing(monkeypatch) -> None:
    """After a failed restore, Orbax's orphaned read coroutines fail at any later time; their
    tracebacks ("Exception ignored in: <coroutine _read_array_index_and_device_put>", "Event
    loop is closed") no longer follow the one-line error. Anything else still reaches the hooks."""
    import sys
    from types import SimpleNamespace

    from scaling.checkpoint import _quiet_orphans

    async def _read_array_index_and_device_put() -> None:
        pass

    seen: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda args: seen.append(args.exc_value))
    monkeypatch.setattr(sys, "excepthook", lambda kind, exc, tb: seen.append(exc))
    _quiet_orphans()
    orphan = _read_array_index_and_device_put()
    closed = RuntimeError("Event loop is closed")
    sys.unraisablehook(SimpleNamespace(exc_value=Exception("read error"), object=orphan))
    sys.unraisablehook(SimpleNamespace(exc_value=closed, object=None))
    sys.excepthook(RuntimeError, closed, None)
    orphan.close()
    assert seen == []
    real = ValueError("real")
    sys.unraisablehook(SimpleNamespace(exc_value=real, object=None))
    sys.excepthook(ValueError, real, None)
    assert seen == [real, real]


def test_close_leaves_no_orbax_thread_running(tmp_path: Path) -> None:
    """Orbax's tmp-dir cleanup ran in a thread that close() did not wait for: a run that
    stopped at once (`scaling train --from-step 4` on a new directory) printed its traceback
    ("cannot schedule new futures after interpreter shutdown") after the one-line error."""
    import threading  # noqa: PLC0415

    for i in range(3):
        Checkpointer(tmp_path / f"ck{i}").close()
        alive = [t.name for t in threading.enumerate() if "_target_setting_result" in t.name]
        assert not alive, alive


def _stop_then_raise(ck: Checkpointer, exc: Exception) -> None:
    """Make Orbax's manager of `ck` raise `exc` from close(), after really stopping (so no
    async save outlives the test)."""
    real_close = ck._manager.close

    def close() -> None:
        real_close()
        raise exc

    ck._manager.close = close


def test_a_manager_that_fails_to_stop_warns_without_the_tensorstore_dump(
    tmp_path: Path, capsys
) -> None:
    """close()'s warning formatted the error itself, so TensorStore's spec dump ('See full
    TensorStore details: <bound method ...>') reached the line, which `_reason` strips."""
    ck = Checkpointer(tmp_path / "a")
    ck.save(1, {"w": jax.numpy.arange(6.0)})
    _stop_then_raise(
        ck, ValueError("close failed. See full TensorStore details: <bound method Spec>")
    )
    ck.close()
    err = capsys.readouterr().err
    assert "(ValueError: close failed); every checkpoint was saved before" in err, err
    assert "TensorStore details" not in err


def test_a_manager_that_fails_to_stop_after_every_save_is_a_warning(tmp_path: Path, capsys) -> None:
    """Orbax's manager raising in close() after the last save was on disk propagated out of
    the run's clean-up: a finished run lost its result.json to a traceback. Now it is one
    warning line; a failed save still raises, its error (not close's) reported."""
    state = {"w": jax.numpy.arange(6.0)}
    ck = Checkpointer(tmp_path / "a")
    ck.save(1, state)
    _stop_then_raise(ck, RuntimeError("orbax: handler close failed\ndetail"))
    ck.close()
    err = capsys.readouterr().err
    assert "warning: Orbax's checkpoint manager of" in err and "handler close failed)" in err
    again = Checkpointer(tmp_path / "a")
    assert again.restore_latest(state).step == 1
    again.close()
    ck = Checkpointer(tmp_path / "b")
    ck.save(1, state)
    real_wait, real_close_b = ck._manager.wait_until_finished, ck._manager.close

    def close_b() -> None:  # b's own manager, so no async save outlives the test
        real_wait()
        real_close_b()
        raise RuntimeError("orbax: handler close failed")

    ck._manager.wait_until_finished = lambda: (_ for _ in ()).throw(ValueError("save failed"))
    ck._manager.close = close_b
    with pytest.raises(ValueError, match="save failed"):
        ck.close()
