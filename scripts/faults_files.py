"""The input and file sections of `make faults`: malformed inputs, damaged bookkeeping files,
and a full disk. Imported by scripts/faults.py (which puts the repository and tests/cli/ on
sys.path first)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from faults_run import GRID, TALLY, call, clean, record, scaling, train_argv
from fuzz_cases import CASES, CSV_OK, MAP
from test_fuzz_inputs import run_case

from sweeps import registry as R

FAKE = ["--train-fn", "sweeps.fake:fake_train", "--no-progress"]
DAMAGE: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "results.jsonl torn last line": ("results.jsonl", lambda b: b + b'{"run_id": "x", "sw'),
    "results.jsonl non-UTF-8 line": ("results.jsonl", lambda b: b + b"\xff\xfe\x00\n"),
    "plan.json cut short": ("plan.json", lambda b: b[: len(b) // 2]),
    "plan.json non-UTF-8": ("plan.json", lambda b: b"\xff" + b),
    "lease garbage": ("leases/{a}.json", lambda b: b"\x00garbage"),
    "failed.json garbage": ("runs/{b}/failed.json", lambda b: b"{not json"),
    "result.json garbage": ("runs/{b}/result.json", lambda b: b"\xff\xfe"),
    "result.json wrong shape": ("runs/{b}/result.json", lambda b: b"[1, 2, 3]"),
}


def bad_inputs() -> None:
    results = TALLY.results
    for cid, argv, files in CASES:
        with tempfile.TemporaryDirectory() as d:
            _, _, problem = run_case(argv, files, Path(d))
        if problem:
            record("bad inputs", cid, False, problem)
        else:
            results.setdefault("bad inputs", []).append((cid, True, ""))
    n = len(results["bad inputs"])
    print(f"  bad inputs: {sum(ok for _, ok, _ in results['bad inputs'])}/{n}", flush=True)


def damaged_files(tmp: Path) -> None:
    grid = tmp / "g.toml"
    grid.write_text(GRID.format(tokens="2e4, 4e4"))
    for what, (rel, fn) in DAMAGE.items():
        for command in ("sweep run", "sweep status"):
            root = tmp / f"dmg-{len(TALLY.results.get('damaged files', []))}"
            why = _damaged_sweep(grid, root, what, rel, fn, command)
            record("damaged files", f"{what} / {command}", not why, why)
    _damaged_config(tmp)


def _damaged_sweep(
    grid: Path, root: Path, what: str, rel: str, fn: Callable[[bytes], bytes], command: str
) -> str:
    """Two cells recorded in-process, one file damaged, then `command`: '' when no traceback,
    no record lost, and the command ends as promised; else what went wrong."""
    from scaling.cli import main

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        main(["sweep", "run", str(grid), "--out", str(root), "--max-runs", "2", *FAKE])
    before = {r["run_id"] for r in R.read_records(root)}
    plan = R.read_plan(root)
    ids = [c["run_id"] for c in plan["cells"]]
    path = root / rel.format(a=ids[2], b=ids[3])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(fn(path.read_bytes() if path.is_file() else b""))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        args = ["sweep", "status", str(root)]
        if command == "sweep run":
            args = ["sweep", "run", str(grid), "--out", str(root), *FAKE]
        try:
            code = main(args)
        except BaseException as e:  # noqa: BLE001 - the suite reports, never crashes
            code, err = -1, io.StringIO(f"Traceback: {e!r}")
    text = err.getvalue()
    after = {r["run_id"] for r in R.read_records(root)}
    lost = len(before - after)
    TALLY.records_lost += lost
    errors = [x for x in text.splitlines() if x.startswith("error:")]
    plan_damage = what.startswith("plan.json") and command == "sweep status"
    if "Traceback" in text:
        return "traceback"
    if lost:
        return f"{lost} record(s) lost"
    if plan_damage:  # status cannot guess the plan: one line naming the file + fix
        ok = code == 2 and len(errors) == 1 and "plan.json" in errors[0]
        return "" if ok else f"exit {code}: {text[-300:]}"
    if code != 0 or errors:
        return f"exit {code}: {text[-300:]}"
    if command == "sweep run" and len(after) != len(ids):
        return f"{len(after)} of {len(ids)} cells recorded"
    return ""


def _damaged_config(tmp: Path) -> None:
    """config.toml garbage under the real engine: in a run dir named for its run id (a warning,
    the run goes on), and in any other dir (exit 2, one line)."""
    run = tmp / "cfg-run"
    p = call(train_argv(run, 4))
    rid = json.loads((run / "result.json").read_text())["run_id"] if run.is_dir() else "?"
    named = tmp / f"tiny-{rid}"
    shutil.move(run, named)
    (named / "config.toml").write_bytes(b"\xff\xfe garbage")
    (named / "result.json").unlink()
    p = call(train_argv(named, 4))
    ok = p.returncode == 0 and "Traceback" not in p.stderr and "damaged" in p.stderr
    record(
        "damaged files", "config.toml garbage / train (dir named for the run)", ok, p.stderr[-300:]
    )
    other = tmp / "cfg-other"
    shutil.copytree(named, other)
    (other / "result.json").unlink(missing_ok=True)
    (other / "config.toml").write_bytes(b"\xff\xfe garbage")
    p = call(train_argv(other, 4))
    why = clean(p.returncode, p.stderr, 2)
    record("damaged files", "config.toml garbage / train (other dir): one line", not why, why)


def disk_full(tmp: Path) -> None:
    mnt = tmp / "tiny-disk"
    mnt.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        != 0
    ):
        print("  disk full: cannot mount a tmpfs (needs root); skipped", flush=True)
        return
    try:
        _full_train(mnt)
        _full_sweep(tmp, mnt)
        _full_analyze(tmp, mnt)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def _fill(mnt: Path, leave: int) -> None:
    """Fill the tiny disk up to `leave` free bytes."""
    free = shutil.disk_usage(mnt).free
    with open(mnt / "filler", "ab") as f:
        f.write(b"\0" * max(0, free - leave))


def _full_train(mnt: Path) -> None:
    """train: the checkpoint does not fit."""
    _fill(mnt, 60_000)
    p = call(train_argv(mnt / "run", 30))
    why = clean(p.returncode, p.stderr, 1)
    if not why and "no space left on device writing" not in p.stderr:
        why = p.stderr[-300:]
    record("disk full", "train: checkpoint save", not why, why)
    shutil.rmtree(mnt / "run", ignore_errors=True)
    (mnt / "filler").unlink()


def _full_sweep(tmp: Path, mnt: Path) -> None:
    """sweep run: two cells recorded, then the disk fills."""
    grid = tmp / "df.toml"
    grid.write_text(GRID.format(tokens="2e4, 4e4"))
    root = mnt / "sw"
    p = call(scaling("sweep", "run", str(grid), "--out", str(root), "--max-runs", "2", *FAKE))
    if p.returncode != 0:
        raise RuntimeError(f"the first two cells did not run: {p.stderr[-300:]}")
    before = (root / "results.jsonl").read_bytes()
    _fill(mnt, 0)
    p = call(scaling("sweep", "run", str(grid), "--out", str(root), *FAKE))
    lines = [x for x in p.stderr.splitlines() if x.startswith("error:")]
    why = "" if p.returncode == 1 and len(lines) == 1 else f"exit {p.returncode}: {p.stderr[-300:]}"
    if not why and "Traceback" in p.stderr:
        why = "traceback"
    if not why and "no space left on device writing" not in lines[0]:
        why = lines[0]
    if not why and (root / "results.jsonl").read_bytes() != before:
        why = "results.jsonl changed"
        TALLY.records_lost += 1
    if not why and list((root / "leases").glob("*.json")):
        why = "lease left behind"
    (mnt / "filler").unlink()
    if not why:
        p = call(scaling("sweep", "run", str(grid), "--out", str(root), *FAKE))
        if p.returncode != 0 or len(R.read_records(root)) != 4:
            why = f"after freeing space the rerun did not finish: {p.stderr[-300:]}"
    record("disk full", "sweep run: stops cleanly, results intact, resumes", not why, why)


def _full_analyze(tmp: Path, mnt: Path) -> None:
    """analyze writing its report."""
    csv = tmp / "t.csv"
    csv.write_text(CSV_OK)
    _fill(mnt, 0)
    report = ["--holdout", "none", "--no-approach2", "--out", str(mnt / "report")]
    p = call(scaling("analyze", "--csv", str(csv), *MAP, "--resamples", "10", *report))
    why = clean(p.returncode, p.stderr, 1)
    record("disk full", "analyze: report", not why, why)
