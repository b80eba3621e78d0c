"""Fitting any law form of analysis/laws/forms.py: the full-precision fit, its quality, bootstrap.

Every form is fitted by minimising the summed Huber loss (delta 1e-3) of log-residuals with the
batched multi-start L-BFGS of analysis/laws/lbfgs.py: a short phase for all starts, the best few to
convergence. The run-level bootstrap resamples whole groups (runs), warm-started at the optimum.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.laws.core import HUBER_DELTA
from analysis.laws.forms import Form
from analysis.laws.lbfgs import lbfgs_batched


@dataclass
class FormFit:
    """One form fitted to one data set: full-precision vector, objective and fit quality."""

    form: Form
    vec: np.ndarray
    objective: float
    grad_norm: float
    n_points: int
    quality: dict = field(default_factory=dict)  # rmse_log, aic, bic
    boot: np.ndarray | None = None  # (R, P) bootstrap vectors

    @property
    def params(self) -> dict:
        return {k: float(v) for k, v in self.form.natural(self.vec).items()}

    def logpred(self, X: dict) -> np.ndarray:
        return self.form.logpred(self.vec[None, :], X)[0]

    def boot_logpred(self, X: dict) -> np.ndarray | None:
        return None if self.boot is None else self.form.logpred(self.boot, X)

    def to_json(self) -> dict:
        return {
            "form": self.form.name,
            "params": self.params,
            "log_params": [float(x) for x in self.vec],
            "objective": self.objective,
            "grad_inf_norm": self.grad_norm,
            "n_points": self.n_points,
            **self.quality,
        }


def quality(r: np.ndarray, k: int) -> dict:
    """AIC/BIC-style quality from log-residuals r (Gaussian on log loss, robust fit plugged in)."""
    n = r.size
    s2 = max(float(np.mean(r * r)), 1e-300)
    ll = -0.5 * n * (np.log(2 * np.pi * s2) + 1.0)
    return {
        "rmse_log": float(np.sqrt(s2)),
        "aic": float(2 * k - 2 * ll),
        "bic": float(k * np.log(n) - 2 * ll),
    }


def fit_form(
    form: Form,
    X: dict,
    L: np.ndarray,
    *,
    delta: float = HUBER_DELTA,
    extra_starts: np.ndarray | None = None,
    keep: int = 8,
    starts: np.ndarray | None = None,
    max_iter: int = 800,
) -> FormFit | None:
    """Multi-start fit (short phase for all starts, the best ``keep`` to convergence).

    ``extra_starts`` (e.g. the full-data optimum when refitting a subset) are always refined.
    Returns None when the form has more parameters than points or every start diverged.
    """
    logL = np.log(np.asarray(L, dtype=np.float64))
    if logL.size <= form.n_params:
        return None
    obj = form.objective(X, logL, delta=delta)
    S = form.starts() if starts is None else starts
    r1 = lbfgs_batched(obj, S, max_iter=20)
    ok = np.flatnonzero(np.isfinite(r1.f))
    sel = r1.x[ok[np.argsort(r1.f[ok])[:keep]]]
    if extra_starts is not None:
        sel = np.vstack([sel, np.atleast_2d(extra_starts)])
    if sel.shape[0] == 0:
        return None
    r2 = lbfgs_batched(obj, sel, max_iter=max_iter, gtol=1e-9, ftol=1e-13)
    fin = np.isfinite(r2.f) & np.all(np.isfinite(r2.x), axis=1)
    if not fin.any():
        return None
    i = int(np.argmin(np.where(fin, r2.f, np.inf)))
    vec = r2.x[i].copy()
    with np.errstate(over="ignore", invalid="ignore"):
        nat = form.natural(vec)
        if not all(np.isfinite(v) for v in nat.values()):
            return None
        r = form.logpred(vec[None], X)[0] - logL
    return FormFit(
        form,
        vec,
        float(r2.f[i]),
        float(np.abs(r2.g[i]).max()),
        int(logL.size),
        quality(r, form.n_params),
    )


def bootstrap_form(
    fit: FormFit,
    X: dict,
    L: np.ndarray,
    groups: np.ndarray,
    *,
    n_resamples: int = 200,
    seed: int = 0,
    delta: float = HUBER_DELTA,
    max_iter: int = 80,
) -> FormFit:
    """Run-level bootstrap of one form (whole groups resampled), warm-started at the optimum."""
    from analysis.laws.bootstrap import resample_weights

    W = resample_weights(np.asarray(groups), n_resamples, np.random.default_rng(seed))
    obj = fit.form.objective(X, np.log(np.asarray(L, dtype=np.float64)), weights=W, delta=delta)
    X0 = np.repeat(fit.vec[None, :], n_resamples, axis=0)
    res = lbfgs_batched(obj, X0, max_iter=max_iter, ftol=1e-11, gtol=1e-7)
    fit.boot = res.x
    return fit
