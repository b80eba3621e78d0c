"""Atomic writes and file locks shared by the engine, sweeps and analysis."""

import os
import threading
import time

from scaling.fileio import atomic_write, file_lock


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "result.json"
    atomic_write(path, "old")
    atomic_write(path, b"new content")
    assert path.read_bytes() == b"new content"
    assert sorted(os.listdir(path.parent)) == ["result.json"]


def test_failed_write_keeps_old_content(tmp_path):
    path = tmp_path / "result.json"
    atomic_write(path, "old")
    try:
        atomic_write(path, object())  # not bytes: fails before the replace
    except (TypeError, AttributeError):
        pass
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["result.json"]


def _hold(lock_path, log_path, tag):
    with file_lock(lock_path):
        with open(log_path, "a") as f:
            f.write(f"{tag}-in\n")
        time.sleep(0.3)
        with open(log_path, "a") as f:
            f.write(f"{tag}-out\n")


def test_file_lock_excludes_other_holders(tmp_path):
    # each holder opens its own descriptor, so flock excludes threads just as it does processes
    lock, log = tmp_path / ".lock", tmp_path / "log"
    procs = [threading.Thread(target=_hold, args=(lock, log, t)) for t in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(10)
    lines = log.read_text().split()
    assert len(lines) == 4
    assert lines[0][0] == lines[1][0] and lines[2][0] == lines[3][0]  # never interleaved
