"""Calibrating the time estimate (sweeps.estimate) on runs measured on this machine, and saying
where the estimate comes from. No JAX.

The built-in CPU model was fitted on one machine (sweeps.estimate); on another (or another JAX)
its parts are off by different factors: before it was refitted to the current code, the demo's
fixed costs per run (compile, data, saves, evals) measured ~0.1x the model's on the 2-core machine
of 2026-12-04 and its per-step and FLOP costs ~0.5x. So
`calibrate` fits the two scales by least squares to the finished runs' wall times,

    measured(run) ~ a * fixed(run) + b * work(run),     a, b >= 0,

(`estimate.estimate_parts`), and falls back to one common scale (measured / modelled, summed)
with fewer than 3 runs or when the two parts cannot be told apart. Checked on three finished demo
sweeps (2 launchers each): fitted on the first 5, 10, 20 or 30 runs, it predicted the wall time
of the rest within 0.8-1.0x on a quiet machine (one common scale: 0.6-0.75x; the FLOP rate of
the finished runs: 1.2-2.4x). Runs that shared the cores with `--workers N` carry that contention
in their wall times, and the estimate for `--workers N` adds it again: each run records how many
launchers trained beside it (`launchers`), and its wall time is divided by the contention the
estimate charges for that many (`estimate.contention`) before the fit. Runs recorded before that
field existed are taken as measured (with `--workers`, the calibrated estimate errs long: 6.5 min
against 5.1 measured for the 20:22 fresh-clone demo of 2026-12-04), and the line under the plan
says how many there are.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sweeps.estimate import (
    ASSUMED_MFU,
    CPU_COMPILE_S,
    CPU_EVAL_S,
    CPU_RUN_S,
    CPU_STEP_OVERHEAD_S,
    GPU_COMPILE_S,
    GPU_EVAL_S,
    contention,
    fmt_seconds,
    in_flight,
    throughput,
)


def finished_timings(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of finished runs (status done) with a measured wall time: what calibrates
    the plan's estimate, and the time left of `sweep status`."""
    return [
        r
        for r in records
        if r.get("status", "done") == "done"
        and isinstance(r.get("wall_time_s"), int | float)
        and r["wall_time_s"] > 0
    ]


@dataclass(frozen=True)
class Calibration:
    """`n_runs` finished runs of the plan, measured on this kind of device, took `measured_s`
    where the model says `model_s`; the model's fixed and work parts are scaled by `fixed` and
    `work`. `why_not` says why no run could be used (then n_runs is 0)."""

    where: str
    n_runs: int = 0
    measured_s: float = 0.0
    model_s: float = 0.0
    fixed: float = 1.0
    work: float = 1.0
    max_error_s: float = 0.0
    why_not: str = ""
    n_shared: int = 0  # runs trained beside other launchers: their times divided by contention
    n_uncounted: int = 0  # runs recorded without a launcher count: taken as measured

    def apply(self, parts: Sequence[tuple[float, float] | None]) -> list[float | None]:
        """Calibrated per-cell seconds from `estimate_parts`."""
        return [None if p is None else self.fixed * p[0] + self.work * p[1] for p in parts]


def calibrate(
    cells: Sequence,
    parts: Sequence[tuple[float, float] | None],
    records: Iterable[dict[str, Any]],
    device: tuple[str, int],
    where: str,
) -> Calibration:
    """Fit the model's two scales to the finished runs among `records` that are cells of this
    plan (`parts`: `estimate_parts(cells, device)`) and ran on this kind of device."""
    model = {c.run_id: p for c, p in zip(cells, parts, strict=True) if p is not None}
    timed = finished_timings(records)
    here = [r for r in timed if str(r.get("device_kind", "")).lower() == device[0].lower()]
    used = [r for r in here if r.get("run_id") in model]
    if not used:
        if not timed:
            why = f"no finished runs in {where}"
        elif not here:
            kinds = ", ".join(sorted({str(r.get("device_kind")) for r in timed}))
            why = f"the finished runs in {where} ran on {kinds}, not on {device[0]}"
        else:
            why = f"none of the {len(here)} finished runs in {where} is a cell of this plan"
        return Calibration(where, why_not=why)
    xs = [model[r["run_id"]] for r in used]
    ys = [float(r["wall_time_s"]) / contention(launchers_of(r) or 1, device) for r in used]
    a, b = _fit(xs, ys)
    err = max(abs(a * f + b * w - y) for (f, w), y in zip(xs, ys, strict=True))
    shared = sum(1 for r in used if (launchers_of(r) or 1) > 1)
    uncounted = sum(1 for r in used if launchers_of(r) is None)
    model_s = sum(f + w for f, w in xs)
    return Calibration(where, len(used), sum(ys), model_s, a, b, err, "", shared, uncounted)


def launchers_of(record: dict[str, Any]) -> float | None:
    """How many launchers trained on the machine beside the run (None: not recorded, a run
    recorded before the field existed, or not a number)."""
    n = record.get("launchers")
    ok = isinstance(n, int | float) and not isinstance(n, bool) and n >= 1
    return float(n) if ok else None


def _fit(xs: list[tuple[float, float]], ys: list[float]) -> tuple[float, float]:
    """Least-squares a, b >= 0 in y ~ a * fixed + b * work; one common scale when fewer than 3
    runs or the two columns are (nearly) proportional."""
    common = sum(ys) / max(sum(f + w for f, w in xs), 1e-12)
    sff = sum(f * f for f, _ in xs)
    sww = sum(w * w for _, w in xs)
    sfw = sum(f * w for f, w in xs)
    det = sff * sww - sfw * sfw
    if len(xs) < 3 or det <= 1e-6 * sff * sww:
        return common, common
    sfy = sum(f * y for (f, _), y in zip(xs, ys, strict=True))
    swy = sum(w * y for (_, w), y in zip(xs, ys, strict=True))
    a, b = (sww * sfy - sfw * swy) / det, (sff * swy - sfw * sfy) / det
    if a < 0:  # the fixed part measured as nothing: all of it per step
        a, b = 0.0, swy / sww
    elif b < 0:
        a, b = sfy / sff, 0.0
    return a, b


def describe(cells: Sequence, device: tuple[str, int], calib: Calibration | None) -> str:
    """Where the time estimate comes from, in one line (printed under the plan)."""
    if calib is not None and calib.n_runs:
        scales = (
            f"{calib.fixed:.2f}x"
            if calib.fixed == calib.work
            else f"fixed costs a run {calib.fixed:.2f}x, per-step and FLOP costs {calib.work:.2f}x"
        )
        pace = " at one launcher's pace" if calib.n_shared else ""
        shared = (
            f"; {calib.n_uncounted} of them recorded no launcher count (recorded before it "
            f"was): any that shared the cores (--workers) make it err long"
            if calib.n_uncounted
            else ""
        )
        return (
            f"time estimate: calibrated on {calib.n_runs} finished run(s) in {calib.where} "
            f"(measured {fmt_seconds(calib.measured_s)}{pace}, the built-in model said "
            f"{fmt_seconds(calib.model_s)}): the model scaled by {scales} (worst run off by "
            f"{fmt_seconds(calib.max_error_s)}){shared}"
        )
    rates = [throughput(c.n_total, device) for c in cells]
    if not cells or None in rates:
        return f"time estimate: ? (no peak FLOP/s known for {device[0]}; set SCALING_FLOPS_PER_S)"
    lo, hi = min(rates), max(rates)  # type: ignore[type-var]
    unit, scale = ("TFLOP/s", 1e12) if lo >= 1e12 else ("GFLOP/s", 1e9)
    lo_s, hi_s = (f"{x:.3g}" if x < 1000 else f"{x:,.0f}" for x in (lo / scale, hi / scale))
    rate = f"{lo_s} {unit}" if lo_s == hi_s else f"{lo_s}-{hi_s} {unit}"
    if os.environ.get("SCALING_FLOPS_PER_S", "").strip():
        what = f"SCALING_FLOPS_PER_S = {rate} plus the built-in per-step, compile and run costs"
    elif device[0].lower() == "cpu":
        what = (
            f"the built-in CPU model, {rate} at these sizes plus {CPU_STEP_OVERHEAD_S * 1e3:g} ms "
            f"a step, {CPU_COMPILE_S:g} s a compile and {CPU_RUN_S:g} s a run (+{CPU_EVAL_S:g} s "
            f"with evals), fitted on a fast 2-core machine (machines of one kind differ by 2-3x)"
        )
    else:
        what = (
            f"{ASSUMED_MFU:.0%} MFU of {device[0]}'s bf16 peak x{device[1]} = {rate}, plus "
            f"{GPU_COMPILE_S:g} s a compile and {GPU_EVAL_S:g} s of evals a run"
        )
    if calib is not None:
        return f"time estimate: not measured on this machine ({calib.why_not}): {what}"
    return (
        f"time estimate: not measured on this machine: {what}; to calibrate it, add --out DIR, "
        f"a sweep directory with finished runs on this machine"
    )


def plan_cells(plan: dict[str, Any]) -> list[Any] | None:
    """The cells of a plan.json (`sweeps.grid.Cell`), to estimate them again; None when a cell
    cannot be rebuilt (a plan written by another version)."""
    from scaling import config as C
    from scaling.errors import UserError
    from sweeps.grid import Cell

    try:
        return [
            Cell(
                run_id=c["run_id"],
                label=c["label"],
                cell=c["cell"],
                config=C.from_dict(c["config"]),
                n_total=c["N_total"],
                n_nonembed=c["N_nonembed"],
                tokens=c["D"],
                flops_per_token=c["C_exact"] / max(c["D"], 1),
                c_6nd=c["C_6ND"],
                c_exact=c["C_exact"],
                steps=c["steps"],
                batch=c["batch"],
                lr=c["lr"],
                warmup=c["warmup"],
            )
            for c in plan["cells"]
        ]
    except (UserError, KeyError, TypeError, ValueError):
        return None


def finished_device(timed: list[dict[str, Any]]) -> tuple[str, int] | None:
    """(kind, count) of the device most of the finished runs `timed` ran on (ties by name, not
    set order), or None when none names its device."""
    kinds = [str(r["device_kind"]) for r in timed if r.get("device_kind")]
    if not kinds:
        return None
    kind = max(sorted(set(kinds)), key=kinds.count)
    count = next(int(r.get("n_devices") or 1) for r in timed if str(r.get("device_kind")) == kind)
    return kind, count


def time_left(
    plan: dict[str, Any], records: list[dict[str, Any]], left: dict[str, float], at_once: int = 1
) -> tuple[float | None, int]:
    """Seconds to train what is `left` of each cell (run id -> fraction, 0..1), `at_once` runs
    at a time (`estimate.in_flight`: on a CPU each slowed by their contention), by the
    model calibrated on the sweep's finished runs (on the device they ran on), and how many runs
    calibrated it: (None, 0) before the first finished run or on a device the model does not
    know."""
    from sweeps.estimate import estimate_parts

    timed = finished_timings(records)
    cells = plan_cells(plan) if timed else None
    if not cells:
        return None, 0
    device = finished_device(timed)
    if device is None:  # rows that name no device (a train_fn that records none): nothing to do
        return None, 0
    kind, count = device
    parts = estimate_parts(cells, (kind, count))
    calib = calibrate(cells, parts, timed, (kind, count), "")
    if not calib.n_runs:
        return None, 0
    secs = calib.apply(parts)
    alone = sum(s * left.get(c.run_id, 0.0) for c, s in zip(cells, secs, strict=True) if s)
    return alone * in_flight(at_once, (kind, count)), calib.n_runs
