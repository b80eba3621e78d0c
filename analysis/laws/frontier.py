"""Cross-checks of compute-optimal allocation: Approach 1 (envelope) and Approach 2 (IsoFLOP).

- Approach 1: the lower envelope of loss versus FLOPs over all runs (each run's validation
  curve when its metrics file exists, else its final point); the model size on the envelope gives
  N_opt(C) ~ C^a. The frontier law L(C) = E + A C^-alpha is fitted to the envelope points.
- Approach 2: per IsoFLOP budget a parabola in log N; its minimum is N_opt(C); then
  log N_opt = a log C + c and log D_opt = b log C + c' by least squares. b is fitted, not taken
  as 1 - a: that holds only when C = 6ND, and a table's C may count FLOPs otherwise (the
  engine's exact FLOPs with attention, a published FLOP column). Needs >= 2 budgets with an
  interior minimum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.design import levels
from analysis.tables import RunTable, infer_budgets
from scaling.errors import UserError
from scaling.fileio import read_jsonl

VAL_KEYS = ("val_loss", "eval_loss", "validation_loss")
TOKEN_KEYS = ("tokens", "tokens_seen", "n_tokens")


def read_curve(path: str | None, N: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(C, val_loss) points of one run from its metrics JSONL (C = 6 N tokens), or None."""
    if not path or not Path(path).is_file():
        return None
    Cs, Ls = [], []
    for rec in read_jsonl(path):  # damaged lines (torn, not UTF-8, not objects): said, skipped
        v = next((rec[k] for k in VAL_KEYS if rec.get(k) is not None), None)
        t = next((rec[k] for k in TOKEN_KEYS if rec.get(k) is not None), None)
        if v is None or t is None or not np.isfinite(v) or v <= 0 or t <= 0:
            continue
        Cs.append(6.0 * N * float(t))
        Ls.append(float(v))
    return (np.array(Cs), np.array(Ls)) if Cs else None


def envelope(table: RunTable, use_curves: bool = True) -> dict:
    """Approach 1: points (C, loss, N) on the lower envelope of loss versus C, and ``run``: the
    table row of the run each point comes from (a run's curve can give many envelope points,
    which share that run's noise: a bootstrap must resample them together)."""
    C, L, N, n_curves = [table.C], [table.loss], [table.N], 0
    R = [np.arange(len(table))]
    if use_curves:
        for i, path in enumerate(table.curves):
            cur = read_curve(path, float(table.N[i]))
            if cur is not None:
                C.append(cur[0])
                L.append(cur[1])
                N.append(np.full(cur[0].size, table.N[i]))
                R.append(np.full(cur[0].size, i))
                n_curves += 1
    C, L, N, R = (np.concatenate(x) for x in (C, L, N, R))
    order = np.lexsort((L, C))
    C, L, N, R = C[order], L[order], N[order], R[order]
    on = L < np.minimum.accumulate(np.concatenate([[np.inf], L[:-1]]))
    out = {"C": C[on], "loss": L[on], "N": N[on], "run": R[on]}
    out.update(n_curves=n_curves, n_points=int(C.size))
    if np.unique(out["N"]).size >= 2:
        a, c0 = np.polyfit(np.log(out["C"]), np.log(out["N"]), 1)
        out["a"], out["log_coef"] = float(a), float(c0)
    return out


def _parabola_fits(x: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted least-squares quadratics y ~ p0 + p1 x + p2 x^2 for each weight row: (R, 3)."""
    X = np.stack([np.ones_like(x), x, x * x], axis=1)
    G = np.einsum("rn,ni,nj->rij", W, X, X)
    h = np.einsum("rn,ni,n->ri", W, X, y)
    with np.errstate(all="ignore"):
        ok = np.linalg.cond(G) < 1e12
        P = np.full((W.shape[0], 3), np.nan)
        if ok.any():
            P[ok] = np.linalg.solve(G[ok], h[ok][:, :, None])[:, :, 0]
    return P


def approach2(
    table: RunTable, W: np.ndarray | None = None, min_points: int = 3, minima_only: bool = False
) -> dict:
    """Approach 2 on the table; with bootstrap weights W (R, n_runs) also per-resample exponents.

    Returns per-budget minima, the exponents a (N_opt ~ C^a) and b (D_opt ~ C^b), each fitted
    against the table's C (a + b = 1 only when C = 6ND), and when W is given arrays "a_boot",
    "b_boot" (NaN where a resample has < 2 usable budgets). ``minima_only``: just {"minima",
    "notes"} (one budget's minimum needs no second budget; UserError when none)."""
    budgets = infer_budgets(table)
    rows, notes = [], []
    Wfull = np.ones((1, len(table))) if W is None else np.vstack([np.ones(len(table)), W])
    logN_opt = []  # per budget: (R+1,) log N_opt
    lc_opt = []  # per budget: (R+1,) log C at N_opt, in the table's FLOP convention
    ld_opt = []  # per budget: (R+1,) log D at N_opt
    sizes = levels(table.N)  # sizes within 0.03 dex are one size (as the design counts them)
    for c in np.unique(budgets):
        m = budgets == c
        if np.unique(sizes[m]).size < min_points:
            notes.append(f"budget {c:.3g}: fewer than {min_points} model sizes, not used")
            continue
        x = np.log(table.N[m])
        xc = x.mean()
        P = _parabola_fits(x - xc, table.loss[m], Wfull[:, m])
        with np.errstate(all="ignore"):
            lopt = np.where(P[:, 2] > 0, xc - P[:, 1] / (2 * P[:, 2]), np.nan)
            lopt = np.where((lopt > x.min() - 1.0) & (lopt < x.max() + 1.0), lopt, np.nan)
        if not np.isfinite(lopt[0]):
            notes.append(f"budget {c:.3g}: IsoFLOP parabola has no minimum near the sampled N")
            continue
        inside = bool(x.min() <= lopt[0] <= x.max())
        if not inside:
            notes.append(f"budget {c:.3g}: minimum lies outside the sampled N (extrapolated)")
        p = P[0]
        # the budget's runs in the table's own units: log D and log C are (locally) linear in
        # log N along an IsoFLOP curve, so read D_opt and C_opt off those lines at N_opt (the
        # nominal budget may count FLOPs another way: the grid's exact FLOPs against C = 6ND)
        d_line = np.polyfit(x, np.log(table.D[m]), 1)
        c_line = np.polyfit(x, np.log(table.C[m]), 1)
        lc_opt.append(np.polyval(c_line, lopt))
        ld_opt.append(np.polyval(d_line, lopt))
        rows.append(
            {
                "budget": float(c),
                "C_opt": float(np.exp(lc_opt[-1][0])),
                "N_opt": float(np.exp(lopt[0])),
                "D_opt": float(np.exp(ld_opt[-1][0])),
                "loss_min": float(p[0] + p[1] * (lopt[0] - xc) + p[2] * (lopt[0] - xc) ** 2),
                "n_runs": int(m.sum()),
                "inside_range": inside,
                "parabola": {"x_center": float(xc), "coef": [float(v) for v in p]},
            }
        )
        logN_opt.append((c, lopt))
    if minima_only and rows:
        return {"minima": rows, "notes": notes}
    if len(rows) < 2:
        raise UserError(
            f"Approach 2 needs IsoFLOP minima at >= 2 budgets, found {len(rows)} "
            f"({'; '.join(notes) or 'one budget'}); run the sweep at more compute budgets"
        )
    Y = np.stack([v for _, v in logN_opt], axis=1)  # (R+1, n_budgets)
    LC = np.stack(lc_opt, axis=1)  # the compute of each minimum, per resample
    LD = np.stack(ld_opt, axis=1)
    a_all, c_all, b_all = (np.full(Y.shape[0], np.nan) for _ in range(3))
    for r in range(Y.shape[0]):
        ok = np.isfinite(Y[r])
        if ok.sum() >= 2:
            a_all[r], c_all[r] = np.polyfit(LC[r, ok], Y[r, ok], 1)
            b_all[r] = np.polyfit(LC[r, ok], LD[r, ok], 1)[0]
    out = {
        "minima": rows,
        "a": float(a_all[0]),
        "b": float(b_all[0]),
        "log_coef": float(c_all[0]),
        "notes": notes,
    }
    if W is not None:
        out["a_boot"], out["b_boot"] = a_all[1:], b_all[1:]
    return out
