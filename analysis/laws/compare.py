"""Compare two sweeps on the same data: compute multiplier, exponent-or-offset test, one figure.

Each sweep gets the same joint law as `scaling analyze`, L(N, D) = E + A/N^alpha + B/D^beta,
with a bootstrap over whole runs (A and B resampled independently). Minimising L at fixed
C = 6ND gives the compute-optimal frontier in closed form,

    L*(C) = E + K C^-gamma,   gamma = alpha beta / (alpha + beta),

so the compute that reaches a loss L is C*(L) = (K / (L - E))^(1/gamma) (infinite for L <= E).
The **compute multiplier** of B over A at loss L is m(L) = C*_A(L) / C*_B(L): m = 2 means B
reaches L with half of A's compute. It is computed for every bootstrap pair, so its percentile CI
carries the fit uncertainty of both sweeps. A change that acts as a constant compute multiplier
leaves E and gamma unchanged (L*_B(C) = L*_A(m C)); a change in the exponent gamma (or in E)
makes m drift with scale. The test reports bootstrap CIs (and two-sided bootstrap p-values) of
gamma_B - gamma_A and E_B - E_A; an interval that excludes 0 rejects "offset only" at that level.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from analysis.laws.bootstrap import Bootstrap, bootstrap_fit, percentile_ci
from analysis.laws.core import compute_optimal
from analysis.laws.fit import Fit, fit_joint, lost_nd
from analysis.tables import RunTable, infer_budgets
from scaling.errors import UserError
from scaling.fmt import with_ci


@dataclass
class SweepFit:
    """One side of a comparison: its table, joint fit and bootstrap."""

    label: str
    table: RunTable
    fit: Fit
    boot: Bootstrap


def frontier_params(p: dict) -> dict:
    """{E, K, gamma} of L*(C) = E + K C^-gamma from joint-law params (scalars or arrays)."""
    # a bootstrap resample whose N or D term sits at its bound 0 has no frontier: nan there
    # (counted as never reaching a loss downstream), without numpy's warnings on the console
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        gamma = p["alpha"] * p["beta"] / (p["alpha"] + p["beta"])
        c0 = 1e20  # K does not depend on the reference compute; 1e20 keeps the powers in range
        opt = compute_optimal(p, c0)
        excess = p["A"] / np.power(opt["N_opt"], p["alpha"]) + p["B"] / np.power(
            opt["D_opt"], p["beta"]
        )
    return {"E": np.asarray(p["E"]), "K": excess * c0**gamma, "gamma": np.asarray(gamma)}


def frontier_loss(f: dict, C) -> np.ndarray:
    """L*(C) of frontier params ``f`` (broadcasts)."""
    return f["E"] + f["K"] * np.power(np.asarray(C, dtype=np.float64), -f["gamma"])


def compute_for_loss(f: dict, L) -> np.ndarray:
    """C*(L): compute the frontier needs to reach loss L (inf where L <= E)."""
    L = np.asarray(L, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        gap = L - f["E"]
        C = np.power(f["K"] / gap, 1.0 / f["gamma"])
    return np.where(gap > 0, C, np.inf)


def fit_sweep(
    table: RunTable, label: str, *, n_resamples: int, seed: int, method: str = "grid"
) -> SweepFit:
    """Joint fit and run-level bootstrap of one sweep; a UserError when the data do not identify
    the N or D term (`lost_terms`: the frontier the multiplier reads then has no value)."""
    fit = fit_joint(table.N, table.D, table.loss, method=method)
    if nd := lost_nd(fit):
        raise UserError(
            f"{label}: {nd} (the data do not identify it), so the compute-optimal "
            "frontier, which the multiplier reads, is not identified; compare sweeps that vary N "
            "and D over a wider range"
        )
    boot = bootstrap_fit(
        fit,
        [np.log(table.N), np.log(table.D)],
        np.log(table.loss),
        np.asarray(table.run_id),
        n_resamples=n_resamples,
        seed=seed,
    )
    return SweepFit(label, table, fit, boot)


def _fingerprint(t: RunTable) -> bytes:
    """A digest of a table's (N, D, loss) rows, independent of their order."""
    rows = np.stack([np.asarray(x, dtype=np.float64) for x in (t.N, t.D, t.loss)], axis=1)
    rows = rows[np.lexsort(rows.T[::-1])]
    return hashlib.sha256(rows.tobytes()).digest()


def sweep_seeds(ta: RunTable, tb: RunTable, seed: int) -> tuple[int, int]:
    """Bootstrap seeds for A and B: ``seed`` for the sweep whose rows sort first by content and
    ``seed + 1`` for the other, so swapping A and B gives each sweep the same resamples and
    mirrors every result (m -> 1/m, B - A -> A - B, the same p-values); by position, swapping
    moved the CIs of gamma_B - gamma_A and their p-values (0.34 vs 0.45 on one pair)."""
    return (seed, seed + 1) if _fingerprint(ta) <= _fingerprint(tb) else (seed + 1, seed)


def _ci(point: float, samples: np.ndarray, level: float) -> dict:
    """Percentile CI; resamples where the quantity is undefined (both sweeps' frontiers stay
    above the loss: inf / inf) are left out and counted."""
    s = np.asarray(samples, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        lo, hi = percentile_ci(s, level) if not np.isnan(s).all() else (np.nan, np.nan)
    if np.any(s == np.inf):  # inf - inf in the interpolation (numpy's nan): that bound is inf,
        # the upper one or, when most resamples never reach the loss, the lower one too
        lo, hi = (np.inf if np.isnan(x) else x for x in (lo, hi))
    return {
        "estimate": float(point),
        "lo": float(lo),
        "hi": float(hi),
        "level": level,
        "frac_undefined": float(np.mean(np.isnan(s))),
    }


SAME = 1e-8  # relative: differences this small are the optimiser's rounding, not the data's


def _snap(diff, scale: float) -> np.ndarray:
    """Differences within SAME x scale set to 0: on noise-free sweeps (or two bitwise-equal
    ones) every resample refits the same parameters, and a constant -1.3e-12 in gamma_B -
    gamma_A gave a CI that excluded 0, p = 0 and the verdict "exponents differ"."""
    d = np.asarray(diff, dtype=np.float64)
    return np.where(np.abs(d) <= SAME * scale, 0.0, d)


def _p_two_sided(diff: np.ndarray) -> float:
    """Bootstrap two-sided p-value of "difference = 0": 2 min(P(d <= 0), P(d >= 0))."""
    d = diff[np.isfinite(diff)]
    if d.size == 0:
        return float("nan")
    return float(min(1.0, 2.0 * min(np.mean(d <= 0), np.mean(d >= 0))))


def law_C(t: RunTable) -> np.ndarray:
    """C = 6ND per run: the compute the joint law, its frontier L*(C) and C*(L) count. A table's
    C may be the engine's exact FLOPs (`--flops-kind exact`) or a mapped column; measuring C*(L)
    against that range marked a loss past the runs' 6ND as inside them."""
    return 6.0 * np.asarray(t.N, dtype=np.float64) * np.asarray(t.D, dtype=np.float64)


def default_losses(a: SweepFit, b: SweepFit, n: int = 3) -> list[float]:
    """``n`` losses that both frontiers reach inside the compute both sweeps cover: evenly spaced
    in A's log compute between the two frontiers' common loss range there. When the frontiers
    share no loss in that range (one is far better), A's losses at ``n`` log-spaced computes
    across it (or across the union when the ranges do not overlap); those rows come out marked
    extrapolated."""
    ca, cb = law_C(a.table), law_C(b.table)
    lo, hi = max(ca.min(), cb.min()), min(ca.max(), cb.max())
    if lo >= hi:
        lo, hi = min(ca.min(), cb.min()), max(ca.max(), cb.max())
    fa, fb = frontier_params(a.fit.params), frontier_params(b.fit.params)
    top = min(float(frontier_loss(fa, lo)), float(frontier_loss(fb, lo)))
    bottom = max(float(frontier_loss(fa, hi)), float(frontier_loss(fb, hi)))
    if bottom < top:
        c_lo, c_hi = compute_for_loss(fa, top), compute_for_loss(fa, bottom)
        return [float(x) for x in frontier_loss(fa, np.geomspace(c_lo, c_hi, n))]
    return [float(x) for x in frontier_loss(fa, np.geomspace(lo, hi, n))]


def compare(
    a: SweepFit,
    b: SweepFit,
    *,
    losses: list[float] | None = None,
    extrapolate: float = 100.0,
    level: float = 0.9,
) -> dict:
    """Compute multipliers of B over A (with CIs) and the exponent/offset test."""
    if a.table.loss_unit != b.table.loss_unit:
        raise UserError(
            f"the sweeps report loss in different units ({a.table.loss_unit!r} vs "
            f"{b.table.loss_unit!r}); compare runs on the same data, or use --loss bpb"
        )
    if not (np.isfinite(extrapolate) and extrapolate > 1):
        raise UserError(
            f"--extrapolate must be a finite factor > 1 on the largest budget, got {extrapolate}"
        )
    R = min(a.boot.n_resamples, b.boot.n_resamples)
    fa, fb = frontier_params(a.fit.params), frontier_params(b.fit.params)
    ba = frontier_params({k: v[:R] for k, v in a.boot.params.items()})
    bb = frontier_params({k: v[:R] for k, v in b.boot.params.items()})
    c_max = float(max(law_C(a.table).max(), law_C(b.table).max()))
    targets = [
        (float(L), "given" if losses else "in range") for L in (losses or default_losses(a, b))
    ]
    c_big = extrapolate * c_max
    targets.append(
        (float(frontier_loss(fa, c_big)), f"A's loss at {extrapolate:g}x the largest budget")
    )
    rows = []
    for L, where in targets:
        with np.errstate(divide="ignore", invalid="ignore"):
            m_point = compute_for_loss(fa, L) / compute_for_loss(fb, L)
            m_boot = compute_for_loss(ba, L) / compute_for_loss(bb, L)
        ca, cb = float(compute_for_loss(fa, L)), float(compute_for_loss(fb, L))
        rows.append(
            {
                "loss": L,
                "where": where,
                "C_A": ca,
                "C_B": cb,
                # either frontier outside its own runs' compute (default losses sit on the
                # edges); the union of both ranges let A's C pass in B's range unmarked
                "extrapolated": _outside(ca, law_C(a.table)) or _outside(cb, law_C(b.table)),
                "multiplier": _ci(m_point, m_boot, level),
                "p_B_cheaper": float(np.mean(m_boot > 1.0)),
            }
        )
    g_scale = max(abs(float(fa["gamma"])), abs(float(fb["gamma"])))
    e_scale = float(max(a.table.loss.max(), b.table.loss.max()))
    d_gamma = _snap(bb["gamma"] - ba["gamma"], g_scale)
    d_E = _snap(bb["E"] - ba["E"], e_scale)
    test = {
        "gamma_A": _ci(fa["gamma"], ba["gamma"], level),
        "gamma_B": _ci(fb["gamma"], bb["gamma"], level),
        "d_gamma": _ci(_snap(fb["gamma"] - fa["gamma"], g_scale), d_gamma, level),
        "p_equal_gamma": _p_two_sided(d_gamma),
        "E_A": _ci(fa["E"], ba["E"], level),
        "E_B": _ci(fb["E"], bb["E"], level),
        "d_E": _ci(_snap(fb["E"] - fa["E"], e_scale), d_E, level),
        "p_equal_E": _p_two_sided(d_E),
    }
    test["verdict"] = _verdict(test)
    return {
        "A": _side(a),
        "B": _side(b),
        "level": level,
        "loss_unit": a.table.loss_unit,
        "n_resamples": R,
        "extrapolate": extrapolate,
        "multipliers": rows,
        "test": test,
    }


def _outside(c: float, runs: np.ndarray) -> bool:
    """Whether compute c lies outside [min, max] of a sweep's runs (to rounding)."""
    return bool(c > runs.max() * (1 + 1e-9) or c < runs.min() * (1 - 1e-9))


def _excludes_zero(d: dict) -> bool:
    return d["lo"] > 0 or d["hi"] < 0


def _verdict(t: dict) -> str:
    lvl = int(round(t["d_gamma"]["level"] * 100))
    if _excludes_zero(t["d_gamma"]):
        faster = "B" if t["d_gamma"]["estimate"] > 0 else "A"
        also = (
            "; E differs too, so the local slopes can order either way: read the multipliers "
            "at each loss"
            if _excludes_zero(t["d_E"])
            else ""
        )
        return (
            f"exponents differ ({lvl}% CI of gamma_B - gamma_A excludes 0): {faster} has the "
            f"larger frontier exponent (its reducible loss L - E falls faster with compute), so "
            f"the multiplier changes with scale{also}"
        )
    if _excludes_zero(t["d_E"]):
        return (
            f"same exponent within the {lvl}% CI, but the irreducible losses E differ: the "
            "multiplier changes with scale"
        )
    return (
        f"offset only: exponent and E agree within their {lvl}% CIs, consistent with a "
        "constant compute multiplier (the CIs bound how large a difference could hide)"
    )


def _side(s: SweepFit) -> dict:
    return {
        "label": s.label,
        "source": s.table.source,
        "n_runs": len(s.table),
        "C_range": [float(law_C(s.table).min()), float(law_C(s.table).max())],  # 6ND
        "params": s.fit.params,
        "n_unconverged_resamples": s.boot.n_unconverged,
        "frontier_vs_runs": frontier_vs_runs(s),
    }


MISFIT = 0.03  # a budget's best run this far below the fitted frontier: the law misfits there


def frontier_vs_runs(s: SweepFit) -> dict:
    """Does the fitted frontier L*(C) stay below the sweep's own best run at each budget? It
    should (L* is the law's minimum over N at C = 6ND; the minimum of a budget's noisy runs sits
    a little below it), so a best run more than MISFIT (3%, the back-test's threshold) below it
    means the law misfits the sweep there, and multipliers at those losses read the misfit. A
    tolerance from the fit's own residuals would hide exactly the misfits that inflate them
    (Porian et al.'s tuned constant-lr sweep: best runs 3-5% below at both ends, RMS 3%).
    Budgets are the table's, else clusters of C as in `scaling analyze` (tables.infer_budgets):
    grouping on exact C would make every run its own budget when C = 6ND varies run to run."""
    t, tol, f = s.table, MISFIT, frontier_params(s.fit.params)
    C = 6.0 * t.N * t.D
    key = infer_budgets(t)
    gaps = []
    for k in np.unique(key):
        i = np.flatnonzero(key == k)
        j = i[np.argmin(t.loss[i])]
        gaps.append((float(np.log(t.loss[j] / frontier_loss(f, C[j]))), float(C[j])))
    below = [(g, c) for g, c in gaps if g < -tol]
    worst = min(below, default=(0.0, None))
    return {"n_budgets": len(gaps), "n_below": len(below), "tol": tol,
            "worst_below": float(-np.expm1(worst[0])), "worst_at_C": worst[1]}  # fmt: skip


def misfit_lines(res: dict) -> list[str]:
    """A warning per side whose best runs fall below its own fitted frontier."""
    out = []
    for side in ("A", "B"):
        f, label = res[side].get("frontier_vs_runs") or {}, res[side]["label"]
        if f.get("n_below"):
            out.append(
                f"  warning: {side} = {label}: its fitted frontier lies above its own best run at "
                f"{f['n_below']} of {f['n_budgets']} budgets (by up to {f['worst_below']:.1%}, at "
                f"C = {f['worst_at_C']:.3g}): the joint law misfits that sweep there, so "
                "multipliers at those losses measure the misfit; see the figure"
            )
    return out


def summary_lines(res: dict) -> list[str]:
    """The console summary of `scaling compare`."""
    A, B, lvl, unit = (
        res["A"]["label"],
        res["B"]["label"],
        int(round(res["level"] * 100)),
        res["loss_unit"],
    )
    out = [
        f"compute multiplier of B = {B} over A = {A} ({lvl}% CIs, {res['n_resamples']} "
        f"bootstrap resamples of whole runs per sweep); > 1 means B needs less compute:",
    ]
    for r in res["multipliers"]:
        m = r["multiplier"]
        tag = " (extrapolated)" if r["extrapolated"] else ""
        never = [s for s in ("A", "B") if not np.isfinite(r[f"C_{s}"])]
        if never:  # C*(L) = inf: the loss is at or below that frontier's E (m = inf or nan)
            es = ", ".join(f"{s}'s E = {res['test'][f'E_{s}']['estimate']:.4g}" for s in never)
            out.append(
                f"  loss {r['loss']:.4g} {unit}: {' and '.join(never)} never "
                f"{'reach' if len(never) == 2 else 'reaches'} it (at or "
                f"below {es}): no multiplier; ask for a loss above E"
            )
            continue
        out.append(
            f"  loss {r['loss']:.4g} {unit}: A needs C = {r['C_A']:.3g}, B {r['C_B']:.3g}; "
            f"multiplier {with_ci(m, '.3g')}{tag}"
        )
    t = res["test"]
    for k, name in (("gamma", "frontier exponent gamma"), ("E", "irreducible loss E")):
        d = t[f"d_{k}"]
        out.append(
            f"  {name}: A {t[f'{k}_A']['estimate']:.4g}, B {t[f'{k}_B']['estimate']:.4g}; "
            f"B - A = {with_ci(d, '+.4g')} "
            f"(bootstrap p = {t[f'p_equal_{k}']:.2f})"
        )
    out.append(f"  verdict: {t['verdict']}")
    return out + misfit_lines(res)
