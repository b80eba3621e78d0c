"""Batched L-BFGS: minimise many independent smooth problems at once with numpy.

Every row of ``X_BP`` is its own problem (a start of a multi-start fit, or one bootstrap
resample). All rows share one python loop, so the cost per iteration is a handful of vectorised
numpy passes instead of thousands of scipy calls. Rows stop independently once converged.

The objective is ``fg(X_bP, idx_b) -> (f_b, g_bP)`` where ``idx_b`` are the row indices being
evaluated (so per-row data such as bootstrap weights can be subset by the caller).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Objective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class BatchResult:
    """Final iterate, value, gradient and status of every row."""

    x: np.ndarray  # (B, P)
    f: np.ndarray  # (B,)
    g: np.ndarray  # (B, P)
    n_iter: np.ndarray  # (B,) iterations taken
    converged: np.ndarray  # (B,) gradient or objective tolerance reached


def lbfgs_batched(
    fg: Objective,
    X0_BP: np.ndarray,
    *,
    max_iter: int = 500,
    history: int = 10,
    gtol: float = 1e-9,
    ftol: float = 1e-15,
    max_ls: int = 40,
) -> BatchResult:
    """Minimise each row of ``X0_BP`` with L-BFGS and a backtracking Armijo line search.

    A row converges when its gradient inf-norm is below ``gtol`` or its relative decrease is below
    ``ftol``; a row whose line search cannot decrease the objective any more is also stopped
    (at a float64 noise floor that is convergence; its gradient norm is reported either way).
    """
    X = np.array(X0_BP, dtype=np.float64, copy=True)
    B, P = X.shape
    all_idx = np.arange(B)
    f, g = fg(X, all_idx)
    S = np.zeros((history, B, P))
    Y = np.zeros((history, B, P))
    rho = np.zeros((history, B))
    gamma = 1.0 / np.maximum(np.abs(g).max(axis=1), 1e-300)  # first step: unit inf-norm move
    gamma = np.minimum(gamma, 1.0)
    n_iter = np.zeros(B, dtype=np.int64)
    converged = np.abs(g).max(axis=1) < gtol
    active = ~converged & np.isfinite(f)
    for it in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        gA = g[idx]
        d, gd = _direction(gA, S, Y, rho, gamma, idx, it)
        t, f_new, g_new, todo = _line_search(fg, X, f, idx, d, gd, max_ls)
        failed = np.zeros(idx.size, dtype=bool)
        failed[todo] = True
        good = ~failed
        gi = idx[good]
        s = t[good, None] * d[good]
        y = g_new[good] - gA[good]
        sy = np.einsum("bp,bp->b", s, y)
        yy = np.einsum("bp,bp->b", y, y)
        pos = it % history
        valid = sy > 1e-300 * np.maximum(yy, 1.0)
        S[pos, gi] = s
        Y[pos, gi] = y
        rho[pos, gi] = np.where(valid, 1.0 / np.where(valid, sy, 1.0), 0.0)
        gamma[gi] = np.where(valid & (yy > 0), sy / np.where(yy > 0, yy, 1.0), gamma[gi])
        rho[pos, idx[failed]] = 0.0
        f_old = f[gi]
        X[gi] += s
        f[gi] = f_new[good]
        g[gi] = g_new[good]
        n_iter[idx] += 1
        small_g = np.abs(g[gi]).max(axis=1) < gtol
        small_f = (f_old - f[gi]) <= ftol * np.maximum(np.abs(f_old), np.abs(f[gi]))
        done = small_g | small_f
        converged[gi[done]] = True
        active[gi[done]] = False
        active[idx[failed]] = False  # stopped: no further decrease found (see gradient norm)
        converged[idx[failed]] = np.abs(g[idx[failed]]).max(axis=1) < 1e3 * gtol
    return BatchResult(x=X, f=f, g=g, n_iter=n_iter, converged=converged)


def _direction(gA, S, Y, rho, gamma, idx, it: int) -> tuple[np.ndarray, np.ndarray]:
    """The L-BFGS direction of the active rows (two-loop recursion, newest pair first: ring
    buffer position = iteration mod history), and its slope; a row whose direction is not a
    descent restarts from steepest descent (its history is dropped in ``rho``)."""
    history = S.shape[0]
    q = gA.copy()
    order = [(it - 1 - j) % history for j in range(min(it, history))]
    # the active rows' history (the slots in use: 0..m-1), gathered once rather than once per
    # pair and loop; each row's P values stay contiguous, so the arithmetic and the results are
    # bitwise the same, in about 30% less time once the history is full
    m = len(order)
    S_A, Y_A, rho_A = S[:m, idx], Y[:m, idx], rho[:m, idx]
    alphas = []
    for j in order:
        a_j = rho_A[j] * np.einsum("bp,bp->b", S_A[j], q)
        q -= a_j[:, None] * Y_A[j]
        alphas.append(a_j)
    r = gamma[idx, None] * q
    for j, a_j in zip(reversed(order), reversed(alphas), strict=True):
        b_j = rho_A[j] * np.einsum("bp,bp->b", Y_A[j], r)
        r += (a_j - b_j)[:, None] * S_A[j]
    d = -r
    gd = np.einsum("bp,bp->b", gA, d)
    bad = ~(gd < 0) | ~np.isfinite(gd)
    if bad.any():
        d[bad] = -gamma[idx[bad], None] * gA[bad]
        gd[bad] = np.einsum("bp,bp->b", gA[bad], d[bad])
        rho[:, idx[bad]] = 0.0
    return d, gd


def _line_search(fg: Objective, X, f, idx, d, gd, max_ls: int, c1: float = 1e-4):
    """Backtracking Armijo line search, vectorised over the rows still searching: (step t,
    f and g at the accepted step, the rows (positions in ``idx``) that found no decrease)."""
    t = np.ones(idx.size)
    f_new = np.full(idx.size, np.inf)
    g_new = np.zeros_like(d)
    todo = np.arange(idx.size)
    for _ in range(max_ls):
        if todo.size == 0:
            break
        Xt = X[idx[todo]] + t[todo, None] * d[todo]
        ft, gt = fg(Xt, idx[todo])
        ok = np.isfinite(ft) & (ft <= f[idx[todo]] + c1 * t[todo] * gd[todo])
        f_new[todo[ok]] = ft[ok]
        g_new[todo[ok]] = gt[ok]
        nxt = todo[~ok]
        t[nxt] *= np.where(np.isfinite(ft[~ok]), 0.5, 0.1)
        todo = nxt
    return t, f_new, g_new, todo
