"""A lease whose owner on this host has exited but is not yet reaped (a zombie) is stale.

`sweep run --workers 2`: a worker killed by SIGKILL (the OOM killer) stays a zombie until the
first launcher reaps it, and that launcher reaps its workers only after waiting for every cell,
the dead worker's among them: with the zombie counted as alive, the sweep waited forever.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from sweeps.lease import HOST, Lease, is_stale, live_leases


def _zombie_child() -> subprocess.Popen:
    """A child that has exited and is not reaped (Popen.poll/wait never called)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{p.pid}/stat").read_text()
        if stat.rpartition(")")[2].split()[0] == "Z":
            return p
        time.sleep(0.02)
    raise AssertionError("the child did not exit")


def test_lease_of_an_unreaped_dead_owner_is_taken_over(tmp_path: Path) -> None:
    p = _zombie_child()
    try:
        info = dict(owner="vm:dead:1", host=HOST, pid=p.pid, expires=time.time() + 3600, ttl=120.0)
        assert is_stale(info)
        assert is_stale(info, path=tmp_path / "leases" / "r.json")
        leases = tmp_path / "leases"
        leases.mkdir()
        (leases / "r.json").write_text(json.dumps(info))
        assert live_leases(leases) == {}  # `sweep status` no longer shows it running
        lease = Lease(leases, "r", "vm:me:2", ttl=120.0)
        assert lease.acquire()  # a waiting launcher takes the cell over
        lease.release()
    finally:
        p.wait()


def test_lease_of_a_live_owner_on_this_host_is_not_stale() -> None:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        info = dict(owner="vm:live:1", host=HOST, pid=p.pid, expires=0.0, ttl=120.0)
        assert not is_stale(info)
    finally:
        p.kill()
        p.wait()


def test_lease_whose_pid_now_names_another_process_is_taken_over(tmp_path: Path) -> None:
    """A lease left before a reboot: its pid is alive, but it is another process (it started
    at another time), so the lease is stale; the same pid and start time hold it."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        start = int(Path(f"/proc/{p.pid}/stat").read_text().rpartition(")")[2].split()[19])
        info = dict(owner="vm:1:old", host=HOST, pid=p.pid, expires=0.0, ttl=120.0)
        assert is_stale(dict(info, pid_start=start + 1))
        assert not is_stale(dict(info, pid_start=start))
        leases = tmp_path / "leases"
        leases.mkdir()
        (leases / "r.json").write_text(json.dumps(dict(info, pid_start=start + 1)))
        lease = Lease(leases, "r", "vm:me:2", ttl=120.0)
        assert lease.acquire()  # a waiting launcher takes the cell over
        mine = json.loads((leases / "r.json").read_text())
        assert mine["pid_start"] == int(
            Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19]
        )
        assert not is_stale(mine)  # this process's own lease is live
        lease.release()
    finally:
        p.kill()
        p.wait()


def test_a_worker_killed_by_a_signal_is_reported(tmp_path: Path, monkeypatch, capsys) -> None:
    """A --workers launcher killed by SIGKILL (the OOM killer) was never mentioned: its cell was
    quietly taken over. The first launcher now says which one died, and of what."""
    import argparse
    from types import SimpleNamespace

    from sweeps import cli
    from sweeps import workers as W

    monkeypatch.setattr(W, "start", lambda n, argv: ["w2"])
    monkeypatch.setattr(W, "wait", lambda procs: [-9])
    monkeypatch.setattr(W, "outcome", lambda root, ids, t0: {})
    monkeypatch.setattr(cli, "_summary", lambda plan, root, counts: 0)
    args = argparse.Namespace(grid="g", overrides=[], train_fn=None, workers=2)
    plan = SimpleNamespace(cells=[SimpleNamespace(run_id=r) for r in ("a", "b")])
    assert cli._run_workers(args, tmp_path, plan, 120.0, lambda t0, n: None) == 0
    err = capsys.readouterr().err
    assert "warning: launcher 2 of 2 was killed by signal 9 (Killed)" in err
