"""Variable projection for the joint law: search only the exponents.

For fixed (alpha, beta) the law L = E + A x1 + B x2 with x1 = N^-alpha, x2 = D^-beta is linear in
(E, A, B) >= 0, so those come from a non-negative least-squares solve (weighted by 1/L, i.e. on
relative errors, which approximates the log-space fit). The 3-variable NNLS is solved exactly and
vectorised over a dense exponent grid by enumerating active sets. The best exponent pairs, scored
by the true summed log-Huber objective, seed a short 5-parameter L-BFGS that makes the result the
exact Huber optimum (the NNLS step alone minimises a slightly different, squared-error loss).

NNLS puts a term the data do not need at exactly 0. Its start is moved up to `START_FLOOR` of the
smallest loss (at the data's largest value of that term), not to log(1e-300): there the term's
gradient underflows, the polish cannot move it and the fit reported 1e-300 as a fitted value, at
a worse objective than the grid method's on an N x D grid whose N term was weak. Only a term
whose exponent the design identifies is freed so: on a size ladder (or one size, one token
count) the unidentified term left at 1e-300 stays switched off instead of trading off against
the other term without end (B -> infinity). Either way a term at its bound is reported as such
(`analysis.laws.fit.terms_at_bound`), never as a fitted value.
"""

from __future__ import annotations

import itertools

import numpy as np

from analysis.laws.core import LogHuberObjective

START_FLOOR = 1e-3  # a zero NNLS coefficient starts with its term at this share of min(L)
_SUBSETS = [s for m in (3, 2, 1) for s in itertools.combinations(range(3), m)]


def nnls3_batched(G_K33: np.ndarray, h_K3: np.ndarray) -> np.ndarray:
    """Exact argmin_{c >= 0} c'Gc - 2h'c for a batch of 3x3 problems (active-set enumeration)."""
    K = G_K33.shape[0]
    s = np.sqrt(np.maximum(np.einsum("kii->ki", G_K33), 1e-300))
    G = G_K33 / (s[:, :, None] * s[:, None, :])
    h = h_K3 / s
    best_val = np.full(K, np.inf)
    best = np.zeros((K, 3))
    for sub in _SUBSETS:
        ix = np.array(sub)
        Gs = G[:, ix[:, None], ix[None, :]]
        with np.errstate(all="ignore"):
            try:
                cs = np.linalg.solve(Gs, h[:, ix][:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:
                pinv = np.linalg.pinv(Gs)
                cs = np.einsum("kij,kj->ki", pinv, h[:, ix])
        c = np.zeros((K, 3))
        c[:, ix] = cs
        val = np.einsum("ki,kij,kj->k", c, G, c) - 2.0 * np.einsum("ki,ki->k", c, h)
        ok = np.all(cs >= 0.0, axis=1) & np.isfinite(val) & (val < best_val)
        best[ok] = c[ok]
        best_val[ok] = val[ok]
    return best / s


def profile_grid(
    N: np.ndarray,
    D: np.ndarray,
    L: np.ndarray,
    alphas: np.ndarray,
    betas: np.ndarray,
    identified: tuple[str, ...] = ("alpha", "beta"),
) -> np.ndarray:
    """(K, 5) vectors [e, a, b, alpha, beta] with (E, A, B) from NNLS per exponent pair; a zero
    coefficient of E, or of a term whose exponent is ``identified``, starts at its floor."""
    al, be = (x.ravel() for x in np.meshgrid(alphas, betas, indexing="ij"))
    w = 1.0 / L
    x1 = np.power(N[None, :], -al[:, None]) * w  # (K, n)
    x2 = np.power(D[None, :], -be[:, None]) * w
    x0 = np.broadcast_to(w, x1.shape)
    X = np.stack([x0, x1, x2], axis=2)  # (K, n, 3)
    G = np.einsum("kni,knj->kij", X, X)
    h = X.sum(axis=1)  # y = L * w = 1
    c = nnls3_batched(G, h)
    # the floor: each term at START_FLOOR * min(L) where it is largest on the data
    floor = (
        START_FLOOR
        * L.min()
        * np.column_stack([np.ones_like(al), np.power(N.min(), al), np.power(D.min(), be)])
    )
    dead = [False, "alpha" not in identified, "beta" not in identified]
    floor[:, dead] = 1e-300  # an unidentified term NNLS switched off stays off
    return np.column_stack([np.log(np.maximum(c, floor)), al, be])


def varpro_starts(
    N: np.ndarray,
    D: np.ndarray,
    L: np.ndarray,
    obj: LogHuberObjective,
    n_best: int = 32,
    identified: tuple[str, ...] = ("alpha", "beta"),
) -> np.ndarray:
    """Best ``n_best`` exponent pairs on a 0.05-step grid in [0.05, 2.5]^2, with their NNLS
    (E, A, B), ranked by the log-Huber objective; used as starts for the 5-parameter polish."""
    grid = np.arange(0.05, 2.5001, 0.05)
    V = profile_grid(N, D, L, grid, grid, identified)
    f, _ = obj(V, np.arange(V.shape[0]))
    f = np.where(np.isfinite(f), f, np.inf)
    return V[np.argsort(f)[:n_best]]
