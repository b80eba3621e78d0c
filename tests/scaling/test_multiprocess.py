"""Several JAX processes on one machine (`scaling launch`, gloo collectives on CPU), and the
process setup: flags, JAX_* env, SLURM detection, and the bad-input errors (exit 2, no hang).

The launch test runs the exact README command: 2 processes x 2 CPU devices train one model,
with few-shot evals on, and must match 1 process x 4 devices to 1e-6; the 2-process run is then
resumed from its middle checkpoint and must end the same.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_same_run, finish, spawn

from scaling import cli, distributed
from scaling.distributed import ProcessSetup, resolve
from scaling.errors import UserError

CONFIG = "mp-check"  # scaling/configs/mp-check.toml: 8 steps, evals on, mesh data=2 x fsdp=2


def launch(n: int, k: int, out: Path, *extra: str) -> subprocess.Popen:
    """The README's `scaling launch -n N --devices-per-process K -- scaling train mp-check
    --out OUT` (plus `--set` extras)."""
    sets = [x for s in extra for x in ("--set", s)]
    cmd = ["scaling", "launch", "-n", str(n), "--devices-per-process", str(k), "--"]
    return spawn([*cmd, "scaling", "train", CONFIG, *sets, "--out", str(out), "--no-progress"])


def test_two_processes_match_one_with_evals_and_resume(tmp_path: Path, mp_reference) -> None:
    r1, m1 = mp_reference["result"], mp_reference["metrics"]
    two = tmp_path / "two"
    rc, log = finish(launch(2, 2, two))
    assert rc == 0, log
    assert_same_run(r1, m1, two)
    assert log.count("done at step 8") == 1  # one summary, from process 0

    # resume the 2-process run from its step-4 checkpoint (as after a kill at step 5..7)
    (two / "result.json").unlink()
    shutil.rmtree(two / "checkpoints" / "8")
    rc, log = finish(launch(2, 2, two))
    assert rc == 0, log
    r3 = json.loads((two / "result.json").read_text())
    assert r3["resumed_from_step"] == 4
    assert abs(r3["final_val_loss"] - r1["final_val_loss"]) < 1e-6
    assert_same_run(r1, m1, two)


def test_mesh_not_matching_the_global_device_count_exits_2(tmp_path: Path) -> None:
    """Both processes exit 2 before compiling (not a hang in a collective: `finish` fails the
    test and kills them at its time limit)."""
    rc, log = finish(launch(2, 2, tmp_path / "run", "mesh.data=8", "mesh.fsdp=1"))
    assert rc == 2, log
    assert "uses 8 devices, but 4 are visible" in log and "2 processes" in log, log
    assert "Traceback" not in log
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing compiled or written


# ----------------------------------------------------------------------------- bad input


def _argv(tmp_path: Path, *flags: str) -> list[str]:
    return ["train", CONFIG, "--out", str(tmp_path / "run"), "--no-progress", *flags]


def test_process_id_out_of_range_exits_2(tmp_path: Path, capsys) -> None:
    flags = ["--coordinator", "127.0.0.1:12355", "--num-processes", "2", "--process-id", "2"]
    assert cli.main(_argv(tmp_path, *flags)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --process-id 2 is out of range for 2 processes; use 0..1")


def test_coordinator_without_process_count_exits_2(tmp_path, capsys, monkeypatch) -> None:
    """The README's old route: JAX_COORDINATOR_ADDRESS alone used to crash inside JAX."""
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:12356")
    for var in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    assert cli.main(_argv(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "not the number of processes" in err and "scaling launch -n N" in err
    assert err.count("\n") == 1


def test_unreachable_coordinator_times_out_with_a_clear_message(tmp_path, capsys) -> None:
    from scaling.launch import free_port

    port = free_port()  # nobody listens there
    flags = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "1"]
    t0 = time.time()
    assert cli.main(_argv(tmp_path, *flags, "--coordinator-timeout", "1.5")) == 2
    assert time.time() - t0 < 30
    err = capsys.readouterr().err
    assert f"cannot reach the coordinator 127.0.0.1:{port} within 1.5 s" in err
    assert "process 1 of 2" in err


def test_coordinator_host_not_on_this_machine_for_process_0() -> None:
    setup = resolve("192.0.2.1:12355", 2, 0, environ={})  # TEST-NET-1: never a local address
    with pytest.raises(UserError, match="192.0.2.1 is not an address of this machine"):
        distributed.initialize(setup)


def test_coordinator_port_in_use_exits_2_before_jax_starts(tmp_path: Path, capsys) -> None:
    """`scaling launch --port P` with P taken: process 0 died in JAX's traceback ('Failed to
    start RPC server'); now one line naming the port and the fix, exit 2."""
    import socket  # noqa: PLC0415

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        setup = resolve(f"127.0.0.1:{port}", 2, 0, environ={})
        with pytest.raises(UserError, match=f"127.0.0.1:{port}: the port is in use"):
            distributed.initialize(setup)
        argv = ["train", CONFIG, "--out", str(tmp_path / "run"), "--coordinator"]
        assert (
            cli.main([*argv, f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "0"]) == 2
        )
    err = capsys.readouterr().err
    assert err.startswith("error: process 0 cannot start the coordinator") and err.count("\n") == 1


def test_jax_failing_to_listen_is_the_same_one_line(monkeypatch) -> None:
    """A port taken after the check (or on another interface: JAX listens on all of them)."""

    class FakeDistributed:
        @staticmethod
        def initialize(**kwargs):
            raise RuntimeError("UNKNOWN: Failed to start RPC server")

    class FakeJax:
        distributed = FakeDistributed

    monkeypatch.setattr(distributed, "_check_coordinator_host", lambda host, port: None)
    with pytest.raises(UserError, match="127.0.0.1:4567: the port is in use"):
        distributed._initialize(FakeJax, resolve("127.0.0.1:4567", 2, 0, environ={}), 5)


# ----------------------------------------------------------------------------- resolution


def test_resolve_flags_env_slurm_and_single() -> None:
    assert resolve(environ={}) == ProcessSetup()
    env = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert resolve(environ=env) == ProcessSetup(4, 3, "h:1", "env")
    # flags win over env, value by value
    assert resolve("g:2", None, 1, environ=env) == ProcessSetup(4, 1, "g:2", "flags")
    slurm = {
        "SLURM_JOB_ID": "7",
        "SLURM_NTASKS": "2",
        "SLURM_PROCID": "1",
        "SLURM_STEP_NODELIST": "n1",
    }
    assert resolve(environ=slurm) == ProcessSetup(2, 1, None, "slurm")
    # an sbatch array task (one task) is a single process
    assert resolve(environ=dict(slurm, SLURM_NTASKS="1")) == ProcessSetup()
    # an address given, the count and id from the srun step
    assert resolve("h:9", environ=slurm) == ProcessSetup(2, 1, "h:9", "slurm")
    assert resolve(None, 1, None, environ={}) == ProcessSetup(1, 0, None, "flags")


@pytest.mark.parametrize(
    ("args", "env", "match"),
    [
        (("h:1", 2, None), {}, "needs --process-id"),
        ((None, 2, 0), {}, "need a coordinator"),
        (("nohostport", 2, 0), {}, "is not HOST:PORT"),
        ((None, None, None), {"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES = 'two'"),
        (("h:1", 0, 0), {}, "--num-processes 0 must be >= 1"),
        (("h:1", 2, -1), {}, "out of range"),
        # env values are named as env vars, not as flags
        (
            (None, None, None),
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "0"},
            "JAX_NUM_PROCESSES=0 must be >= 1",
        ),
        (
            (None, None, None),
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "5"},
            "JAX_PROCESS_ID=5 is out of range",
        ),
        (
            (None, None, None),
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"},
            "JAX_NUM_PROCESSES=2 needs --process-id",
        ),
        # a process id alone used to say "a coordinator (None) is given"
        ((None, None, 1), {}, r"^--process-id 1 is given but not the number of processes"),
        ((None, None, None), {"JAX_PROCESS_ID": "1"}, r"^JAX_PROCESS_ID=1 is given but not"),
    ],
)
def test_resolve_rejects_bad_setups(args, env, match) -> None:
    with pytest.raises(UserError, match=match):
        resolve(*args, environ=env)


def test_launch_stops_the_others_when_one_process_fails(tmp_path: Path) -> None:
    """torchrun semantics: process 1 fails at once; process 0, which would sleep for two
    minutes, gets SIGTERM from the launcher (it writes down the signal it received)."""
    code = (
        "import os, signal, sys, time\n"
        "i, d = int(os.environ['JAX_PROCESS_ID']), sys.argv[1]\n"
        "open(os.path.join(d, f'p{i}'), 'w').write(os.environ['JAX_NUM_PROCESSES'])\n"
        "def stopped(s, f):\n"
        "    open(os.path.join(d, 'p0-stopped'), 'w').write(str(s))\n"
        "    sys.exit(128 + s)\n"
        "signal.signal(signal.SIGTERM, stopped)\n"
        "sys.exit(3) if i == 1 else time.sleep(120)\n"
    )
    rc = cli.main(
        ["launch", "-n", "2", "--grace", "2", "--", sys.executable, "-c", code, str(tmp_path)]
    )
    assert rc == 3  # the first failure's code, not the stopped process's 143
    assert (tmp_path / "p0").read_text() == (tmp_path / "p1").read_text() == "2"
    assert (tmp_path / "p0-stopped").read_text() == str(int(signal.SIGTERM))


@pytest.mark.slow
def test_sigterm_to_a_launch_saves_on_every_process_and_exits_143(tmp_path: Path) -> None:
    """SIGTERM to the launcher (forwarded to both processes) stops the run: JAX's preemption
    notifier used to take SIGTERM for itself (logged, ignored: the run trained to the end).
    Both processes stop at the same step (agreed), save it, and exit 143; a rerun resumes."""
    out = tmp_path / "run"
    cmd = ["scaling", "launch", "-n", "2", "--devices-per-process", "1", "--"]
    sets = ["--set", "train.steps=3000", "--set", "train.checkpoint_every=1000"]
    p = spawn([*cmd, "scaling", "train", "tiny", *sets, "--out", str(out), "--no-progress"])
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").is_file() or not (out / "metrics.jsonl").read_text():
        assert p.poll() is None and time.time() < deadline, finish(p, 1)[1]
        time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    rc, log = finish(p, timeout=120)
    assert rc == 143, log
    saved = [line for line in log.splitlines() if "interrupted by SIGTERM" in line]
    assert len(saved) == 2 and saved[0] == saved[1], log  # the same step on both processes
    step = int(saved[0].split("saved at step ")[1].split()[0])
    assert 0 < step < 3000
    assert (out / "checkpoints" / str(step)).is_dir()
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("flag", "env", "match"),
    [
        (float("nan"), None, "--coordinator-timeout nan: .* finite number of seconds > 0"),
        (float("inf"), None, "--coordinator-timeout inf: .* finite"),
        (-5.0, None, "--coordinator-timeout -5: "),
        (None, "0", "SCALING_COORDINATOR_TIMEOUT=0: .* > 0"),
        (None, "-5", "SCALING_COORDINATOR_TIMEOUT=-5: "),
        (None, "nan", "SCALING_COORDINATOR_TIMEOUT=nan: "),
        (None, "soon", "SCALING_COORDINATOR_TIMEOUT='soon' is not a number"),
    ],
)
def test_bad_coordinator_timeouts_name_their_source(flag, env, match) -> None:
    environ = {} if env is None else {"SCALING_COORDINATOR_TIMEOUT": env}
    with pytest.raises(UserError, match=match):
        resolve(timeout_s=flag, environ=environ)


def test_coordinator_timeout_from_env_accepts_seconds_as_the_flag_does() -> None:
    assert resolve(environ={"SCALING_COORDINATOR_TIMEOUT": "1.5"}).timeout_s == 1.5
    assert resolve(environ={"SCALING_COORDINATOR_TIMEOUT": ""}).timeout_s == 300
    assert resolve(timeout_s=2.0, environ={"SCALING_COORDINATOR_TIMEOUT": "nan"}).timeout_s == 2


def test_nan_coordinator_timeout_on_the_command_line_exits_2(tmp_path, capsys) -> None:
    assert cli.main(_argv(tmp_path, "--coordinator-timeout", "nan")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --coordinator-timeout nan:") and "Traceback" not in err


@pytest.mark.slow
def test_two_processes_resume_past_an_unreadable_newest_checkpoint(tmp_path: Path) -> None:
    """Process 0 moves the unreadable step aside; every process must then stop listing it
    (else the others refused to save that step again and the run hung in a barrier)."""
    out = tmp_path / "run"
    cmd = ["scaling", "launch", "-n", "2", "--devices-per-process", "1", "--"]
    train = [*cmd, "scaling", "train", "tiny", "--out", str(out), "--no-progress"]
    sets = ["--set", "train.steps=30", "--set", "train.checkpoint_every=10"]
    rc, log = finish(spawn([*train, *sets]), timeout=180)
    assert rc == 0, log
    shutil.rmtree(out / "checkpoints" / "30")  # as if killed between steps 20 and 30
    shutil.rmtree(out / "checkpoints" / "20" / "state")  # and the newest step is unreadable
    (out / "result.json").unlink()
    rc, log = finish(spawn([*train, *sets]), timeout=180)
    assert rc == 0, log
    assert json.loads((out / "result.json").read_text())["resumed_from_step"] == 10
    assert "moved to unreadable-20" in log
    assert (out / "checkpoints" / "unreadable-20").is_dir()
    assert (out / "checkpoints" / "30").is_dir()


@pytest.mark.parametrize("port", ["70000", "-5", "0"])
def test_launch_rejects_a_port_out_of_range_before_starting_anything(
    tmp_path: Path, capsys, port: str
) -> None:
    marker = tmp_path / "started"
    code = f"open({str(marker)!r}, 'w')"
    assert cli.main(["launch", "-n", "2", "--port", port, "--", sys.executable, "-c", code]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --port {port} is not a TCP port; pass one in 1..65535")
    assert not marker.exists()


@pytest.mark.parametrize("grace", ["-1", "nan"])
def test_launch_grace_that_is_not_a_wait_exits_2(grace: str, capsys) -> None:
    """A negative or nan --grace was accepted and meant SIGKILL at once on the first failure."""
    assert cli.main(["launch", "-n", "1", "--grace", grace, "--", "true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --grace {float(grace)} must be a number of seconds >= 0")
    assert err.count("\n") == 1
