"""The process-stop sections of `make faults`: SIGINT/SIGTERM to real `train` and `sweep run`
processes, and kill -9 / signals followed by a resume that must end bitwise equal to an
uninterrupted run. Imported by scripts/faults.py (which puts the repository on sys.path first).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from faults_run import (
    GRID,
    TALLY,
    call,
    ckpt_steps,
    clean,
    finish,
    kill_group,
    last_step,
    record,
    scaling,
    spawn,
    train_argv,
    wait_for,
)

from scaling.fileio import read_jsonl


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
        finished = "checkpoint saved at step" in ran.stderr  # stop done first: signals.py 4.
        if not why and times >= 3 and f"({times} signals)" not in ran.stderr and not finished:
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
    want_losses = [(r["step"], r["train_loss"]) for r in read_jsonl(ref / "metrics.jsonl")]

    def scenario(name: str, stop: Callable[[subprocess.Popen, Path], str], sig: int) -> None:
        """Stop a run with `sig` (`stop` says why it could not, e.g. never saw a save), then
        resume it: it must resume from the newest checkpoint (for SIGINT/SIGTERM: the one
        saved at the interrupt step) and end bitwise equal to the uninterrupted run."""
        out = tmp / f"kr-{len(TALLY.results.get('kill-and-resume', []))}"
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
        losses = [(r["step"], r["train_loss"]) for r in read_jsonl(out / "metrics.jsonl")]
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
