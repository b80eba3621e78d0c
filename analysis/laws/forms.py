"""Several scaling-law forms behind one interface, fitted by the same robust machinery.

Every form predicts log L from a design (arrays N, D and, for the data-constrained form, U)
and is fitted by minimising the summed Huber loss (delta 1e-3) of log-residuals with the batched
multi-start L-BFGS of analysis/laws/lbfgs.py (analysis/laws/form_fit.py). Parameters live in
log space where they are positive.

| name             | law                                                   | vector           |
|------------------|-------------------------------------------------------|------------------|
| chinchilla       | E + A/N^alpha + B/D^beta (Hoffmann et al. 2022)       | e a b alpha beta |
| kaplan           | [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (Kaplan)  | k1 k2 g alpha_D  |
| overtrain        | E + (a M^eta + b M^-eta) C^-eta, M = D/N (Gadre 2024) | e la lb eta      |
| power_sum        | A/N^alpha + B/D^beta (Chinchilla's without E)         | a b alpha beta   |
| data_constrained | E + A/N'^alpha + B/D'^beta (Muennighoff 2023): D', N' | e a b alpha beta |
|                  | effective unique data and parameters (see the class)  | log R*, log R_N* |
| frontier         | L_opt(C) = E + A C^-alpha (Approach 2's power law)    | e a alpha        |

Kaplan: k1 = g log N_c, k2 = log D_c, g = alpha_N/alpha_D. Over-training: C = 6ND, so the law is
Chinchilla's with alpha = beta = 2 eta (tested). Power sum: four parameters; over a short compute
range the irreducible loss E trades off against steep exponents and Chinchilla's law can flatten
too early, which this form cannot. Data-constrained: with no repetition (D <= U) and no more
parameters than the unique data can use, it is exactly Chinchilla's law. The frontier form is
fitted to per-budget minimum losses and predicts compute-optimal loss only.
"""

from __future__ import annotations

import itertools

import numpy as np

from analysis.laws.core import HUBER_DELTA, LogHuberObjective, joint_from_vec

LN6 = float(np.log(6.0))


def _lse(terms: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """log-sum-exp of same-shape arrays and the softmax weights of each term."""
    mx = terms[0].copy()
    for t in terms[1:]:
        np.maximum(mx, t, out=mx)
    ex = [np.exp(t - mx) for t in terms]
    tot = ex[0].copy()
    for e in ex[1:]:
        tot += e
    return mx + np.log(tot), [e / tot for e in ex]


def design(N, D, U=None) -> dict:
    """Arrays of log features a form reads: lnN, lnD, lnC (C = 6ND) and, if given, U."""
    N, D = np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64)
    X = {"N": N, "D": D, "lnN": np.log(N), "lnD": np.log(D)}
    X["lnC"] = LN6 + X["lnN"] + X["lnD"]
    if U is not None:
        U = np.asarray(U, dtype=np.float64)
        X["U"] = U
        X["R"] = np.maximum(D / U - 1.0, 0.0)
    return X


def subset(X: dict, mask: np.ndarray) -> dict:
    return {k: v[mask] for k, v in X.items()}


class Form:
    """A law: names, natural parameters, log-prediction with Jacobian, multi-start grid."""

    name = ""
    names: tuple[str, ...] = ()
    kind = "ND"  # "ND": predicts any (N, D) run; "frontier": compute-optimal loss at C only

    @property
    def n_params(self) -> int:
        return len(self.names)

    def applicable(self, X: dict) -> bool:
        return True

    def logpred(self, V: np.ndarray, X: dict, jac: bool = False):
        """log L for parameter rows V (B, P) at design points X: (B, n) [, Jacobian (B, n, P)]."""
        raise NotImplementedError

    def natural(self, v: np.ndarray) -> dict:
        raise NotImplementedError

    def starts(self) -> np.ndarray:
        raise NotImplementedError

    def objective(self, X: dict, logL: np.ndarray, weights=None, delta: float = HUBER_DELTA):
        return JacHuber(self, X, logL, weights, delta)


class JacHuber:
    """Summed (weighted) Huber loss of log-residuals for any form with an analytic Jacobian."""

    def __init__(self, form: Form, X: dict, logL, weights=None, delta: float = HUBER_DELTA):
        self.form, self.X, self.delta = form, X, float(delta)
        self.logL = np.asarray(logL, dtype=np.float64)
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)

    def __call__(self, V: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            m, J = self.form.logpred(V, self.X, jac=True)
            r = m - self.logL[None, :]
            a = np.abs(r)
            hub = np.minimum(a, self.delta)
            hub *= a - 0.5 * hub
            psi = np.clip(r, -self.delta, self.delta)
            if self.weights is not None:
                w = self.weights[idx] if self.weights.ndim == 2 else self.weights[None, :]
                hub, psi = hub * w, psi * w
            f = hub.sum(axis=1)
            G = np.einsum("bn,bnp->bp", psi, J)
        bad = ~np.isfinite(f) | ~np.all(np.isfinite(G), axis=1)
        f[bad] = np.inf
        G[bad] = 0.0
        return f, G


class Chinchilla(Form):
    name, names = "chinchilla", ("E", "A", "B", "alpha", "beta")

    def logpred(self, V, X, jac=False):
        t1 = V[:, 1:2] - V[:, 3:4] * X["lnN"][None]
        t2 = V[:, 2:3] - V[:, 4:5] * X["lnD"][None]
        t0 = np.broadcast_to(V[:, 0:1], t1.shape)
        m, (w0, w1, w2) = _lse([t0, t1, t2])
        if not jac:
            return m
        J = np.stack([w0, w1, w2, -w1 * X["lnN"], -w2 * X["lnD"]], axis=2)
        return m, J

    def objective(self, X, logL, weights=None, delta=HUBER_DELTA):
        return LogHuberObjective([X["lnN"], X["lnD"]], logL, weights, delta)

    def natural(self, v):
        return joint_from_vec(v)  # the joint law's own vector: one conversion for both

    def starts(self):
        g = itertools.product(
            [-1.0, 0.0, 1.0], [0.0, 8.0, 16.0], [0.0, 8.0, 16.0], *[[0.2, 0.5]] * 2
        )
        return np.array(list(g), dtype=np.float64)


class Kaplan(Form):
    name, names = "kaplan", ("N_c", "D_c", "alpha_N", "alpha_D")

    def logpred(self, V, X, jac=False):
        k1, k2, g, aD = (V[:, i : i + 1] for i in range(4))
        s, (w1, w2) = _lse([k1 - g * X["lnN"][None], k2 - X["lnD"][None]])
        m = aD * s
        if not jac:
            return m
        J = np.stack([aD * w1, aD * w2, -aD * w1 * X["lnN"], s], axis=2)
        return m, J

    def natural(self, v):
        v = np.asarray(v, dtype=np.float64)
        with np.errstate(over="ignore", divide="ignore"):
            return {
                "N_c": np.exp(v[..., 0] / v[..., 2]),
                "D_c": np.exp(v[..., 1]),
                "alpha_N": v[..., 2] * v[..., 3],
                "alpha_D": v[..., 3],
            }

    def starts(self):
        rows = []
        for lnc, k2, g, aD in itertools.product(
            [22.0, 32.0, 42.0], [22.0, 32.0, 42.0], [0.6, 1.0, 1.6], [0.05, 0.1, 0.2]
        ):
            rows.append((g * lnc, k2, g, aD))
        return np.array(rows, dtype=np.float64)


class Overtrain(Form):
    name, names = "overtrain", ("E", "a", "b", "eta")

    def logpred(self, V, X, jac=False):
        lnM = X["lnD"] - X["lnN"]
        f1, f2 = lnM - X["lnC"], -(lnM + X["lnC"])
        t1 = V[:, 1:2] + V[:, 3:4] * f1[None]
        t2 = V[:, 2:3] + V[:, 3:4] * f2[None]
        m, (w0, w1, w2) = _lse([np.broadcast_to(V[:, 0:1], t1.shape), t1, t2])
        if not jac:
            return m
        return m, np.stack([w0, w1, w2, w1 * f1 + w2 * f2], axis=2)

    def natural(self, v):
        v = np.asarray(v, dtype=np.float64)
        return {
            "E": np.exp(v[..., 0]),
            "a": np.exp(v[..., 1]),
            "b": np.exp(v[..., 2]),
            "eta": v[..., 3],
        }

    def starts(self):
        g = itertools.product(
            [-1.0, 0.0, 1.0],
            [0.0, 6.0, 12.0, 20.0],
            [0.0, 6.0, 12.0, 20.0],
            [0.1, 0.2, 0.35],
        )
        return np.array(list(g), dtype=np.float64)


class PowerSum(Form):
    name, names = "power_sum", ("A", "B", "alpha", "beta")

    def logpred(self, V, X, jac=False):
        t1 = V[:, 0:1] - V[:, 2:3] * X["lnN"][None]
        t2 = V[:, 1:2] - V[:, 3:4] * X["lnD"][None]
        m, (w1, w2) = _lse([t1, t2])
        if not jac:
            return m
        return m, np.stack([w1, w2, -w1 * X["lnN"], -w2 * X["lnD"]], axis=2)

    def natural(self, v):
        v = np.asarray(v, dtype=np.float64)
        return {
            "A": np.exp(v[..., 0]),
            "B": np.exp(v[..., 1]),
            "alpha": v[..., 2],
            "beta": v[..., 3],
        }

    def starts(self):
        g = itertools.product([0.0, 2.0, 5.0], [0.0, 2.0, 5.0], *[[0.05, 0.15, 0.4]] * 2)
        return np.array(list(g), dtype=np.float64)


def _effective(lnU: np.ndarray, R: np.ndarray, Rs: np.ndarray) -> tuple:
    """Muennighoff's effective count X' = U (1 + R* (1 - e^(-R/R*))) for R repetitions of U:
    (log X', d log X' / d log R*, d log X' / d R)."""
    ex = np.exp(-R / Rs)
    S = 1.0 + Rs * (1.0 - ex)
    return lnU + np.log(S), (Rs * (1.0 - ex) - R * ex) / S, ex / S


class DataConstrained(Form):
    """Muennighoff et al. 2023: E + A/N'^alpha + B/D'^beta with D' = _effective(U_D, R_D, R_D*),
    U_D = min(U, D), R_D = D/U_D - 1, and N' = _effective(U_N, R_N, R_N*): U_N = min(N, N_opt(U_D))
    (the law's own compute-optimal size for U_D tokens, log N_opt = (log(alpha A / beta B) +
    beta log U_D) / alpha) and R_N = N/U_N - 1, the excess parameters, which decay like repeats."""

    name, names = "data_constrained", ("E", "A", "B", "alpha", "beta", "R_star", "R_N_star")

    def applicable(self, X):
        return "U" in X and bool(np.any(X["R"] > 0))

    def logpred(self, V, X, jac=False):
        # a target given without unique tokens (predict --flops, --params) sees fresh data: U = D
        D, lnN = X["D"][None], X["lnN"][None]
        U = np.minimum(X["U"][None], D) if "U" in X else D
        lnU = np.log(U)
        a, b, al, be = (V[:, i : i + 1] for i in range(1, 5))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            lnDp, dDp_rho, _ = _effective(lnU, D / U - 1.0, np.exp(V[:, 5:6]))
            raw = (np.log(al / be) + a - b + be * lnU) / al  # log N_opt(U_D)
            ex = raw < lnN  # more parameters than U_D tokens can use
            lnUN = np.where(ex, raw, lnN)
            RN = np.exp(np.minimum(lnN - lnUN, 700.0)) - 1.0  # finite, so 0 * RN stays 0
            lnNp, dNp_rho, dNp_R = _effective(lnUN, RN, np.exp(V[:, 6:7]))
        t1, t2 = a - al * lnNp, b - be * lnDp
        m, (w0, w1, w2) = _lse([np.broadcast_to(V[:, 0:1], t1.shape), t1, t2])
        if not jac:
            return m
        k = np.where(ex, 1.0 - dNp_R * (RN + 1.0), 0.0) / al  # d log N' / d raw, over alpha
        dUN = [k, -k, k * (1.0 / al - raw), k * (lnU - 1.0 / be)]  # d log N' / d a, b, al, be
        J = np.stack(
            [
                w0,
                w1 * (1.0 - al * dUN[0]),
                w2 - w1 * al * dUN[1],
                -w1 * (lnNp + al * dUN[2]),
                -w1 * al * dUN[3] - w2 * lnDp,
                -w2 * be * dDp_rho,
                -w1 * al * dNp_rho,
            ],
            axis=2,
        )
        return m, J

    def natural(self, v):
        v = np.asarray(v, dtype=np.float64)
        out = Chinchilla().natural(v[..., :5])
        out["R_star"], out["R_N_star"] = np.exp(v[..., 5]), np.exp(v[..., 6])
        return out

    def starts(self):
        base = Chinchilla().starts()
        rho = list(itertools.product(np.log([3.0, 15.0]), np.log([2.0, 8.0])))
        return np.array([np.r_[b, r] for b in base for r in rho])


class Frontier(Form):
    name, names, kind = "frontier", ("E", "A", "alpha"), "frontier"

    def logpred(self, V, X, jac=False):
        t1 = V[:, 1:2] - V[:, 2:3] * X["lnC"][None]
        m, (w0, w1) = _lse([np.broadcast_to(V[:, 0:1], t1.shape), t1])
        if not jac:
            return m
        return m, np.stack([w0, w1, -w1 * X["lnC"]], axis=2)

    def objective(self, X, logL, weights=None, delta=HUBER_DELTA):
        return LogHuberObjective([X["lnC"]], logL, weights, delta)

    def natural(self, v):
        v = np.asarray(v, dtype=np.float64)
        return {"E": np.exp(v[..., 0]), "A": np.exp(v[..., 1]), "alpha": v[..., 2]}

    def starts(self):
        g = itertools.product(
            [-1.0, 0.0, 1.0], np.arange(0.0, 30.0, 2.5), np.arange(0.02, 1.0, 0.08)
        )
        return np.array(list(g), dtype=np.float64)


FORMS: dict[str, Form] = {
    f.name: f
    for f in (Chinchilla(), Kaplan(), Overtrain(), PowerSum(), DataConstrained(), Frontier())
}


def frontier_points(lnC: np.ndarray, L: np.ndarray, levels: np.ndarray) -> tuple:
    """(C_b, min loss) per compute level b: the data the frontier form L_opt(C) is fitted to."""
    u = np.unique(levels)
    C = np.array([np.exp(lnC[levels == b][np.argmin(L[levels == b])]) for b in u])
    Lm = np.array([L[levels == b].min() for b in u])
    return C, Lm


def frontier_design(C: np.ndarray) -> dict:
    """A design whose 6ND equals C (N = 1, D = C/6): what the frontier form reads."""
    C = np.asarray(C, dtype=np.float64)
    return design(np.ones_like(C), C / 6.0)
