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
Exit code 0 only when every line is 100% and no record was lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fuzz_cases import CASES  # noqa: E402
from test_fuzz_inputs import run_case  # noqa: E402

from sweeps import registry as R  # noqa: E402

ENV = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
TRAIN_SETS = [
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
GRID = """name = "faults"
kind = "nxd"
[nxd]
tokens = [{tokens}]
[shapes]
n_min = 3e3
n_max = 9e3
count = 2
[hparams]
batch_size = 8
batch_multiple = 8
min_steps = 1
[base.model]
seq_len = 32
[base.data]
dataset = "python_source/small"
val_tokens = 2048
task_mix = 0.0
[base.train]
log_every = 1
checkpoint_every = 25
[base.eval]
enabled = false
"""
results: dict[str, list[tuple[str, bool, str]]] = {}
records_lost = 0


def record(section: str, name: str, ok: bool, why: str = "") -> None:
    results.setdefault(section, []).append((name, ok, why))
    print(f"  [{'ok' if ok else 'FAIL'}] {section}: {name}{'' if ok else ' - ' + why}", flush=True)


@dataclass
class Ran:
    """How a child process ended: `returncode` None when it hung past its timeout (killed)."""

    returncode: int | None
    stdout: str
    stderr: str


def spawn(argv: list[str]) -> subprocess.Popen:
    """Start a child in its own process group, so that a hung one is killed with its children."""
    return subprocess.Popen(
        argv,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group this suite started for `proc` (by its PID)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def finish(proc: subprocess.Popen, timeout: float) -> Ran:
    """Wait for `proc`; a child still running after `timeout` s is killed and reported hung."""
    try:
        out, err = proc.communicate(timeout=timeout)
        return Ran(proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # a grandchild that left the group holds the pipes
            out, err = "", ""
        return Ran(None, out or "", f"hung: still running after {timeout:.0f} s, killed; {err}")
    finally:
        kill_group(proc)


def call(argv: list[str], timeout: float = 300) -> Ran:
    return finish(spawn(argv), timeout)


def scaling(*args: str) -> list[str]:
    return [sys.executable, "-m", "scaling.cli", *args]


def train_argv(out: Path, steps: int, *extra: str) -> list[str]:
    sets = [*TRAIN_SETS, f"train.steps={steps}"]
    return scaling("train", "tiny", "--out", str(out), "--no-progress", *extra) + [
        x for s in sets for x in ("--set", s)
    ]


def last_step(metrics: Path) -> int:
    recs = R.read_jsonl(metrics, quiet=True) if metrics.is_file() else []
    return max((r.get("step", 0) for r in recs), default=0)


def wait_for(pred: Callable[[], bool], proc: subprocess.Popen, timeout: float = 600) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if pred():
            return True
        time.sleep(0.05)
    return False


def clean(code: int, err: str, want: int) -> str:
    """'' when the process ended as promised, else what went wrong."""
    if code != want:
        return f"exit {code}, want {want}: {err.strip()[-300:]}"
    if "Traceback" in err or "Segmentation" in err or "Fatal Python" in err:
        return f"traceback or crash: {err.strip()[-300:]}"
    if len([x for x in err.splitlines() if x.strip()]) != 1:
        return f"want one line on stderr, got: {err.strip()[-400:]}"
    return ""


def ckpt_steps(run: Path) -> list[int]:
    d = run / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


# ----------------------------------------------------------------------------- sections


def bad_inputs() -> None:
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
    global records_lost
    import contextlib
    import io

    from scaling.cli import main

    grid = tmp / "g.toml"
    grid.write_text(GRID.format(tokens="2e4, 4e4"))
    fake = ["--train-fn", "sweeps.fake:fake_train", "--no-progress"]
    damage = {
        "results.jsonl torn last line": ("results.jsonl", lambda b: b + b'{"run_id": "x", "sw'),
        "results.jsonl non-UTF-8 line": ("results.jsonl", lambda b: b + b"\xff\xfe\x00\n"),
        "plan.json cut short": ("plan.json", lambda b: b[: len(b) // 2]),
        "plan.json non-UTF-8": ("plan.json", lambda b: b"\xff" + b),
        "lease garbage": ("leases/{a}.json", lambda b: b"\x00garbage"),
        "failed.json garbage": ("runs/{b}/failed.json", lambda b: b"{not json"),
        "result.json garbage": ("runs/{b}/result.json", lambda b: b"\xff\xfe"),
        "result.json wrong shape": ("runs/{b}/result.json", lambda b: b"[1, 2, 3]"),
    }
    for what, (rel, fn) in damage.items():
        for command in ("sweep run", "sweep status"):
            root = tmp / f"dmg-{len(results.get('damaged files', []))}"
            with (
                contextlib.redirect_stderr(io.StringIO()),
                contextlib.redirect_stdout(io.StringIO()),
            ):
                main(["sweep", "run", str(grid), "--out", str(root), "--max-runs", "2", *fake])
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
                    args = ["sweep", "run", str(grid), "--out", str(root), *fake]
                try:
                    code = main(args)
                except BaseException as e:  # noqa: BLE001 - the suite reports, never crashes
                    code, err = -1, io.StringIO(f"Traceback: {e!r}")
            text = err.getvalue()
            after = {r["run_id"] for r in R.read_records(root)}
            lost = len(before - after)
            records_lost += lost
            errors = [x for x in text.splitlines() if x.startswith("error:")]
            plan_damage = what.startswith("plan.json") and command == "sweep status"
            if "Traceback" in text:
                why = "traceback"
            elif lost:
                why = f"{lost} record(s) lost"
            elif plan_damage:  # status cannot guess the plan: one line naming the file + fix
                ok = code == 2 and len(errors) == 1 and "plan.json" in errors[0]
                why = "" if ok else f"exit {code}: {text[-300:]}"
            elif code != 0 or errors:
                why = f"exit {code}: {text[-300:]}"
            elif command == "sweep run" and len(after) != len(ids):
                why = f"{len(after)} of {len(ids)} cells recorded"
            else:
                why = ""
            record("damaged files", f"{what} / {command}", not why, why)
    # config.toml garbage under the real engine (a run dir named for its run id)
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


def signal_cases(tmp: Path) -> None:
    def one(
        name: str,
        argv: list[str],
        run: Callable[[], Path],
        sig: int,
        *,
        times=1,
        at_start=False,
        want_ckpt=True,
    ) -> None:
        # a case that resumes an interrupted run waits for 10 new steps, not for the old ones
        target = max(30, last_step(run() / "metrics.jsonl") + 10)
        proc = spawn(argv)
        try:
            if at_start:
                time.sleep(2.0)  # importing JAX / preparing data: before the step loop
            elif not wait_for(lambda: last_step(run() / "metrics.jsonl") >= target, proc):
                why = f"never reached step {target}: " + finish(proc, 60).stderr[-300:]
                record("signals", name, False, why)
                return
            for i in range(times):  # the later ones come while the first one's save runs
                proc.send_signal(sig)
                time.sleep(0.05 if i + 1 < times else 0)
            ran = finish(proc, 120)
        finally:
            kill_group(proc)
        why = clean(ran.returncode, ran.stderr, 128 + sig)
        if not why and "interrupted by" not in ran.stderr:
            why = f"no 'interrupted by' line: {ran.stderr[-200:]}"
        if not why and times >= 3 and f"({times} signals)" not in ran.stderr:
            why = f"the third signal did not end it at once: {ran.stderr[-200:]}"
        if not why and want_ckpt:
            steps = ckpt_steps(run())
            at = last_step(run() / "metrics.jsonl")
            if not steps or steps[-1] != at:
                why = f"newest checkpoint {steps[-1:]} is not the interrupt step {at}"
        leases = list(run().parent.parent.glob("leases/*.json")) if "sweep" in argv else []
        if not why and leases:
            why = f"lease left behind: {leases}"
        record("signals", name, not why, why)

    for sig in (signal.SIGINT, signal.SIGTERM):
        nm = signal.Signals(sig).name
        out = tmp / f"train-{nm}"
        one(f"train {nm} mid-run", train_argv(out, 100000), lambda o=out: o, sig)
        out2 = tmp / f"train-{nm}-twice"
        one(
            f"train {nm} twice",
            train_argv(out2, 100000),
            lambda o=out2: o,
            sig,
            times=2,
        )
        if sig == signal.SIGINT:  # the user insists: the third one exits at once, one line
            out4 = tmp / f"train-{nm}-thrice"
            argv4 = train_argv(out4, 100000)
            one(f"train {nm} three times", argv4, lambda o=out4: o, sig, times=3, want_ckpt=False)
        out3 = tmp / f"train-{nm}-start"
        one(
            f"train {nm} at startup",
            train_argv(out3, 100000),
            lambda o=out3: o,
            sig,
            at_start=True,
            want_ckpt=False,
        )
        root = tmp / f"sweep-{nm}"
        grid = tmp / "sig.toml"
        grid.write_text(GRID.format(tokens="2e6"))
        argv = scaling("sweep", "run", str(grid), "--out", str(root), "--no-progress")

        def first_run(r: Path = root) -> Path:
            runs = sorted((r / "runs").glob("*")) if (r / "runs").is_dir() else []
            return runs[0] if runs else r / "runs" / "none"

        one(f"sweep run {nm} mid-cell", argv, first_run, sig)
        one(f"sweep run {nm} twice (resumed)", argv, first_run, sig, times=2)


def kill_and_resume(tmp: Path) -> None:
    steps = 60
    ref = tmp / "ref"
    p = call(train_argv(ref, steps))
    if p.returncode != 0:
        raise RuntimeError(f"the uninterrupted reference run failed: {p.stderr[-300:]}")
    want = json.loads((ref / "result.json").read_text())
    want_losses = [(r["step"], r["train_loss"]) for r in R.read_jsonl(ref / "metrics.jsonl")]

    def scenario(name: str, stop: Callable[[subprocess.Popen, Path], str], sig: int) -> None:
        """Stop a run with `sig` (`stop` says why it could not, e.g. never saw a save), then
        resume it: it must resume from the newest checkpoint (for SIGINT/SIGTERM: the one
        saved at the interrupt step) and end bitwise equal to the uninterrupted run."""
        out = tmp / f"kr-{len(results.get('kill-and-resume', []))}"
        proc = spawn(train_argv(out, steps))
        try:
            missed = stop(proc, out)
            stopped = finish(proc, 300)
        finally:
            kill_group(proc)
        want_code = -sig if sig == signal.SIGKILL else 128 + sig
        if missed or stopped.returncode != want_code:
            why = missed or f"exit {stopped.returncode}, want {want_code}: {stopped.stderr[-300:]}"
            record("kill-and-resume", name, False, why)
            return
        ck, at = ckpt_steps(out), last_step(out / "metrics.jsonl")
        p = call(train_argv(out, steps))
        got = json.loads((out / "result.json").read_text()) if p.returncode == 0 else {}
        losses = [(r["step"], r["train_loss"]) for r in R.read_jsonl(out / "metrics.jsonl")]
        why = ""
        if sig != signal.SIGKILL and ck[-1:] != [at]:
            why = f"newest checkpoint {ck[-1:]} is not the interrupt step {at}"
        elif p.returncode != 0:
            why = f"resume exit {p.returncode}: {p.stderr[-300:]}"
        elif got.get("resumed_from_step") != (ck[-1] if ck else None):
            why = f"resumed from step {got.get('resumed_from_step')}, not from {ck[-1:]}"
        elif got.get("final_val_loss") != want["final_val_loss"]:
            why = f"final loss {got.get('final_val_loss')!r} != {want['final_val_loss']!r}"
        elif losses != want_losses:
            why = "logged train losses differ from the uninterrupted run"
        record("kill-and-resume", name, not why, why)

    def at_step(k: int, sig: int):
        def stop(proc: subprocess.Popen, out: Path) -> str:
            reached = wait_for(lambda: last_step(out / "metrics.jsonl") >= k, proc)
            proc.send_signal(sig)
            return "" if reached else f"the run ended before step {k}"

        return stop

    def mid_save(proc: subprocess.Popen, out: Path) -> str:
        def saving() -> bool:
            d = out / "checkpoints"
            return d.is_dir() and any("tmp" in p.name for p in d.iterdir())

        caught = wait_for(saving, proc)
        proc.send_signal(signal.SIGKILL)
        return "" if caught else "never saw a save in progress"

    scenario("kill -9 mid-step (step 37)", at_step(37, signal.SIGKILL), signal.SIGKILL)
    scenario("kill -9 mid-save", mid_save, signal.SIGKILL)
    scenario("SIGINT at step 41, resume", at_step(41, signal.SIGINT), signal.SIGINT)
    scenario("SIGTERM at step 13, resume", at_step(13, signal.SIGTERM), signal.SIGTERM)


def disk_full(tmp: Path) -> None:
    global records_lost
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

        def fill(leave: int) -> None:
            free = shutil.disk_usage(mnt).free
            with open(mnt / "filler", "ab") as f:
                f.write(b"\0" * max(0, free - leave))

        # 1. train: the checkpoint does not fit
        fill(60_000)
        p = call(train_argv(mnt / "run", 30))
        why = clean(p.returncode, p.stderr, 1)
        if not why and "no space left on device writing" not in p.stderr:
            why = p.stderr[-300:]
        record("disk full", "train: checkpoint save", not why, why)
        shutil.rmtree(mnt / "run", ignore_errors=True)
        (mnt / "filler").unlink()
        # 2. sweep run: two cells recorded, then the disk fills
        grid = tmp / "df.toml"
        grid.write_text(GRID.format(tokens="2e4, 4e4"))
        fake = ["--train-fn", "sweeps.fake:fake_train", "--no-progress"]
        root = mnt / "sw"
        p = call(scaling("sweep", "run", str(grid), "--out", str(root), "--max-runs", "2", *fake))
        if p.returncode != 0:
            raise RuntimeError(f"the first two cells did not run: {p.stderr[-300:]}")
        before = (root / "results.jsonl").read_bytes()
        fill(0)
        p = call(scaling("sweep", "run", str(grid), "--out", str(root), *fake))
        lines = [x for x in p.stderr.splitlines() if x.startswith("error:")]
        why = (
            ""
            if p.returncode == 1 and len(lines) == 1
            else f"exit {p.returncode}: {p.stderr[-300:]}"
        )
        if not why and "Traceback" in p.stderr:
            why = "traceback"
        if not why and "no space left on device writing" not in lines[0]:
            why = lines[0]
        if not why and (root / "results.jsonl").read_bytes() != before:
            why, records_lost = "results.jsonl changed", records_lost + 1
        if not why and list((root / "leases").glob("*.json")):
            why = "lease left behind"
        (mnt / "filler").unlink()
        if not why:
            p = call(scaling("sweep", "run", str(grid), "--out", str(root), *fake))
            if p.returncode != 0 or len(R.read_records(root)) != 4:
                why = f"after freeing space the rerun did not finish: {p.stderr[-300:]}"
        record("disk full", "sweep run: stops cleanly, results intact, resumes", not why, why)
        # 3. analyze writing its report
        csv = tmp / "t.csv"
        from fuzz_cases import CSV_OK, MAP

        csv.write_text(CSV_OK)
        fill(0)
        p = call(
            scaling(
                "analyze",
                "--csv",
                str(csv),
                *MAP,
                "--resamples",
                "10",
                "--holdout",
                "none",
                "--no-approach2",
                "--out",
                str(mnt / "report"),
            )
        )
        why = clean(p.returncode, p.stderr, 1)
        record("disk full", "analyze: report", not why, why)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


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
    ok_all = records_lost == 0
    for key, label in labels.items():
        rows = results.get(key, [])
        n_ok = sum(ok for _, ok, _ in rows)
        pct = f"{100 * n_ok / len(rows):.0f}%" if rows else "n/a"
        print(f"  {label:<30} {n_ok}/{len(rows)} ({pct})")
        ok_all &= n_ok == len(rows)
    print(f"  {'records lost':<30} {records_lost}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
