"""Multi-start fits of the joint law L(N, D) and of the one-variable law L(x) = E + A x^-alpha.

The joint fit minimises the SUMMED Huber loss (delta 1e-3) of log-residuals in the log-sum-exp
parametrisation, from Hoffmann et al.'s 4,500-start grid (alpha, beta in {0, .5, ..., 2},
e in {-1, -.5, ..., 1}, a, b in {0, 5, ..., 25}), as in Besiroglu et al. 2024. All starts run
together in a batched L-BFGS (analysis/laws/lbfgs.py); the best ``keep`` after a short first phase
are run to tight convergence, and the best is polished with scipy's L-BFGS-B at tight tolerances.
``method="varpro"`` (analysis/laws/varpro.py) searches only the exponents instead.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from analysis.laws.core import (
    FROM_VEC,
    HUBER_DELTA,
    JOINT_NAMES,
    POWER_NAMES,
    LogHuberObjective,
)
from analysis.laws.lbfgs import lbfgs_batched
from scaling.errors import UserError


def chinchilla_grid() -> np.ndarray:
    """Hoffmann et al.'s 4,500 starts as rows [e, a, b, alpha, beta]."""
    alpha = np.arange(0.0, 2.5, 0.5)
    beta = np.arange(0.0, 2.5, 0.5)
    e = np.arange(-1.0, 1.5, 0.5)
    a = np.arange(0.0, 30.0, 5.0)
    b = np.arange(0.0, 30.0, 5.0)
    rows = [(ei, ai, bi, al, be) for al, be, ei, ai, bi in itertools.product(alpha, beta, e, a, b)]
    return np.array(rows, dtype=np.float64)


def power_grid() -> np.ndarray:
    """Starts [e, a, alpha] for the one-variable law (same spacing as the joint grid)."""
    rows = itertools.product(
        np.arange(-1.0, 1.5, 0.5), np.arange(0.0, 30.0, 2.5), np.arange(0.0, 2.5, 0.25)
    )
    return np.array(list(rows), dtype=np.float64)


@dataclass
class Fit:
    """A fitted law: full-precision parameters plus convergence diagnostics."""

    kind: str  # "joint" or "power"
    vec: np.ndarray  # log-space parameter vector ([e, a, b, alpha, beta] or [e, a, alpha])
    objective: float
    grad_norm: float  # inf-norm of the objective gradient at the optimum
    n_points: int
    method: str
    delta: float
    diagnostics: dict = field(default_factory=dict)

    @property
    def params(self) -> dict:
        """Natural parameters as python floats (E, A, B, alpha, beta) or (E, A, alpha)."""
        d = FROM_VEC[self.kind](self.vec)
        return {k: float(v) for k, v in d.items()}

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "params": self.params,
            "log_params": [float(x) for x in self.vec],
            "objective": self.objective,
            "grad_inf_norm": self.grad_norm,
            "n_points": self.n_points,
            "method": self.method,
            "huber_delta": self.delta,
            "diagnostics": self.diagnostics,
        }


def check_points(n_points: int, n_params: int, what: str) -> None:
    """UserError when there are fewer points than parameters."""
    if n_points < n_params:
        raise UserError(
            f"{what}: {n_points} usable point(s) but the law has {n_params} parameters; "
            f"add runs (at least {n_params}) or fit a smaller law"
        )


def check_finite(fit: Fit, what: str, unidentified: frozenset[str] = frozenset()) -> Fit:
    """UserError when the best fit sends a parameter to infinity (the data do not pin it down),
    other than the ``unidentified`` ones, which are reported without a value anyway."""
    with np.errstate(over="ignore"):
        bad = [k for k, v in fit.params.items() if not np.isfinite(v) and k not in unidentified]
    if bad:
        raise UserError(
            f"{what}: the fit on {fit.n_points} point(s) diverged ({', '.join(bad)} -> infinity): "
            "the data do not determine the law; add runs that vary N and D independently "
            "(more compute budgets and model sizes)"
        )
    return fit


TERM_AT_BOUND = 1e-6
"""A term of the joint law below this share of the loss at every run sits at its bound 0: the data
do not need it (varpro's NNLS sets it to exactly 0; the log-space fit drives it to ~1e-15)."""
TERM_PARAMS = {"E": ("E",), "A": ("A", "alpha"), "B": ("B", "beta")}
"""The parameters a term at its bound leaves without a value: with A = 0, any alpha fits."""


def terms_at_bound(vec: np.ndarray, N: np.ndarray, D: np.ndarray, L: np.ndarray) -> list[str]:
    """Linear coefficients of the joint law (E, A, B) whose term is below `TERM_AT_BOUND` of the
    loss at every point (in log space: A/N^alpha may be 1e291 * 1e-293)."""
    e, a, b, al, be = vec
    logs = {"E": np.full(L.shape, e), "A": a - al * np.log(N), "B": b - be * np.log(D)}
    cut = np.log(TERM_AT_BOUND * L)
    return [k for k, t in logs.items() if np.all(t < cut)]


TERM_FLAT = 1e-3
"""A term of N (or D) that varies across the runs by less than this share of the smallest loss is
flat: a constant that merges with E, so E, its coefficient and its exponent are not identified
(alpha 0.00016 made A/N^alpha a constant 1.17 next to E 0.53, and gave an allocation a ~ 1)."""
TERM_FLAT_REL = 0.02
"""... or by less than this share of its own largest value: 1 - (N_min/N_max)^alpha below 2%, an
exponent near 0 (alpha 0.0014 over 2 decades: the term is 99.3% constant)."""
LOST_WHY = {
    "bound": "sits at its bound 0",
    "flat": "is flat across the runs, a constant that merges with E",
    "spike": "matters only at the smallest {}",
}
"""Why the data do not identify a term (`lost_terms`), as `term_phrase` words it."""


def lost_terms(
    vec: np.ndarray,
    N: np.ndarray,
    D: np.ndarray,
    L: np.ndarray,
    identified: tuple[str, ...] = ("alpha", "beta"),
) -> dict[str, str]:
    """{term: "bound" | "flat" | "spike"} for the joint law's terms the data do not identify: at
    its bound (`terms_at_bound`); flat (`TERM_FLAT`, `TERM_FLAT_REL`); or above `TERM_FLAT` of
    the loss only at the smallest size (or token count) while the variable has other levels (an
    exponent of 26-116 making the term a spike there). Only terms whose exponent the design
    identifies (``identified``) are tested for flat or spike."""
    out = dict.fromkeys(terms_at_bound(vec, N, D, L), "bound")
    e, a, b, al, be = vec
    for k, x, c, p in (("A", N, a, al), ("B", D, b, be)):
        if k in out or TERM_PARAMS[k][1] not in identified:
            continue
        with np.errstate(over="ignore"):
            t = np.exp(c - p * np.log(x))
            spread = float(np.ptp(t)) if np.all(np.isfinite(t)) else np.inf
        smallest = np.log10(x / x.min()) <= 0.03  # one level (`analysis.design.LEVEL_TOL_DEX`)
        big = t > TERM_FLAT * L
        if spread < TERM_FLAT * L.min() or spread < TERM_FLAT_REL * t.max():
            out[k] = "flat"
        elif big.any() and not smallest.all() and np.all(smallest[big]):
            out[k] = "spike"
    return out


def lost_params(term: str, why: str) -> tuple[str, ...]:
    """The parameters a lost term leaves without a value: its coefficient and exponent (with
    A = 0 any alpha fits), and E as well when the term is flat (E + A/N^alpha is one constant)."""
    return (("E",) if why == "flat" else ()) + TERM_PARAMS[term]


def term_phrase(term: str, why: str) -> str:
    """'the fitted A term sits at its bound 0' (or is flat, or matters only at the smallest N)."""
    return f"the fitted {term} term {LOST_WHY[why].format('N' if term == 'A' else 'D')}"


def lost_nd(fit: Fit) -> str:
    """'' when the joint fit identifies both its N and D terms, else why not, in one phrase
    ('the fitted A term ... and the fitted B term ...'): without either, no compute-optimal
    allocation or frontier has a value (`predict --flops`, `compare`)."""
    lost = fit.diagnostics.get("lost_terms", {})
    return " and ".join(term_phrase(t, lost[t]) for t in ("A", "B") if t in lost)


def check_exponents(fit: Fit, what: str, names: tuple[str, ...] | None = None) -> Fit:
    """UserError when the best fit has an exponent <= 0: a term A/N^alpha with alpha <= 0 grows
    (or stays) with scale, which no scaling law allows; its compute-optimal allocation would be
    NaN (a = beta/(alpha+beta) outside [0, 1]). ``names``: the exponents the data's design
    identifies (a ladder's are not: they are reported as not identified, not refused)."""
    if names is None:
        names = ("alpha", "beta") if fit.kind == "joint" else ("alpha",)
    bad = [f"{k} = {fit.params[k]:.3g}" for k in names if not fit.params[k] > 0]
    if bad:
        raise UserError(
            f"{what}: the best fit on {fit.n_points} point(s) has {', '.join(bad)} <= 0 (loss "
            "rising with scale): the data do not determine the law (their losses vary little "
            "beyond their noise); add runs over a wider range of model sizes and compute budgets"
        )
    return fit


def multistart(
    obj: LogHuberObjective,
    starts: np.ndarray,
    *,
    keep: int = 64,
    phase1_iter: int = 30,
    max_iter: int = 3000,
    polish: bool = True,
    agree_rtol: float = 1e-6,
    kind: str = "joint",
) -> tuple[np.ndarray, float, np.ndarray, dict]:
    """Run all starts briefly, the best ``keep`` to convergence, polish the best one.

    Returns (best_vec, best_f, grad, diagnostics).
    """
    t0 = time.perf_counter()
    r1 = lbfgs_batched(obj, starts, max_iter=phase1_iter)
    finite = np.flatnonzero(np.isfinite(r1.f))
    if finite.size == 0:
        raise UserError("every start of the fit gave a non-finite objective; check the data")
    sel = finite[np.argsort(r1.f[finite])[:keep]]
    r2 = lbfgs_batched(obj, r1.x[sel], max_iter=max_iter)
    i = int(np.argmin(r2.f))
    best, fbest = r2.x[i].copy(), float(r2.f[i])
    polished = False
    if polish:
        one = np.zeros(1, dtype=np.int64)

        def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
            f, g = obj(x[None, :], one)
            return float(f[0]), g[0]

        res = minimize(
            fun,
            best,
            jac=True,
            method="L-BFGS-B",
            options={"ftol": 1e-15, "gtol": 1e-13, "maxiter": 20000, "maxcor": 20},
        )
        if np.isfinite(res.fun) and res.fun <= fbest:
            best, fbest, polished = np.asarray(res.x, dtype=np.float64), float(res.fun), True
    _, g = obj(best[None, :], np.zeros(1, dtype=np.int64))
    tol = agree_rtol * abs(fbest) + 1e-14
    agree = np.flatnonzero(r2.f <= fbest + tol)
    diag = {
        "n_starts": int(starts.shape[0]),
        "n_refined": int(sel.size),
        "n_refined_converged": int(r2.converged.sum()),
        "n_agree": int(agree.size),
        "agree_rtol": agree_rtol,
        "polished": polished,
        "iterations_phase1_max": int(r1.n_iter.max()),
        "iterations_phase2_max": int(r2.n_iter.max()),
        "spread_among_agreeing": _spread(r2.x[agree], best, kind),
        "seconds": time.perf_counter() - t0,
    }
    return best, fbest, g[0], diag


def _spread(vecs: np.ndarray, best: np.ndarray, kind: str) -> dict:
    """Largest relative deviation of each natural parameter among the agreeing starts."""
    if vecs.shape[0] == 0:
        return {}
    from_vec = FROM_VEC[kind]
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged fit is reported by the caller
        nat, ref = from_vec(vecs), from_vec(best)
        return {
            k: float(np.max(np.abs(nat[k] - ref[k])) / max(abs(float(ref[k])), 1e-300)) for k in ref
        }


def fit_joint(
    N: np.ndarray,
    D: np.ndarray,
    L: np.ndarray,
    *,
    method: str = "grid",
    delta: float = HUBER_DELTA,
    starts: np.ndarray | None = None,
    keep: int = 64,
    polish: bool = True,
    identified: tuple[str, ...] = ("alpha", "beta"),
) -> Fit:
    """Fit L = E + A/N^alpha + B/D^beta (summed log-Huber) by ``method`` "grid" or "varpro";
    an ``identified`` exponent <= 0 is a UserError (`check_exponents`) unless its term is lost:
    the terms the data do not identify are ``diagnostics["lost_terms"]`` (`lost_terms`)."""
    N, D, L = (np.asarray(x, dtype=np.float64) for x in (N, D, L))
    check_points(L.size, 5, "joint law L(N, D)")
    obj = LogHuberObjective([np.log(N), np.log(D)], np.log(L), delta=delta)
    if method == "varpro":
        from analysis.laws.varpro import varpro_starts

        starts = varpro_starts(N, D, L, obj, identified=identified)
    elif method != "grid":
        raise UserError(f"unknown fit method {method!r}; use 'grid' or 'varpro'")
    elif starts is None:
        starts = chinchilla_grid()
    best, fbest, g, diag = multistart(obj, starts, keep=keep, polish=polish)
    diag["lost_terms"] = gone = lost_terms(best, N, D, L, identified)
    fit = Fit("joint", best, fbest, float(np.abs(g).max()), int(L.size), method, delta, diag)
    what = "joint law L(N, D)"
    lost = {p for k, why in gone.items() for p in lost_params(k, why)}  # no value to refuse
    names = tuple(k for k in identified if k not in lost)
    # a term whose exponent the design does not identify (a ladder, one budget) may run its
    # coefficient off to inf: it is reported without a value, so it is not refused
    masked = frozenset(
        p for t in "AB" if TERM_PARAMS[t][1] not in identified for p in TERM_PARAMS[t]
    )
    return check_exponents(check_finite(fit, what, masked), what, names)


def fit_power(
    x: np.ndarray, L: np.ndarray, *, delta: float = HUBER_DELTA, what: str = "L(x)"
) -> Fit:
    """Fit L(x) = E + A x^-alpha (summed log-Huber, multi-start grid, batched L-BFGS)."""
    x, L = np.asarray(x, dtype=np.float64), np.asarray(L, dtype=np.float64)
    check_points(L.size, 3, what)
    obj = LogHuberObjective([np.log(x)], np.log(L), delta=delta)
    best, fbest, g, diag = multistart(obj, power_grid(), keep=32, kind="power")
    fit = Fit("power", best, fbest, float(np.abs(g).max()), int(L.size), "grid", delta, diag)
    return check_exponents(check_finite(fit, what), what)


__all__ = ["Fit", "fit_joint", "fit_power", "chinchilla_grid", "JOINT_NAMES", "POWER_NAMES"]
