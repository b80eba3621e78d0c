"""`make faults`: the fault suite of issue 12, run for real, with the figures it reports.

    bad inputs handled        every case of tests/cli/fuzz_cases.py: exit 2, one `error:` line,
                              no traceback, no file written (in-process)
    damaged-file cases        torn / non-UTF-8 / garbage bookkeeping files under `sweep run`,
                              `sweep status` and `train`: no traceback, every intact record kept
    signal cases clean        SIGINT/SIGTERM (once, twice, at startup; SIGINT
                              three times: exits at once) to real `train` and
                              `sweep run` processes: 130/143, one line, no segfault, lease
                              released, newest checkpoint = the interrupt step
    disk-full cases clear     a real tiny tmpfs (needs root; skipped otherwise): exit 1, one
                              `no space left on device writing X` line, earlier results intact
    kill-and-resume bitwise   kill -9 mid-step / mid-save, SIGINT, SIGTERM, then resume: the
                              final loss and every logged loss equal an uninterrupted run's
    records lost              finished results.jsonl records missing after any fault

Run: `make faults` (about 5-10 minutes on 2 CPU cores; it spawns real training processes).
Exit code 0 only when every line is 100% and no record was lost. This file is the driver; the
harness (tally, child processes) is faults_run.py, the sections are faults_files.py (inputs,
damaged files, full disk) and faults_stops.py (signals, kill and resume).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "cli"), str(ROOT / "scripts")]

from faults_files import bad_inputs, damaged_files, disk_full  # noqa: E402
from faults_run import TALLY, record  # noqa: E402
from faults_stops import kill_and_resume, signal_cases  # noqa: E402

SECTIONS: list[tuple[str, Callable[..., None]]] = [
    ("bad inputs", bad_inputs),
    ("damaged files", damaged_files),
    ("signals", signal_cases),
    ("disk full", disk_full),
    ("kill-and-resume", kill_and_resume),
]


def main() -> int:
    sections = SECTIONS
    only = sys.argv[1:]
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="faults-") as d:
        for name, fn in sections:
            if only and name.split()[0] not in only:
                continue
            print(f"{name} ...", flush=True)
            sub = Path(d) / name.replace(" ", "-")
            sub.mkdir()
            try:
                if name == "bad inputs":
                    fn()
                else:
                    fn(sub)
            except Exception as e:  # noqa: BLE001 - one broken section must not hide the others
                record(name, "the section itself", False, f"crashed: {e!r}"[-400:])
    print(f"\nfault suite ({time.time() - t0:.0f} s):")
    labels = {
        "bad inputs": "bad inputs handled",
        "damaged files": "damaged-file cases handled",
        "signals": "signal cases clean",
        "disk full": "disk-full cases clear",
        "kill-and-resume": "kill-and-resume cases bitwise",
    }
    ok_all = TALLY.records_lost == 0
    for key, label in labels.items():
        rows = TALLY.results.get(key, [])
        n_ok = sum(ok for _, ok, _ in rows)
        pct = f"{100 * n_ok / len(rows):.0f}%" if rows else "n/a"
        print(f"  {label:<30} {n_ok}/{len(rows)} ({pct})")
        ok_all &= n_ok == len(rows)
    print(f"  {'records lost':<30} {TALLY.records_lost}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
