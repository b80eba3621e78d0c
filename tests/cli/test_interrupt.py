"""Ctrl-C stops a run promptly and leaves it resumable.

The KeyboardInterrupt itself can be lost: Python drops exceptions raised inside garbage-collector
callbacks, and JAX registers one (seen: a demo sweep ran on to the end after one SIGINT). So the
CLI's SIGINT handler also sets a flag that the training and sweep loops check; the first test
checks the flag alone, the second a real `scaling train` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SMALL_DATA, tiny_grid

from scaling import signals


def test_flag_raises_even_after_the_exception_was_lost():
    previous = signals.install()
    try:
        signals._received.append(signal.SIGTERM)  # as if the exception had been swallowed
        with pytest.raises(signals.Interrupted) as e:
            signals.check()
        assert e.value.exit_code == 143 and e.value.signame == "SIGTERM"
    finally:
        signals.restore(previous)  # pytest's own handlers and unraisablehook, as they were
        signals.reset()
    signals.check()  # no flag, no exception


def test_only_the_first_signal_may_raise_later_ones_are_counted():
    """Regression (issue 12): a second Ctrl-C raised `Interrupted` into the clean-up (a thread
    join at shutdown printed a traceback; `sweep run` hung). Later signals never raise."""
    signals.reset()
    with signals.graceful():
        signals._handler(signal.SIGINT, None)  # the loop stops at the next step boundary
        signals._handler(signal.SIGINT, None)  # the save under way is not disturbed
    assert signals.requested() == signal.SIGINT and len(signals._received) == 2
    signals.reset()
    with pytest.raises(signals.Interrupted):  # outside the loop the first one raises at once
        signals._handler(signal.SIGTERM, None)
    signals._handler(signal.SIGTERM, None)  # ... and the second one, in the clean-up, does not
    signals.reset()


def _python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )


def test_third_signal_exits_at_once_with_one_line_and_shutdown_signals_exit_quietly():
    """The user insists: the third signal ends the process (143 for SIGTERM, one line), even
    inside the step loop; after the CLI's exit code is known a signal exits with that code."""
    p = _python(
        "import os, signal, time\n"
        "from scaling import signals\n"
        "signals.install()\n"
        "with signals.graceful():\n"
        "    for i in range(3):\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(0.2)\n"
        "        print('alive after', i + 1, flush=True)\n"
        "    time.sleep(30)\n"
    )
    assert p.returncode == 143, p.stderr
    assert p.stdout.split("\n")[:2] == ["alive after 1", "alive after 2"]
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted by SIGTERM (3 signals)"), p.stderr
    p = _python(
        "import os, signal, time\n"
        "from scaling import signals\n"
        "signals.exit_quietly(3)\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(30)\n"
    )
    assert (p.returncode, p.stderr) == (3, "")


def test_third_signal_ends_the_process_while_the_main_thread_is_in_c_code():
    """Three Ctrl-C during one long C call (an XLA computation; here a matrix product) reach
    the Python handler once, after the call returns: the process went on as if pressed once.
    The watcher thread counts the deliveries themselves, so the third one still ends it."""
    p = _python(
        "import os, signal, threading, time\n"
        "os.environ['OPENBLAS_NUM_THREADS'] = '1'\n"
        "import numpy as np\n"
        "from scaling import signals\n"
        "signals.install()\n"
        "a = np.ones((2500, 2500))\n"
        "def send():\n"
        "    time.sleep(0.3)\n"
        "    for _ in range(3):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(0.05)\n"
        "threading.Thread(target=send, daemon=True).start()\n"
        "with signals.graceful():\n"
        "    for _ in range(4):\n"
        "        a @ a\n"
        "print('survived', len(signals._received), flush=True)\n"
    )
    assert p.returncode == 130 and "survived" not in p.stdout, (p.returncode, p.stdout, p.stderr)
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted by SIGINT (3 signals)"), p.stderr


def test_a_signal_while_the_flag_lock_is_held_does_not_deadlock():
    """A handler runs in the main thread between two bytecodes, possibly inside `with _lock`
    (a nested handler during a burst of signals, or reset()); with a plain Lock it hung."""
    p = _python(
        "import signal\n"
        "from scaling import signals\n"
        "with signals._lock, signals.graceful():\n"
        "    signals._handler(signal.SIGINT, None)\n"
        "print(signals.requested() == signal.SIGINT, flush=True)\n",
        timeout=20,
    )
    assert (p.returncode, p.stdout) == (0, "True\n"), p.stderr


def _last_step(metrics: Path) -> int:
    try:
        lines = metrics.read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (FileNotFoundError, json.JSONDecodeError, KeyError, IndexError):
        return 0


SETS = [
    "model.preset=cpu-3xs",
    "model.seq_len=32",
    "train.batch_size=8",
    "train.log_every=1",
    "train.checkpoint_every=25",
    "data.dataset=python_source/small",
    "data.val_tokens=2048",
    "data.task_mix=0.0",
    "eval.enabled=false",
    "mesh.data=1",
]
GRID = tiny_grid(
    "sig",
    tokens="[5e7]",
    n_max="3e3",
    count=1,
    extra=SMALL_DATA + "[base.train]\nlog_every = 1\ncheckpoint_every = 25\n",
)


def _interrupt(
    argv: list[str], metrics: Callable[[], Path], sig: int, times: int = 1
) -> tuple[int, str]:
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "scaling.cli", *argv, "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 900  # generous: a loaded CI machine, not a hang
        while _last_step(metrics()) < 30 and proc.poll() is None:
            assert time.time() < deadline, "training never reached step 30"
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        for i in range(times):  # a second Ctrl-C comes while the first one's save runs
            proc.send_signal(sig)
            time.sleep(0.05 if i + 1 < times else 0)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, err


def _checkpoints(run: Path) -> list[int]:
    return sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())


@pytest.mark.parametrize("sig, times", [(signal.SIGINT, 1), (signal.SIGTERM, 2)])
def test_signal_stops_training_saves_the_interrupt_step_and_says_one_line(tmp_path, sig, times):
    """SIGINT and SIGTERM alike: exit 130/143, one line, a checkpoint AT the interrupt step
    (not the last periodic one), no result.json. A second signal changes nothing (issue 12:
    it printed a traceback from a thread join)."""
    out = tmp_path / "run"
    argv = ["train", "tiny", "--out", str(out)] + [x for s in SETS for x in ("--set", s)]
    code, err = _interrupt(argv, lambda: out / "metrics.jsonl", sig, times)
    assert code == 128 + sig, err[-2000:]
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert lines[0].startswith(f"interrupted by {signal.Signals(sig).name}: checkpoint saved at")
    assert lines[0].endswith("rerun the same command to resume")
    assert not (out / "result.json").exists()
    assert _checkpoints(out)[-1] == _last_step(out / "metrics.jsonl") >= 30


def test_sigint_twice_on_sweep_run_exits_130_without_segfault_and_releases_the_lease(tmp_path):
    """Regression (issue 12): Ctrl-C on `sweep run` printed its line, then segfaulted (139),
    because Orbax's manager was never closed on the way out; and a second Ctrl-C made it hang
    (raised into the clean-up). Twice: exit 130, one line, lease released, resumable."""
    grid, root = tmp_path / "g.toml", tmp_path / "sweep"
    grid.write_text(GRID)

    def metrics() -> Path:
        runs = list((root / "runs").glob("*/metrics.jsonl")) if (root / "runs").is_dir() else []
        return runs[0] if runs else root / "none"

    argv = ["sweep", "run", str(grid), "--out", str(root)]
    code, err = _interrupt(argv, metrics, signal.SIGINT, times=2)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err and len([x for x in err.splitlines() if x.strip()]) == 1
    assert not list((root / "leases").glob("*.json"))
    assert _checkpoints(metrics().parent)[-1] == _last_step(metrics())


def test_an_interrupt_python_cannot_propagate_is_silent_and_check_raises_it(monkeypatch):
    """A signal raised inside a __del__ or JAX's GC callback printed "Exception ignored ...
    Traceback" (seen at startup); `install` drops that report, the flag raises it later."""
    seen: list[type] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda args: seen.append(type(args.exc_value)))
    previous = signals.install()
    try:

        class Finalised:
            def __init__(self, exc: BaseException | None) -> None:
                self.exc = exc

            def __del__(self) -> None:
                if self.exc is None:
                    signals._handler(signal.SIGINT, None)  # as in a GC callback
                raise self.exc or RuntimeError

        Finalised(None)  # dropped by Python: reported to unraisablehook, which stays silent
        Finalised(ValueError("other"))  # anything else still reaches the previous hook
        assert seen == [ValueError]
        with pytest.raises(signals.Interrupted):
            signals.check()
    finally:
        signals.restore(previous)
        signals.reset()


def test_an_interrupt_while_the_tracker_opens_still_closes_the_checkpointer(tmp_path, monkeypatch):
    """A signal while `train` opens its tracker (importing tensorboardX, after the state was
    restored) skipped `ckpt.close()`: Orbax's threads were left running at exit, the segfault
    of issue 12. The checkpointer is closed on that way out too."""
    from scaling import config
    from scaling import train as train_mod

    closed: list[bool] = []
    close = train_mod.Checkpointer.close
    monkeypatch.setattr(
        train_mod.Checkpointer, "close", lambda self: (closed.append(True), close(self))[1]
    )

    def interrupted(*args, **kwargs):
        raise signals.Interrupted(signal.SIGINT)

    monkeypatch.setattr(train_mod.tracking, "Tracker", interrupted)
    sets = [s for s in SETS if not s.startswith("mesh.")]  # the 8 fake devices of this process
    cfg = config.load("tiny", [*sets, "train.steps=4"])
    with pytest.raises(signals.Interrupted):
        train_mod.train(cfg, tmp_path / "run", progress=False)
    assert closed == [True]


def test_signals_are_ignored_once_the_exit_hooks_have_run() -> None:
    """Python puts SIGINT/SIGTERM's system defaults back while it finalizes its modules: a
    Ctrl-C in that instant, after the CLI's one line and exit code, killed the process by the
    signal (exit -2, seen once in `make faults`). After the exit hooks that `entry` runs behind
    (`signals.ignore_after_exit_hooks`), a signal is ignored: this child sends itself SIGINT
    from the last exit hook and still exits with its own code."""
    import subprocess
    import sys

    code = (
        "import atexit, os, signal, sys\n"
        "atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))  # runs after ours\n"
        "from scaling import signals\n"
        "signals.ignore_after_exit_hooks()\n"
        "sys.exit(7)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 7, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "KeyboardInterrupt" not in r.stderr, r.stderr
