"""Scaling laws, their log-space Huber objective, and compute-optimal allocation.

Conventions (used everywhere in analysis/):
- Joint (Chinchilla) law  L(N, D) = E + A / N**alpha + B / D**beta, fitted through the
  log-sum-exp parametrisation  log L = LSE(e, a - alpha log N, b - beta log D)  with
  e = log E, a = log A, b = log B.  Parameter vectors are ordered  [e, a, b, alpha, beta].
- Single-variable law  L(x) = E + A * x**-alpha  (frontier L(C), and L(N), L(D)) is the same
  model with one term:  [e, a, alpha].
- Multiplicative fine-tuning law (Zhang et al. 2024)  L(X, D_f) = E + A * X**-alpha * D_f**-beta,
  X the model size (or pre-training tokens), D_f the fine-tuning examples, fitted through
  log L = LSE(e, a - alpha log X - beta log D_f). Parameter vectors are [e, a, alpha, beta].
- Compute C = 6 N D. Allocation exponents: N_opt ~ C**a_exp, D_opt ~ C**b_exp with
  a_exp = beta / (alpha + beta), b_exp = alpha / (alpha + beta).
"""

from __future__ import annotations

import numpy as np

JOINT_NAMES = ("E", "A", "B", "alpha", "beta")
MULT_NAMES = ("E", "A", "alpha", "beta")
POWER_NAMES = ("E", "A", "alpha")
HUBER_DELTA = 1e-3


def _take(arr: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    """Rows ``idx`` of a per-problem array (ndim 2), or the shared array itself (ndim 1)."""
    if arr is None or arr.ndim == 1:
        return arr
    return arr[idx]


class LogHuberObjective:
    """Summed Huber loss of log-residuals for L = E + sum_j exp(c_j) * exp(-alpha_j * u_j).

    ``feats`` is a list of k log-features u_j, each (n,) shared or (B, n) per problem;
    ``logL`` is (n,) or (B, n); ``weights`` (B, n) multiplies each point's Huber term (bootstrap
    counts), or None for unit weights. Parameters per row: [e, c_1..c_k, alpha_1..alpha_k].
    Calling it with (X_bP, idx_b) returns (f_b, grad_bP) for rows idx of the batch.
    """

    def __init__(
        self,
        feats: list[np.ndarray],
        logL: np.ndarray,
        weights: np.ndarray | None = None,
        delta: float = HUBER_DELTA,
    ) -> None:
        self.feats = [np.asarray(u, dtype=np.float64) for u in feats]
        self.logL = np.asarray(logL, dtype=np.float64)
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.delta = float(delta)
        self.k = len(self.feats)

    def __call__(self, X_bP: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k, delta = self.k, self.delta
        # exp without max-shift: overflow gives inf, which the line search rejects; the relative
        # precision of exp does not depend on the shift, so the optimum is unaffected.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            e_b1 = np.exp(X_bP[:, 0:1])
            ex = []
            for j in range(k):
                u = _take(self.feats[j], idx)
                t = u * (-X_bP[:, 1 + k + j : 2 + k + j])
                t += X_bP[:, 1 + j : 2 + j]
                ex.append(np.exp(t, out=t))
            tot = ex[0] + e_b1
            for j in range(1, k):
                tot += ex[j]
            r = np.log(tot)
            r -= _take(self.logL, idx)
            a = np.abs(r)
            hub = np.minimum(a, delta)
            hub *= a - 0.5 * hub  # = r^2/2 inside [-delta, delta], delta(|r| - delta/2) outside
            psi = np.clip(r, -delta, delta, out=r)
            w = _take(self.weights, idx)
            if w is not None:
                hub *= w
                psi *= w
            psi /= tot
            f = hub.sum(axis=1)
            G = np.empty_like(X_bP)
            G[:, 0] = psi.sum(axis=1) * e_b1[:, 0]
            for j in range(k):
                pe = ex[j]
                pe *= psi
                G[:, 1 + j] = pe.sum(axis=1)
                pe *= _take(self.feats[j], idx)
                G[:, 1 + k + j] = -pe.sum(axis=1)
        return f, G


def joint_loss(p: dict, N: np.ndarray, D: np.ndarray) -> np.ndarray:
    """L(N, D) = E + A/N^alpha + B/D^beta (vectorised over N, D and over parameter arrays)."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # a diverged bootstrap
        # resample's huge exponent or coefficient gives 0, inf or nan, as for `compute_optimal`
        return p["E"] + p["A"] / np.power(N, p["alpha"]) + p["B"] / np.power(D, p["beta"])


def joint_loss_vec(v: np.ndarray, N: np.ndarray, D: np.ndarray) -> np.ndarray:
    """L(N, D) from the log-space vector [e, a, b, alpha, beta] (leading batch dims broadcast
    against N and D): exact where the natural parameters under- or overflow (a size ladder's fit
    had B = exp(-800) with beta = -43: `joint_loss` read that term as 0 * inf = nan)."""
    v = np.asarray(v, dtype=np.float64)
    lN, lD = np.log(N), np.log(D)
    terms = [v[..., 0] + 0 * lN, v[..., 1] - v[..., 3] * lN, v[..., 2] - v[..., 4] * lD]
    return np.exp(np.logaddexp(np.logaddexp(terms[0], terms[1]), terms[2]))


def power_loss(p: dict, x: np.ndarray) -> np.ndarray:
    """L(x) = E + A * x^-alpha."""
    return p["E"] + p["A"] * np.power(x, -p["alpha"])


def joint_from_vec(v: np.ndarray) -> dict:
    """[e, a, b, alpha, beta] (any leading batch shape) -> dict of E, A, B, alpha, beta."""
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(over="ignore"):  # an unidentified term's resample may run off: inf
        return {
            "E": np.exp(v[..., 0]),
            "A": np.exp(v[..., 1]),
            "B": np.exp(v[..., 2]),
            "alpha": v[..., 3],
            "beta": v[..., 4],
        }


def power_from_vec(v: np.ndarray) -> dict:
    """[e, a, alpha] -> dict of E, A, alpha."""
    v = np.asarray(v, dtype=np.float64)
    return {"E": np.exp(v[..., 0]), "A": np.exp(v[..., 1]), "alpha": v[..., 2]}


def allocation_exponents(p: dict) -> tuple:
    """(a, b): N_opt ~ C^a with a = beta/(alpha+beta), D_opt ~ C^b with b = alpha/(alpha+beta)."""
    s = p["alpha"] + p["beta"]
    return p["beta"] / s, p["alpha"] / s


def compute_optimal(p: dict, C) -> dict:
    """Minimise L(N, D) subject to 6 N D = C, in closed form.

    With G = (alpha A / (beta B))^(1/(alpha+beta)):  N_opt = G (C/6)^a,  D_opt = (C/6)^b / G.
    Vectorised over C and over parameter arrays (bootstrap samples broadcast against C).
    """
    C = np.asarray(C, dtype=np.float64)
    a_exp, b_exp = allocation_exponents(p)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # a resample with an
        # exponent <= 0 (or a term at 0) has no optimum: NaN or inf, left out of its CI
        G = np.power(p["alpha"] * p["A"] / (p["beta"] * p["B"]), 1.0 / (p["alpha"] + p["beta"]))
        N = G * np.power(C / 6.0, a_exp)
        D = np.power(C / 6.0, b_exp) / G
        return {"N_opt": N, "D_opt": D, "tokens_per_param": D / N, "loss": joint_loss(p, N, D)}


class MultLogHuberObjective:
    """Summed Huber loss of log-residuals for L = E + exp(a - alpha u_1 - beta u_2) (the
    multiplicative law; u_1 = log X, u_2 = log D_f). Same calling convention, weights and
    delta as LogHuberObjective; parameters per row [e, a, alpha, beta]."""

    def __init__(
        self,
        feats: list[np.ndarray],
        logL: np.ndarray,
        weights: np.ndarray | None = None,
        delta: float = HUBER_DELTA,
    ) -> None:
        self.u1, self.u2 = (np.asarray(u, dtype=np.float64) for u in feats)
        self.logL = np.asarray(logL, dtype=np.float64)
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.delta = float(delta)

    def __call__(self, X_bP: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            e_b1 = np.exp(X_bP[:, 0:1])
            t = X_bP[:, 1:2] - X_bP[:, 2:3] * self.u1 - X_bP[:, 3:4] * self.u2
            ex = np.exp(t)
            tot = ex + e_b1
            r = np.log(tot) - self.logL
            a = np.abs(r)
            hub = np.minimum(a, self.delta)
            hub *= a - 0.5 * hub
            psi = np.clip(r, -self.delta, self.delta)
            w = _take(self.weights, idx)
            if w is not None:
                hub *= w
                psi *= w
            psi /= tot
            pe = psi * ex
            G = np.stack(
                [
                    psi.sum(axis=1) * e_b1[:, 0],
                    pe.sum(axis=1),
                    -(pe * self.u1).sum(axis=1),
                    -(pe * self.u2).sum(axis=1),
                ],
                axis=1,
            )
        return hub.sum(axis=1), G


def mult_loss(p: dict, X, D_f) -> np.ndarray:
    """L(X, D_f) = E + A * X^-alpha * D_f^-beta (vectorised, parameter arrays broadcast)."""
    X, D_f = np.asarray(X, dtype=np.float64), np.asarray(D_f, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged bootstrap resample
        return p["E"] + p["A"] * np.power(X, -p["alpha"]) * np.power(D_f, -p["beta"])


def mult_from_vec(v: np.ndarray) -> dict:
    """[e, a, alpha, beta] -> dict of E, A, alpha, beta."""
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(over="ignore"):  # a diverged bootstrap resample gives inf, reported as such
        return {
            "E": np.exp(v[..., 0]),
            "A": np.exp(v[..., 1]),
            "alpha": v[..., 2],
            "beta": v[..., 3],
        }


FROM_VEC = {"joint": joint_from_vec, "power": power_from_vec, "mult": mult_from_vec}
