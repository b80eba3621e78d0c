"""`scaling sweep status DIR`: where every planned run stands, and FLOPs spent vs planned.

States: done / diverged (recorded in results.jsonl), running (a live lease), failed (runs/<id>/
failed.json, no live lease and no result.json), pending (everything else; `partial` in the
note when a previous attempt left metrics, with the checkpoint step the next launch resumes
from). Progress is the last logged step over the planned steps; FLOPs spent = C_exact x
progress. The time left counts
the running, failed and pending runs only (a diverged run is never resumed), each from where it
goes on: a running one from its last logged step, the others from their newest checkpoint, at
the pace of the finished runs: the time model (sweeps.estimate) calibrated on their wall times
(sweeps.calibrate), or their FLOP rate where the model cannot be used; divided by the runs in
flight (the model's one-launcher pace also slowed by their contention for the cores).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from scaling.results import clean_json, finished_result
from sweeps import registry as R
from sweeps.calibrate import finished_timings, time_left
from sweeps.lease import live_leases
from sweeps.report import status_table

STATES = ("done", "diverged", "running", "failed", "pending")


def tail_records(metrics: Path, nbytes: int = 16384) -> list[dict[str, Any]]:
    """The JSON records in the last ``nbytes`` of a metrics.jsonl (a cut first line is skipped)."""
    if not metrics.is_file():
        return []
    with open(metrics, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - nbytes))
        tail = f.read().decode(errors="replace").splitlines()
    out = []
    for line in tail:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int | float):
            out.append(rec)
    return out


def last_step(metrics: Path) -> int:
    """The largest `step` in a metrics.jsonl (reads only its tail)."""
    return max((int(r["step"]) for r in tail_records(metrics)), default=0)


def progress_of(metrics: Path, planned_steps: int) -> dict[str, Any]:
    """Last step, last train/val loss and an ETA (seconds) from the tail of a metrics.jsonl.

    The rate is measured between the oldest and newest records of the tail (so compilation and
    a resume's restart do not count), over the session that wrote the newest record.
    """
    recs = tail_records(metrics)
    if not recs:
        return {"step": 0, "train_loss": None, "val_loss": None, "eta_s": None}
    last = max(recs, key=lambda r: r["step"])
    val = next((r["val_loss"] for r in reversed(recs) if r.get("val_loss") is not None), None)
    eta = None
    timed = [r for r in recs if isinstance(r.get("elapsed_s"), int | float)]
    for i in range(len(timed) - 1, 0, -1):  # elapsed_s restarts with each session: keep the last
        if timed[i]["elapsed_s"] < timed[i - 1]["elapsed_s"]:
            timed = timed[i:]
            break
    if len(timed) >= 2:
        a, b = timed[0], timed[-1]
        if b["step"] > a["step"] and b["elapsed_s"] > a["elapsed_s"]:
            per_step = (b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"])
            eta = max(0.0, (planned_steps - last["step"]) * per_step)
    return {
        "step": int(last["step"]),
        "train_loss": last.get("train_loss"),
        "val_loss": val,
        "eta_s": eta,
    }


def fmt_duration(seconds: float | None) -> str:
    """'42s', '3m05s', '2h07m' (empty for None)."""
    if seconds is None:
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def last_checkpoint(ckpt_dir: Path) -> int:
    """The newest finished checkpoint step (Orbax names step directories by the step number;
    unfinished saves carry a suffix). The engine resumes there, not at the last logged step."""
    if not ckpt_dir.is_dir():
        return 0
    return max((int(d.name) for d in ckpt_dir.iterdir() if d.name.isdigit()), default=0)


def collect(root: Path) -> dict[str, Any]:
    """Per-run rows and totals for DIR, as numbers (`format_status` formats them; `as_json`
    gives the machine-readable form). Keys starting with "_" are internal."""
    root = Path(root)
    plan = R.read_plan(root)
    records = {r["run_id"]: r for r in R.read_records(root)}
    leases = live_leases(root / "leases")
    rows = [_row(root, c, records.get(c["run_id"]), leases) for c in plan["cells"]]
    counts = Counter(r["state"] for r in rows)
    spent = sum(r["C_spent"] for r in rows)
    planned = sum(c["C_exact"] for c in plan["cells"])
    at_once = max(1, counts.get("running", 0))
    # what is still to train, from where each cell resumes (its newest checkpoint, not its last
    # logged step); a diverged run is recorded and never resumed, so it has none left
    left = sum(r["_left"] for r in rows)
    eta, eta_runs, eta_how = None, 0, ""
    if left > 0:
        fractions = {r["run_id"]: r["_left"] / max(r["C_planned"], 1e-300) for r in rows}
        eta, eta_runs = time_left(plan, list(records.values()), fractions, at_once)
        eta_how = "model"
        if eta is None:  # a plan this version cannot rebuild, or a device the model lacks
            eta, eta_how = _sweep_eta(records.values(), left, at_once), "flops"
            eta_runs = len(finished_timings(records.values()))
    return dict(
        sweep=plan["sweep"],
        rows=rows,
        counts=counts,
        spent=spent,
        planned=planned,
        eta_s=eta,
        eta_at_once=at_once,
        eta_runs=eta_runs,
        _eta_how=eta_how,
    )


def _row(root: Path, c: dict[str, Any], rec: dict[str, Any] | None, leases) -> dict[str, Any]:
    """One planned cell's state, progress, losses, ETA and FLOPs (numbers; None: unknown)."""
    rid = c["run_id"]
    out = R.run_dir(root, rid)
    prog = progress_of(out / "metrics.jsonl", c["steps"])
    step, eta = prog["step"], None
    resume = None  # the step training continues from, for a cell still to train
    note, train, val = "", prog["train_loss"], prog["val_loss"]
    if rec is not None:
        state = rec.get("status", "done")
        step = rec.get("steps_done") or (c["steps"] if state == "done" else step)
        val = rec.get("final_val_loss")
        if state == "diverged":
            note = f"diverged at step {rec.get('diverged_at_step')}"
    elif rid in leases:
        state, note = "running", f"owner {leases[rid].get('owner', '?')}"
        eta, resume = prog["eta_s"], step
    elif finished_result(out, rid) is not None:  # its launcher died before recording it (a
        # failed.json of an earlier attempt is still there: it is removed once recorded)
        state, note = "pending", "trained, not yet recorded: sweep run records it without training"
    elif (fail := R.read_failure(root, rid)) is not None:
        state, resume = "failed", last_checkpoint(out / "checkpoints")
        msg = str(fail.get("message", "")).strip().splitlines()
        note = f"{fail.get('attempts', 1)} attempt(s): {msg[-1][:60] if msg else ''}"
    else:
        state, resume = "pending", last_checkpoint(out / "checkpoints")
        if step:
            note = f"partial, resumes at step {resume}" if resume else "partial, no checkpoint yet"
    frac = min(1.0, step / c["steps"]) if c["steps"] else 0.0
    return dict(
        run_id=rid,
        cell=c["label"],
        state=state,
        step=int(step),
        steps=c["steps"],
        progress=frac,
        train_loss=_number(train),
        val_loss=_number(val),
        eta_s=eta,
        C_spent=frac * c["C_exact"],
        C_planned=c["C_exact"],
        resume_step=resume,
        note=note,
        _recorded=rec is not None,
        _left=0.0 if resume is None else max(0.0, 1 - resume / max(c["steps"], 1)) * c["C_exact"],
    )


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _display(r: dict[str, Any]) -> dict[str, str]:
    """A row as the text table shows it."""
    if r["_recorded"]:  # a recorded run: its final validation loss
        loss = "" if r["val_loss"] is None else f"val {r['val_loss']:.4f}"
    else:
        loss = _loss_str(r)
    return dict(
        r,
        progress=f"{r['step']}/{r['steps']} ({100 * r['progress']:.0f}%)",
        loss=loss,
        eta=fmt_duration(r["eta_s"]) if r["state"] == "running" else "",
        C_spent=f"{r['C_spent']:.3g}",
        C_planned=f"{r['C_planned']:.3g}",
    )


def as_json(info: dict[str, Any]) -> dict[str, Any]:
    """`sweep status --json`: every state's count (0 included) and the rows as numbers
    (steps, progress 0..1, losses, seconds, FLOPs; null: not known), strict JSON."""
    return clean_json(
        dict(
            sweep=info["sweep"],
            counts={s: int(info["counts"].get(s, 0)) for s in STATES},
            spent=info["spent"],
            planned=info["planned"],
            eta_s=info["eta_s"],
            eta_at_once=info["eta_at_once"],
            eta_runs=info["eta_runs"],
            rows=info["rows"],
        ),
        drop_private=True,
    )


def _loss_str(prog: dict[str, Any]) -> str:
    """'train 2.31 / val 2.40' from a run's latest metrics (what is there)."""
    parts = [
        f"{k} {prog[f'{k}_loss']:.4f}"
        for k in ("train", "val")
        if isinstance(prog.get(f"{k}_loss"), int | float)
    ]
    return " / ".join(parts)


def _sweep_eta(records, remaining_flops: float, at_once: int = 1) -> float | None:
    """Remaining FLOPs at the FLOP rate of the finished runs (None before the first one), with
    `at_once` runs in flight (launchers, array tasks): as the time model does (`time_left`),
    each finished run's time is taken at one launcher's pace (divided by the contention of the
    launchers it recorded) and the runs in flight are slowed by theirs."""
    from sweeps.calibrate import finished_device, launchers_of
    from sweeps.estimate import contention, in_flight

    done = finished_timings(records)
    device = finished_device(done) or ("cpu", 1)
    flops = sum(float(r.get("C_exact") or 0) for r in done)
    secs = sum(float(r["wall_time_s"]) / contention(launchers_of(r) or 1, device) for r in done)
    if flops <= 0 or secs <= 0:
        return None
    return max(0.0, remaining_flops) / (flops / secs) * in_flight(at_once, device)


def format_status(info: dict[str, Any]) -> str:
    counts = info["counts"]
    head = f"sweep {info['sweep']!r}: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATES)
    pct = 100 * info["spent"] / info["planned"] if info["planned"] else 0.0
    foot = f"FLOPs spent {info['spent']:.4g} of {info['planned']:.4g} planned ({pct:.1f}%)"
    if info.get("eta_s") is not None:
        n = info.get("eta_at_once", 1)
        how = f"{n} runs at a time, as now" if n > 1 else "one run at a time"
        pace = (
            f"the time model calibrated on the {info['eta_runs']} finished run(s)"
            if info.get("_eta_how") == "model"
            else f"the FLOP rate of the {info['eta_runs']} finished run(s)"
        )
        foot += f"; about {fmt_duration(info['eta_s'])} left by {pace}, {how}"
    rows = [_display(r) for r in info["rows"]]
    return "\n".join([head, "", status_table(rows), "", foot])
