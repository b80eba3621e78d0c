"""Plain-text tables for `scaling sweep plan` and `scaling sweep status`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sweeps.calibrate import calibrate, describe
from sweeps.estimate import estimate_parts, fmt_seconds, wall_seconds


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned text columns separated by two spaces."""
    cells = [[str(h) for h in headers]] + [[str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plan_table(
    plan,
    device: tuple[str, int],
    workers: int = 1,
    finished: tuple[str, list[dict[str, Any]]] | None = None,
) -> str:
    """The plan as a table plus totals (FLOPs and estimated wall time on `device`, with
    `workers` launchers) and where the time estimate comes from. `finished`: (the sweep
    directory, its records), to calibrate the estimate on its finished runs and say what is
    left."""
    parts = estimate_parts(plan.cells, device)
    calib = (
        None if finished is None else calibrate(plan.cells, parts, finished[1], device, finished[0])
    )
    est = (
        calib.apply(parts) if calib is not None else [None if p is None else sum(p) for p in parts]
    )
    rows = []
    for c, t in zip(plan.cells, est, strict=True):
        budget = c.cell.get("budget")
        err = f"{100 * (c.c_exact / budget - 1):+.2f}%" if budget else "-"
        rows.append(
            [
                c.run_id,
                c.label,
                f"{c.n_total:.3g}",
                f"{c.n_nonembed:.3g}",
                f"{c.tokens:.3g}",
                f"{c.c_6nd:.3g}",
                f"{c.c_exact:.4g}",
                err,
                c.steps,
                c.batch,
                f"{c.lr:.3g}",
                c.warmup,
                fmt_seconds(t),
            ]
        )
    headers = [
        "run_id",
        "cell",
        "N_total",
        "N_nonemb",
        "D",
        "C_6ND",
        "C_exact",
        "vs_budget",
        "steps",
        "batch",
        "lr",
        "warmup",
        "est_time",
    ]
    known = [t for t in est if t is not None]
    total_t = _total(known, len(est), workers, device)
    how = "sequential, local backend" if workers == 1 else f"--workers {workers}, local backend"
    if workers > 1 and len(known) == len(est):
        how = "local backend"
    n = [c.n_total for c in plan.cells]
    head = (
        f"sweep {plan.name!r} ({plan.kind}): {len(plan.cells)} runs, "
        f"N_total {min(n):.3g}..{max(n):.3g}"
    )
    foot = (
        f"total {plan.total_flops:.4g} FLOPs (exact), "
        f"{sum(c.c_6nd for c in plan.cells):.4g} (6ND); "
        f"estimated wall time on {device[0]} x{device[1]}: {total_t} ({how})"
    )
    if finished is not None:
        done = {r.get("run_id") for r in finished[1]}
        left = [t for c, t in zip(plan.cells, est, strict=True) if c.run_id not in done]
        n_left = len(left)
        left_t = _total([t for t in left if t is not None], n_left, workers, device)
        foot += f"; left to train in {finished[0]}: {n_left} of {len(est)} runs, {left_t}"
    return "\n".join(
        [head, "", table(headers, rows), "", foot, describe(plan.cells, device, calib)]
    )


def _total(known: list[float], n: int, workers: int, device: tuple[str, int]) -> str:
    """The wall time of `n` cells whose estimates are `known` ("?" if some are not)."""
    if len(known) < n:
        return "?"
    seq = fmt_seconds(sum(known))
    if workers > 1 and n:
        par = fmt_seconds(wall_seconds(known, workers, device))
        return f"{par} with --workers {workers}, {seq} sequential"
    return seq


def status_table(rows: list[dict[str, Any]]) -> str:
    headers = ["run_id", "cell", "state", "progress", "loss", "eta", "C_spent", "C_planned", "note"]
    return table(headers, [[r.get(h, "") for h in headers] for r in rows])
