"""Several processes, one model: who am I, who coordinates, and `jax.distributed.initialize`.

Three ways to say it, first match wins for each value:
1. flags: `scaling train --coordinator HOST:PORT --num-processes N --process-id I`;
2. env: JAX_COORDINATOR_ADDRESS (which JAX itself reads), JAX_NUM_PROCESSES, JAX_PROCESS_ID
   (what `scaling launch` sets for its children);
3. SLURM: inside an `srun` step with SLURM_NTASKS > 1, the count and id come from SLURM_NTASKS /
   SLURM_PROCID and JAX derives the coordinator from the step's first node and the job id.
   (OpenMPI's mpirun and multi-host TPU VMs are detected by JAX itself.)

Nothing of these: one process. Errors are `UserError` (one line, exit 2) and come before any
JAX work: an id out of range, a count without an address, an address that does not parse,
process 0's coordinator port in use.
JAX aborts the whole process (no exception) when it cannot reach the coordinator, so
`initialize` first waits for the coordinator's port itself and raises a clear `UserError` after
`--coordinator-timeout` seconds instead. This module imports JAX only inside `initialize`.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from scaling.errors import UserError

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_TIMEOUT = "SCALING_COORDINATOR_TIMEOUT"
DEFAULT_TIMEOUT_S = 300


@dataclass(frozen=True)
class ProcessSetup:
    """Where this process stands. `source`: flags | env | slurm | auto (JAX detects) | single."""

    num_processes: int = 1
    process_id: int = 0
    coordinator: str | None = None
    source: str = "single"
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def multi(self) -> bool:
        return self.num_processes > 1 or self.source == "auto"


def _int(value: str | int | None, what: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{what} = {value!r} is not an integer; pass a whole number") from None


def _slurm_step(env: Mapping[str, str]) -> tuple[int, int] | None:
    """(ntasks, procid) inside a multi-task srun step, else None (an sbatch with one task)."""
    n = _int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS"), "SLURM_NTASKS")
    pid = _int(env.get("SLURM_PROCID"), "SLURM_PROCID")
    if n is None or n <= 1 or pid is None or "SLURM_STEP_NODELIST" not in env:
        return None
    return n, pid


def resolve(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> ProcessSetup:
    """This process's setup from flags (arguments), then env, then SLURM. UserError if bad."""
    env = os.environ if environ is None else environ
    flags = any(x is not None for x in (coordinator, num_processes, process_id))
    coord = coordinator or env.get(ENV_COORDINATOR) or None
    n = num_processes
    if n is None:
        n = _int(env.get(ENV_NUM_PROCESSES), ENV_NUM_PROCESSES)
    pid = process_id
    if pid is None:
        pid = _int(env.get(ENV_PROCESS_ID), ENV_PROCESS_ID)
    timeout_s = _timeout(timeout_s, env)
    source = "flags" if flags else "env"
    n_name = "--num-processes" if num_processes is not None else ENV_NUM_PROCESSES
    pid_name = "--process-id" if process_id is not None else ENV_PROCESS_ID
    if coord is None and n is None and pid is None:
        step = _slurm_step(env)
        if step is not None:
            return ProcessSetup(step[0], step[1], None, "slurm", timeout_s)
        if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1 or "," in env.get(
            "TPU_WORKER_HOSTNAMES", ""
        ):
            return ProcessSetup(1, 0, None, "auto", timeout_s)
        return ProcessSetup(timeout_s=timeout_s)
    if n is None and coord is not None and (step := _slurm_step(env)) is not None:
        n_name, source = "SLURM_NTASKS", "slurm"
        n, pid, pid_name = step[0], *((step[1], "SLURM_PROCID") if pid is None else (pid, pid_name))
    if n is None:
        given = f"a coordinator ({coord})" if coord is not None else _said(pid_name, pid)
        raise UserError(
            f"{given} is given but not the number of processes; pass "
            f"--num-processes N --process-id I (or set {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID}) "
            f"on every process, or start them all with `scaling launch -n N -- scaling train ...`"
        )
    if n < 1:
        raise UserError(f"{_said(n_name, n)} must be >= 1 (the number of processes)")
    if pid is None:
        pid = 0 if n == 1 else None
    if pid is None:
        raise UserError(
            f"{_said(n_name, n)} needs --process-id (or {ENV_PROCESS_ID}) on every process: "
            f"0 on the coordinator's host, 1..{n - 1} on the others"
        )
    if not 0 <= pid < n:
        raise UserError(f"{_said(pid_name, pid)} is out of range for {n} processes; use 0..{n - 1}")
    if n > 1 and coord is None:
        raise UserError(
            f"{n} processes need a coordinator: pass --coordinator HOST:PORT (or set "
            f"{ENV_COORDINATOR}), the address of process 0's host and a free port"
        )
    if coord is not None:
        _split(coord)
    return ProcessSetup(n, pid, coord, source, timeout_s)


def _said(name: str, value: object) -> str:
    """How the user gave a value: `--flag V` for a flag, `VAR=V` for an environment variable."""
    return f"{name} {value}" if name.startswith("--") else f"{name}={value}"


def _timeout(value: float | None, env: Mapping[str, str]) -> float:
    """Seconds to wait for the coordinator: the flag, else SCALING_COORDINATOR_TIMEOUT, else
    the default; a finite number > 0, or UserError naming where the bad value came from."""
    where = "--coordinator-timeout"
    if value is None:
        raw = env.get(ENV_TIMEOUT, "").strip()
        if not raw:
            return float(DEFAULT_TIMEOUT_S)
        where = ENV_TIMEOUT
        try:
            value = float(raw)
        except ValueError:
            raise UserError(
                f"{ENV_TIMEOUT}={raw!r} is not a number; set it to seconds, e.g. 300, or unset it"
            ) from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(
            f"{_said(where, format(value, 'g'))}: the coordinator timeout must be a finite "
            f"number of seconds > 0, e.g. 300"
        )
    return float(value)


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(
            f"coordinator address {address!r} is not HOST:PORT; e.g. --coordinator 10.0.0.1:12355"
        )
    return host.strip("[]"), int(port)


def _port_in_use(host: str, port: int) -> UserError:
    return UserError(
        f"process 0 cannot start the coordinator on {host}:{port}: the port is in use (another "
        f"job, or a run still stopping); pass a free port in --coordinator HOST:PORT (or "
        f"{ENV_COORDINATOR}), or leave `scaling launch --port` out to use a free one"
    )


def _check_coordinator_host(host: str, port: int) -> None:
    """Process 0 runs the coordinator service, so its host must be an address of this machine
    and the port free there (JAX's failure to listen is a bare 'Failed to start RPC server')."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(
            f"coordinator host {host!r} does not resolve ({e}); fix --coordinator"
        ) from None
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as s:
            try:
                s.bind((addr[0], 0))
            except OSError:
                continue
        _check_port_free(family, kind, proto, addr[0], host, port)
        return
    raise UserError(
        f"process 0 runs the coordinator, but {host} is not an address of this machine "
        f"({socket.gethostname()}); pass --coordinator with this host's address, or run "
        f"process 0 on {host}"
    )


def _check_port_free(family: int, kind: int, proto: int, addr: str, host: str, port: int) -> None:
    """UserError when the coordinator's port cannot be listened on at this local address."""
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server binds
        try:
            s.bind((addr, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise _port_in_use(host, port) from None
            if e.errno == errno.EACCES:
                raise UserError(
                    f"process 0 may not listen on port {port} of {host} (ports below 1024 "
                    f"need root); pass a port >= 1024 in --coordinator HOST:PORT"
                ) from None


def _wait_for_coordinator(host: str, port: int, timeout_s: float, setup: ProcessSetup) -> None:
    """Retry a TCP connect to the coordinator until it answers; UserError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: OSError | None = None
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, timeout_s)):
                return
        except OSError as e:
            last = e
        if time.monotonic() >= deadline:
            raise UserError(
                f"cannot reach the coordinator {host}:{port} within {timeout_s:g} s (process "
                f"{setup.process_id} of {setup.num_processes}; last error: {last}); check that "
                f"process 0 is running and that the address is reachable from this host, or "
                f"raise --coordinator-timeout"
            )
        time.sleep(0.2)


def initialize(setup: ProcessSetup) -> bool:
    """`jax.distributed.initialize` for a multi-process setup (no-op for one process, or when
    already initialised). Returns True when this is one process of several."""
    import jax  # noqa: PLC0415 - heavy; only here

    if jax.distributed.is_initialized():
        return True
    if not setup.multi:
        return False
    timeout = max(1, int(setup.timeout_s))
    handlers = _signal_handlers()
    try:
        _initialize(jax, setup, timeout)
    finally:
        _restore_signal_handlers(handlers)
    return True


def _signal_handlers() -> dict[int, object]:
    """SIGINT/SIGTERM handlers now (main thread only; elsewhere signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(handlers: dict[int, object]) -> None:
    """Put back the handlers `jax.distributed.initialize` replaced: its preemption notifier
    takes SIGTERM for itself (and only logs it), so a SIGTERM would no longer stop the run
    (`scaling.signals`: save and exit 143). The signals received so far stay counted. Set
    even when `signal.getsignal` still names ours: JAX replaces the C-level handler behind
    Python's back, so Python's table does not know."""
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)  # type: ignore[arg-type]


def _initialize(jax, setup: ProcessSetup, timeout: int) -> None:
    if setup.source == "auto":  # mpirun / TPU VM: JAX's own cluster detection
        jax.distributed.initialize(initialization_timeout=timeout)
        return
    if setup.coordinator is not None:
        host, port = _split(setup.coordinator)
        if setup.process_id == 0:
            _check_coordinator_host(host, port)
        else:
            _wait_for_coordinator(host, port, setup.timeout_s, setup)
    try:
        jax.distributed.initialize(
            coordinator_address=setup.coordinator,  # None under SLURM: JAX derives it
            num_processes=setup.num_processes,
            process_id=setup.process_id,
            initialization_timeout=timeout,
            # explicit values: do not let a surrounding SLURM allocation override them
            cluster_detection_method="deactivate" if setup.coordinator is not None else None,
        )
    except Exception as e:  # the port taken since the check, or on another interface (JAX
        # listens on all of them)
        if setup.coordinator and setup.process_id == 0 and "Failed to start RPC server" in str(e):
            raise _port_in_use(*_split(setup.coordinator)) from None
        raise


_votes = 0


def agree_stop(signum: int | None, stop: bool, steps: int) -> tuple[int | None, bool, int]:
    """What every process does next in the step loop, agreed at each chunk boundary: (the first
    signal any process received, whether any process was asked to stop, the steps of the next
    call: process 0's). One process stopping alone would leave the others waiting in the next
    step's collectives (and rank 0 alone may be asked to stop: a sweep cell's lease lost); the
    chunk sizes (timed per process) must agree so that all reach the same steps. One process:
    as given. Costs one coordinator barrier per chunk, taken while the devices run the chunk
    in flight."""
    import jax  # noqa: PLC0415

    if jax.process_count() == 1:
        return signum, stop, steps
    from jax._src import distributed as jd  # noqa: PLC0415 - the coordination service client

    global _votes
    _votes += 1
    client, key = jd.global_state.client, f"scaling/loop/{_votes}"
    client.key_value_set(f"{key}/{jax.process_index()}", f"{signum or 0}:{int(stop)}:{steps}")
    client.wait_at_barrier(f"{key}/barrier", 3_600_000)
    if jax.process_index() == 0 and _votes > 1:  # every process has read the previous vote
        client.key_value_delete(f"scaling/loop/{_votes - 1}")
    votes = {int(k.rsplit("/", 1)[1]): v.split(":") for k, v in client.key_value_dir_get(key + "/")}
    signums = sorted(int(v[0]) for v in votes.values() if int(v[0]))
    stop_any = any(int(v[1]) for v in votes.values())
    return (signums[0] if signums else None), stop_any, int(votes[0][2])
