"""Hyperparameter axes of a sweep (lr, batch, warmup): the best value per cell, with a CI.
numpy only (no JAX): the analysis reads results tables and nothing else.

A grid with [hparams] lists (sweeps.grid) runs every (shape, budget/tokens, seed) cell at several
lrs / batches / warmups; its cells carry `hp_axes`. For the scaling fits each such *group* must
count once, so `analyze_records`:
- groups the finished runs by their cell without the axis coordinates (lr, lr_factor, batch,
  warmup) and keeps the run of lowest loss as the group's point (the others are dropped from the
  fits, with a note);
- for the lr and batch axes, fits a parabola to loss against log10(value) on the slice where the
  other axes sit at the best run's values, over the grid's best point and up to two neighbours on
  each side (far points, near divergence, are not parabolic). The vertex x* = -b / 2a is the best
  value; its CI comes from the parabola-parameter uncertainty (delta method: covariance
  s^2 (X'X)^-1 with s^2 = SSR / (n - 3), Student-t quantile with n - 3 degrees of freedom), so it
  needs >= 4 points and widens honestly when there are few;
- counts a diverged variant (status "diverged", no loss) as +inf: it never wins, and it bounds
  the axis: the parabola uses no point at or past it. A best value next to a diverged one is not
  an edge (widening that way would only diverge again); the note says the neighbour diverged;
- flags an *edge* optimum: the grid's best value is its smallest or largest (warmup: by the runs'
  resolved warmup_steps), or the vertex lies outside the grid, or the parabola has no minimum;
- flags a *flat* axis: every value trained (none diverged) and gave the same loss (the axis
  does not reach the loss: check it is wired); no best value, no edge, and the cell stays out
  of the law;
- fits best lr against N and best batch against the planned budget C as power laws (log-log
  least squares, exponent CI from the slope's standard error with Student t on n - 2 degrees of
  freedom, none from 2 cells; cells whose best is on the grid's edge are left out: their best
  is only a bound; so are flat cells), only when the cells span at least MIN_LAW_DECADES of x;
  otherwise the law is "not fitted" with the reason (three shapes at one budget differ in 6ND
  by a few percent, which would fit a spurious exponent).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

AXIS_KEYS = ("lr", "lr_factor", "batch", "warmup")
FIT_AXES = ("lr", "batch")  # fitted on a log scale; warmup: best grid value only
MIN_LAW_DECADES = 0.3  # as analysis.ablation.MIN_TREND_DECADES: x must span at least 2x
EDGE = "best grid value at the edge of the grid"
FLAT = "the loss does not vary along this axis (every value gave the same loss)"


@functools.lru_cache(maxsize=64)
def t_quantile(p: float, dof: int) -> float:
    """Student-t quantile (exact; it was a 400,000-draw Monte Carlo, 0.7% off at 1 dof)."""
    from scipy.stats import t  # noqa: PLC0415 - imported where a CI is computed

    return float(t.ppf(p, dof))


def parabola_optimum(x: np.ndarray, y: np.ndarray, *, level: float = 0.9) -> dict[str, Any]:
    """Vertex of the least-squares parabola y = a x^2 + b x + c, with a delta-method t CI.

    Uses the grid argmin and up to two neighbours on each side. Returns x_best (the vertex, or
    the grid argmin when there is no minimum or the vertex lies outside the grid), lo/hi (None
    when not estimable), a, the points used, and `edge` with its reason. Non-finite y (diverged
    runs) are left out of the fit, and so is every point past one (it bounds the axis); when the
    best finite point's next neighbour diverged, `diverged_next` names that side ("larger" /
    "smaller") and the point is not an edge. When every finite loss is the same, `flat` is True
    and nothing else is estimated (the grid's first value is no optimum, nor an edge).
    """
    order = np.argsort(x)
    x_all, y_all = np.asarray(x, float)[order], np.asarray(y, float)[order]
    x, y = _finite_run(x_all, y_all)
    i = int(np.argmin(y))
    lo_i, hi_i = max(0, i - 2), min(x.size, i + 3)
    xs, ys = x[lo_i:hi_i], y[lo_i:hi_i]
    out: dict[str, Any] = dict(x_grid_best=float(x[i]), x_best=float(x[i]), lo=None, hi=None)
    out |= dict(a=None, n_points=int(xs.size), edge=False, reason="", diverged_next=None)
    if out.setdefault("flat", _flat(y_all)):
        return out | dict(reason=FLAT)
    if x.size > 1 and i in (0, x.size - 1):
        out.update(edge=True, reason=EDGE)
    if side := _diverged_side(x_all, y_all, x[i]):  # a bound, not an edge: widening would diverge
        out.update(edge=False, diverged_next=side, reason=f"the next {side} value diverged")
    if np.unique(xs).size < 3:
        out["reason"] = out["reason"] or "fewer than 3 values: no parabola"
        return out
    X = np.stack([xs**2, xs, np.ones_like(xs)], axis=1)
    coef, *_ = np.linalg.lstsq(X, ys, rcond=None)
    a, b = float(coef[0]), float(coef[1])
    out["a"] = a
    if a <= 0:
        if not out.get("diverged_next"):
            out.update(edge=True, reason=out["reason"] or "no minimum (parabola opens downward)")
        return out
    vertex = -b / (2 * a)
    if not x[0] <= vertex <= x[-1]:  # a parabola extrapolated past the grid says little (and a
        # nearly straight line puts its vertex anywhere): report the grid's best value
        if not out.get("diverged_next"):  # beyond the last value that trained: no edge
            out.update(edge=True, reason=out["reason"] or "fitted optimum outside the grid")
        return out
    out["x_best"] = float(vertex)
    dof = xs.size - 3
    if dof >= 1:
        s2 = float(np.sum((ys - X @ coef) ** 2)) / dof
        cov = s2 * np.linalg.inv(X.T @ X)
        g = np.array([b / (2 * a * a), -1 / (2 * a), 0.0])
        half = t_quantile(0.5 + level / 2, dof) * math.sqrt(max(0.0, float(g @ cov @ g)))
        out["lo"], out["hi"] = float(vertex - half), float(vertex + half)
    return out


def _flat(y: np.ndarray) -> bool:
    """More than one loss, every one finite and all the same (to 1e-12 relative: float noise of
    one value). A value that diverged shows the axis reaches the run: not flat."""
    if y.size < 2 or not np.all(np.isfinite(y)):
        return False
    return bool(np.ptp(y) <= 1e-12 * float(np.abs(y).max()))


def _finite_run(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best finite point and its neighbours up to the first diverged value on each side."""
    i, bad = int(np.argmin(np.where(np.isfinite(y), y, np.inf))), np.flatnonzero(~np.isfinite(y))
    lo, hi = max(bad[bad < i], default=-1) + 1, min(bad[bad > i], default=y.size)
    return x[lo:hi], y[lo:hi]


def _diverged_side(x: np.ndarray, y: np.ndarray, x_best: float) -> str | None:
    """Which immediate neighbour of the best point (x sorted) has a non-finite loss, if any."""
    i = int(np.searchsorted(x, x_best))
    if i + 1 < x.size and not np.isfinite(y[i + 1]):
        return "larger"
    if i >= 1 and not np.isfinite(y[i - 1]):
        return "smaller"
    return None


def power_law(x: np.ndarray, y: np.ndarray, *, level: float = 0.9) -> dict | None:
    """y = k x^e by least squares in log-log space. The exponent's CI is the slope's standard
    error times a Student-t quantile on n - 2 degrees of freedom: none with 2 points (a line
    through two points has no residual to measure its error by; a bootstrap over points gave a
    zero-width CI there, and covered 64% at a nominal 90% with 3)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if np.unique(x).size < 2:
        return None
    lx, ly = np.log(x), np.log(y)
    e, lk = np.polyfit(lx, ly, 1)
    lo = hi = None
    if x.size >= 3:
        s2 = float(np.sum((ly - (e * lx + lk)) ** 2)) / (x.size - 2)
        se = math.sqrt(s2 / float(np.sum((lx - lx.mean()) ** 2)))
        half = t_quantile(0.5 + level / 2, x.size - 2) * se
        lo, hi = float(e - half), float(e + half)
    return dict(exponent=float(e), coefficient=float(np.exp(lk)), lo=lo, hi=hi, n=int(x.size))


def _group_key(cell: dict[str, Any]) -> str:
    return json.dumps(
        {k: v for k, v in cell.items() if k not in AXIS_KEYS and k != "hp_axes"}, sort_keys=True
    )


def variant_groups(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The records that carry hyperparameter axes, grouped by their cell without the axis
    coordinates: each group is one (shape, budget/tokens, seed) run at several lrs/batches/..."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        if (r.get("cell") or {}).get("hp_axes"):
            groups.setdefault(_group_key(r["cell"]), []).append(r)
    return list(groups.values())


def best_variants(
    records: list[dict[str, Any]], loss_key: str = "final_val_loss"
) -> tuple[list[dict[str, Any]], int]:
    """`records` keeping only each variant group's lowest-loss run (the scaling fits' point of
    that cell; records without axes pass through), and how many variants were dropped. A
    variant without a finite loss never wins; a group with no finite loss is dropped whole."""

    drop: set[int] = set()
    for members in variant_groups(records):
        best = min(members, key=lambda r: _loss(r, loss_key))
        drop |= {id(r) for r in members if r is not best or _loss(r, loss_key) == math.inf}
    return [r for r in records if id(r) not in drop], len(drop)


def _loss(r: dict, loss_key: str) -> float:
    """A record's loss, +inf when it has none (a diverged run) or it is not finite."""
    v = r.get(loss_key)
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else math.inf


def analyze_records(
    records: list[dict[str, Any]],
    *,
    level: float = 0.9,
    n_key: str = "N_total",
    loss_key: str = "final_val_loss",
) -> dict[str, Any] | None:
    """Best run per group and per-axis optima (see the module docstring); None without axes.

    `records` are results rows (run_id, cell, `loss_key`, `n_key`, D, C_6ND): finished runs and
    diverged ones (no loss: +inf, they bound an axis but are never a point); each group output's
    `loss`/`losses` are in that metric (None for a diverged variant).
    """
    groups = variant_groups(records)
    if not groups:
        return None
    rows = [r for members in groups for r in members]
    out_groups = []
    for members in groups:
        best = min(members, key=lambda r: _loss(r, loss_key))
        if _loss(best, loss_key) == math.inf:
            continue  # every variant diverged: no point for this cell
        cell = best["cell"]
        g: dict[str, Any] = dict(
            cell={k: v for k, v in cell.items() if k not in AXIS_KEYS and k != "hp_axes"},
            best_run=best["run_id"],
            loss=float(best[loss_key]),
            N=float(best[n_key]),
            C=float(best.get("C_6ND") or 6.0 * best[n_key] * best["D"]),
            variants=len(members),
            axes={},
        )
        for axis in cell["hp_axes"]:
            others = [a for a in cell["hp_axes"] if a != axis]
            line = [m for m in members if all(m["cell"].get(a) == cell.get(a) for a in others)]
            g["axes"][axis] = _axis_result(axis, line, loss_key, level)
        out_groups.append(g)
    out_groups.sort(key=lambda g: (g["C"], g["N"]))
    kept = {g["best_run"] for g in out_groups}
    diverged = {r["run_id"] for r in rows if _loss(r, loss_key) == math.inf}
    return dict(
        groups=out_groups,
        kept=sorted(kept),
        dropped=sorted(r["run_id"] for r in rows if r["run_id"] not in kept | diverged),
        diverged=sorted(diverged),
        laws=_laws(out_groups, level),
        edge_cells=[_label(g) + f" ({a})" for g in out_groups for a, v in g["axes"].items()
                    if v["edge"]],
        flat_cells=[_label(g) + f" ({a})" for g in out_groups for a, v in g["axes"].items()
                    if v.get("flat")],
        diverged_next=[_label(g) + f" ({a}: next {v['diverged_next']})" for g in out_groups
                       for a, v in g["axes"].items() if v.get("diverged_next")],
    )  # fmt: skip


def _axis_result(axis: str, line: list[dict], loss_key: str, level: float) -> dict[str, Any]:
    """One axis of one group: its values, losses (None: diverged) and the best value."""
    values = [m["cell"][axis] for m in line]
    losses = np.array([_loss(m, loss_key) for m in line], float)
    j = int(np.argmin(losses))
    if axis in FIT_AXES:
        fit = parabola_optimum(np.log10(values), losses, level=level)
        res = dict(best=10 ** fit["x_best"], grid_best=values[j])  # the grid's own value
        res |= dict(lo=_pow10(fit["lo"]), hi=_pow10(fit["hi"]), edge=fit["edge"])
        res |= {k: fit[k] for k in ("reason", "n_points", "diverged_next", "flat")}
    else:
        keys = _order_keys(axis, line, values)
        nums = [k for k in keys if k is not None]
        edge = keys[j] is not None and keys[j] in (min(nums), max(nums))
        flat = _flat(losses)
        res = dict(best=values[j], grid_best=values[j], edge=bool(edge and len(values) > 1))
        res |= dict(edge=res["edge"] and not flat, flat=flat)
        res["reason"] = FLAT if flat else EDGE if res["edge"] else ""
    res["values"] = values
    res["losses"] = [float(v) if math.isfinite(v) else None for v in losses]
    return res


def _order_keys(axis: str, line: list[dict], values: list[Any]) -> list[float | None]:
    """The numbers that order an unfitted axis's values for its edge flag. Warmup rules mix
    steps, fractions of the steps and "params" (200 steps is no edge when 0.05 of 5000 steps
    is 250), so warmup goes by each run's resolved `warmup_steps` when every run records it;
    otherwise the values themselves (a non-number: None, never an edge)."""
    if axis == "warmup":
        steps = [m.get("warmup_steps") for m in line]
        if all(isinstance(x, int | float) and not isinstance(x, bool) for x in steps):
            return [float(x) for x in steps]
    return [float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
            for v in values]  # fmt: skip


def _pow10(x: float | None) -> float | None:
    return None if x is None else 10**x


def _law(x: list[float], y: list[float], name: str, level: float) -> dict[str, Any]:
    """power_law(x, y), or {"not_fitted": reason} when x spans too little to measure a slope."""
    span = float(np.ptp(np.log10(x))) if x else 0.0
    distinct = int(np.unique(x).size)
    if distinct < 2 or span < MIN_LAW_DECADES:
        why = (
            f"the {len(x)} cells have {distinct} distinct {name} spanning {span:.2f} decades "
            f"(need >= 2 spanning {MIN_LAW_DECADES}); sweep several {name} values"
        )
        return dict(not_fitted=why, n=len(x))
    return power_law(x, y, level=level) or dict(not_fitted="no fit", n=len(x))


def _laws(groups: list[dict], level: float) -> dict[str, Any]:
    """best lr ~ N^e over the cells' N; best batch ~ C^e over the cells' planned budgets (a
    cell's own 6ND differs by shape within one budget; without a budget, as in an NxD grid, its
    6ND is the plan)."""
    laws: dict[str, Any] = {}
    for axis, name, what in (("lr", "lr_vs_N", "N"), ("batch", "batch_vs_C", "budgets C")):
        had = [g for g in groups if axis in g["axes"]]
        # an edge best is only a bound; a flat axis has no best
        use = [g for g in had if not (g["axes"][axis]["edge"] or g["axes"][axis].get("flat"))]
        if not had:
            continue
        x = [g["N"] if axis == "lr" else float(g["cell"].get("budget") or g["C"]) for g in use]
        laws[name] = law = _law(x, [g["axes"][axis]["best"] for g in use], what, level)
        law["flat_left_out"] = f = sum(bool(g["axes"][axis].get("flat")) for g in had)
        law["edge_left_out"] = k = len(had) - len(use) - f
        why = [f"{k} whose best is on the grid's edge"] * bool(k) + [f"{f} flat"] * bool(f)
        if why and "not_fitted" in law:
            law["not_fitted"] += f"; cells left out: {' and '.join(why)}"
    return laws


def _label(g: dict) -> str:
    c = g["cell"]
    parts = [f"C={c['budget']:.3g}"] if "budget" in c else []
    parts += [f"D={c['tokens']:.3g}"] if "tokens" in c else []
    return "/".join(parts + [str(c.get("shape", "?")), f"seed{c.get('seed', 0)}"])


def summary_lines(hp: dict[str, Any]) -> list[str]:
    """A few lines for the terminal: kept/dropped counts, laws, edge flags."""
    lines = [
        f"hyperparameter axes: {len(hp['groups'])} cells, best of "
        f"{len(hp['kept']) + len(hp['dropped'])} runs kept for the fits "
        f"({len(hp['dropped'])} variants dropped)"
    ]
    if hp.get("diverged"):
        lines[0] += f"; {len(hp['diverged'])} variants diverged"
    for name, law in hp["laws"].items():
        y, x = name.split("_vs_")
        if "not_fitted" in law:
            lines.append(f"  best {y} ~ {x}^e: not fitted: {law['not_fitted']}")
            continue
        ci = f" [{law['lo']:.3g}, {law['hi']:.3g}]" if law.get("lo") is not None else " (no CI)"
        edge = f", {k} edge cells left out" if (k := law.get("edge_left_out")) else ""
        edge += f", {f} flat cells left out" if (f := law.get("flat_left_out")) else ""
        lines.append(f"  best {y} ~ {x}^{law['exponent']:.3g}{ci} over {law['n']} cells{edge}")
    for key, head, tail in (
        ("edge_cells", "EDGE: optimum on the grid's edge", "widen that axis"),
        ("flat_cells", "FLAT: the loss does not vary along the axis",
         "no best value, left out of the laws (is that axis wired to the run?)"),
        ("diverged_next", "DIVERGED NEXT: the best value's neighbour diverged",
         "the optimum is bounded by divergence (do not widen that way)"),
    ):  # fmt: skip
        if cells := hp.get(key, []):
            more = "..." if len(cells) > 4 else ""
            lines.append(f"  {head} for {len(cells)} cell(s): {', '.join(cells[:4])}{more}; {tail}")
    return lines


def markdown(hp: dict[str, Any]) -> str:
    """The report.md section: one row per cell and axis."""
    md = ["", "## Hyperparameter axes", ""]
    md += [f"- {line.strip()}" for line in summary_lines(hp)]
    md += [
        "",
        "| cell | axis | best | CI | grid best | edge / diverged | loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in hp["groups"]:
        for axis, v in g["axes"].items():
            ci = f"[{v['lo']:.3g}, {v['hi']:.3g}]" if v.get("lo") is not None else "n/a"
            shown = ("n/a" if v.get("flat") else v["best"], v["grid_best"])  # flat: no best
            best, grid = (f"{x:.3g}" if isinstance(x, float) else str(x) for x in shown)
            note = (
                "EDGE: " + v["reason"]
                if v["edge"]
                else (v.get("diverged_next") or v.get("flat")) and v["reason"]
            )
            md.append(
                f"| {_label(g)} | {axis} | {best} | {ci} | {grid} | {note or ''} | "
                f"{g['loss']:.4f} |"
            )
    return "\n".join(md) + "\n"


def figure(hp: dict[str, Any], out_dir: Path, axis: str = "lr") -> list[str]:
    """loss_vs_<axis>.png (analysis.hparams_plot.loss_vs_axis); [] when no cell has that axis."""
    from analysis.hparams_plot import loss_vs_axis  # noqa: PLC0415 (matplotlib on demand)

    return loss_vs_axis(hp, out_dir, axis)
