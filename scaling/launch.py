"""`scaling launch -n N [--devices-per-process K] -- COMMAND ...`: N processes on this machine.

A torchrun-style launcher for one host: it picks a free port on 127.0.0.1 and starts COMMAND N
times with JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID set (read by
`scaling.distributed`), so `scaling launch -n 2 -- scaling train tiny` trains one model over the
devices of both processes (gloo collectives on CPU). `--devices-per-process K` gives each process
K devices: K fake CPU devices (XLA_FLAGS) on CPU, GPUs i*K..i*K+K-1 (CUDA_VISIBLE_DEVICES) on GPU.

If one process fails, the others are stopped (SIGTERM, then SIGKILL after --grace seconds) and
the launcher exits with the first failure's code; SIGINT/SIGTERM to the launcher are forwarded.
No JAX is imported here.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

from scaling.distributed import ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID
from scaling.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "launch",
        help="run a command as N cooperating JAX processes on this machine",
        description="Start COMMAND N times as one multi-process JAX job (torchrun-style), e.g. "
        "`scaling launch -n 2 --devices-per-process 2 -- scaling train tiny`.",
    )
    p.add_argument("-n", "--num-processes", type=int, required=True, metavar="N")
    p.add_argument(
        "--devices-per-process",
        type=int,
        default=None,
        metavar="K",
        help="devices per process: K fake CPU devices on CPU, K GPUs each on GPU",
    )
    p.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
    p.add_argument(
        "--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL on failure"
    )
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    p.set_defaults(handler=run_launch)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(base: dict[str, str], n: int, i: int, port: int, k: int | None) -> dict[str, str]:
    """The environment of process i of n."""
    env = dict(base)
    env[ENV_COORDINATOR] = f"127.0.0.1:{port}"
    env[ENV_NUM_PROCESSES] = str(n)
    env[ENV_PROCESS_ID] = str(i)
    env["PYTHONUNBUFFERED"] = "1"
    if k is not None:
        flags = [
            f
            for f in env.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")
        ]
        env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={k}"])
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i * k + j) for j in range(k))
    return env


def run_launch(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise UserError("scaling launch needs a command after --, e.g. -- scaling train tiny")
    n, k = args.num_processes, args.devices_per_process
    if n < 1:
        raise UserError(f"-n {n} must be >= 1")
    if k is not None and k < 1:
        raise UserError(f"--devices-per-process {k} must be >= 1")
    if not args.grace >= 0:  # nan and negatives were a SIGKILL at once, silently
        raise UserError(
            f"--grace {args.grace} must be a number of seconds >= 0 (the wait between "
            f"SIGTERM and SIGKILL when a process fails), e.g. --grace 10"
        )
    if args.port is not None and not 1 <= args.port <= 65535:
        raise UserError(
            f"--port {args.port} is not a TCP port; pass one in 1..65535, or leave --port out "
            f"to use a free one"
        )
    port = args.port or free_port()
    procs: list[subprocess.Popen] = []
    try:
        for i in range(n):
            env = child_env(dict(os.environ), n, i, port, k)
            procs.append(subprocess.Popen(cmd, env=env))
    except FileNotFoundError:
        _stop(procs, args.grace)
        raise UserError(f"command not found: {cmd[0]!r}; pass a full path or fix PATH") from None
    return _supervise(procs, args.grace)


def _supervise(procs: list[subprocess.Popen], grace: float) -> int:
    """Wait for all; on the first failure stop the rest. Forward SIGINT/SIGTERM."""
    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = 0
        while [p.poll() for p in procs].count(None):  # poll every one (no short-circuit)
            bad = [_code(p.returncode) for p in procs if p.returncode not in (None, 0)]
            if bad and code == 0:
                code = bad[0]
                if not received:  # after a forwarded signal every process is stopping anyway
                    print(
                        f"scaling launch: a process exited with code {code}; stopping the others",
                        file=sys.stderr,
                    )
                _stop(procs, grace)
                break
            time.sleep(0.1)
        if code == 0:
            code = next((_code(p.returncode) for p in procs if p.returncode), 0)
        if received and code == 0:
            code = 128 + received[0]
        return code
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _code(returncode: int) -> int:
    """A child's exit status as a shell reports it (killed by signal s -> 128 + s)."""
    return 128 - returncode if returncode < 0 else returncode


def _stop(procs: list[subprocess.Popen], grace: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
