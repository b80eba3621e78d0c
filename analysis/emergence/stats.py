"""Statistical building blocks for the emergence flagger (numpy/scipy only, no JAX).

Conventions: ``x`` is log10(scale) sorted ascending; ``s`` is a score on a chance-normalised
scale (0 = chance, 1 = perfect) or, for unbounded metrics, the raw value; ``v`` is the sampling
variance of each ``s`` (0 where unknown). Every function is pure and deterministic.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

Z95 = 1.959963984540054


def wilson(k: np.ndarray, n: np.ndarray, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for k successes out of n (arrays); returns (lo, hi)."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    p = k / n
    den = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def chance_level(
    chance: float, majority: float | None, y: np.ndarray, n: np.ndarray
) -> tuple[float, str, bool]:
    """(level, why, inferred): what a multiple-choice metric scores without the ability.

    A model that always gives the same answer label scores that label's rate, so the level is
    max(nominal chance, majority-label rate). For a two-way task (chance 0.5) without a known
    majority rate, a score significantly below 0.5 (95% Wilson upper bound < 0.5) reveals the
    imbalance: always giving the other label scores 1 - score, which becomes the level
    (``inferred``; conservative: it can only raise the bar).
    """
    level, why, inferred = float(chance), f"nominal chance {chance:g}", False
    if majority is not None and majority > level:
        level, why = float(majority), f"majority-label rate {majority:g}"
    if abs(chance - 0.5) < 1e-9:
        y, n = np.asarray(y, float), np.asarray(n, float)
        _, hi = wilson(np.clip(y, 0, 1) * n, n)
        if np.any(hi < 0.5):
            low = float(y[hi < 0.5].min())
            if 1.0 - low > level:
                level, inferred = 1.0 - low, True
                why = (
                    f"two-way task scored {low:.3g} (significantly below 0.5), so always giving "
                    f"the other label scores {level:.3g}"
                )
    return level, why, inferred


def binom_var(p: np.ndarray, n: np.ndarray, z: float = Z95) -> np.ndarray:
    """Agresti-Coull variance of a proportion: never 0, even for 0/n or n/n."""
    p, n = np.asarray(p, float), np.asarray(n, float)
    nt = n + z * z
    pt = (p * n + z * z / 2) / nt
    return pt * (1 - pt) / nt


def wls_line(x: np.ndarray, y: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares line y = b0 + b1 x; returns (beta[2], covariance[2,2])."""
    X = np.column_stack([np.ones_like(x), x])
    w = 1.0 / np.maximum(var, 1e-300)
    xtwx = X.T @ (X * w[:, None])
    cov = np.linalg.pinv(xtwx)
    beta = cov @ (X.T @ (w * y))
    return beta, cov


def robust_noise_sd(x: np.ndarray, y: np.ndarray) -> float:
    """Noise SD from interpolation residuals of interior points (median-based, jump-robust).

    For each interior point, the residual from the straight line through its two neighbours has
    variance sigma^2 (1 + a^2 + b^2) under independent noise; a single jump spoils few of them.
    """
    if len(x) < 3:
        return 0.0
    r = []
    for i in range(1, len(x) - 1):
        h = x[i + 1] - x[i - 1]
        if h <= 0:
            continue
        a, b = (x[i + 1] - x[i]) / h, (x[i] - x[i - 1]) / h
        r.append(abs(y[i] - (a * y[i - 1] + b * y[i + 1])) / math.sqrt(1 + a * a + b * b))
    return float(np.median(r) / 0.6745) if r else 0.0


def lfo_step(
    x: np.ndarray, s: np.ndarray, v: np.ndarray, j: int, *, noise_sd: float = 0.0
) -> dict | None:
    """Leave-future-out test of point j: fit a line in log-scale to points < j, predict j.

    Predictive variance = fit variance at x_j + sampling variance of s_j + extra (model-to-model)
    scatter. The extra scatter is estimated from the fit residuals (method of moments, leverage
    corrected; needs >= 3 past points) and floored at ``noise_sd**2`` (used for metrics without
    a binomial model). Because that scatter is estimated on j - 2 degrees of freedom, z is
    referred to Student's t with j - 2 dof, not a normal (else p is far too small when models
    scatter beyond counting noise). z > 0 means "above the trend".
    """
    if j < 2:
        return None
    xp, sp, vp = x[:j], s[:j], v[:j]
    extra = noise_sd**2
    beta, cov = wls_line(xp, sp, vp + extra)
    dof = None
    if j >= 3:  # method-of-moments extra-binomial variance from the residuals
        resid = sp - (beta[0] + beta[1] * xp)
        X = np.column_stack([np.ones_like(xp), xp])
        lev = np.einsum("ij,jk,ik->i", X, cov, X) / np.maximum(vp + extra, 1e-300)
        mom = float(np.sum(resid**2) - np.sum((1.0 - lev) * vp)) / (j - 2)
        extra = max(extra, mom)
        beta, cov = wls_line(xp, sp, vp + extra)
        dof = j - 2
    else:
        _, cov = wls_line(xp, sp, vp + max(extra, 1e-12))
    xj = np.array([1.0, x[j]])
    pred = float(beta @ xj)
    var_fit = float(xj @ cov @ xj)
    sd = math.sqrt(max(var_fit + v[j] + extra, 1e-300))
    z = (s[j] - pred) / sd
    if dof is not None:  # Satterthwaite: only the part scaling with the fitted scatter is uncertain
        est = var_fit + (extra if extra > noise_sd**2 else 0.0)
        dof = dof * (sd**2 / max(est, 1e-300)) ** 2 if est > 0 else math.inf
    return {
        "index": j,
        "predicted": pred,
        "observed": float(s[j]),
        "excess": float(s[j] - pred),
        "sd": sd,
        "z": float(z),
        "dof": dof,
        "p": float(stats.norm.sf(z) if dof in (None, math.inf) else stats.t.sf(z, dof)),
        "trend": [float(beta[0]), float(beta[1])],  # the fitted line: intercept, slope
    }


def holm(pvals: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as input)."""
    m = len(pvals)
    order = np.argsort(pvals)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvals[i]))
        adj[i] = running
    return adj.tolist()


def _logistic(x: np.ndarray, b: float, a: float, m: float, w: float) -> np.ndarray:
    return b + a * 0.5 * (1.0 + np.tanh((x - m) / (2.0 * w)))


def _bic(rss: float, n: int, k: int) -> float:
    return n * math.log(max(rss, 1e-10) / n) + k * math.log(n)


LOGISTIC_10_90 = 2.0 * math.log(9.0)  # 10%-90% rise width of a logistic, in units of w


def sigmoid_vs_linear(x: np.ndarray, s: np.ndarray) -> dict | None:
    """Fit s = b + a*logistic((x-m)/w) and s = b0 + b1 x; compare by BIC (Gaussian, unweighted).

    delta_bic = BIC(linear) - BIC(sigmoid): positive favours the sigmoid (> 6: strong).
    width_10_90 is the 10-90% rise width in log10 units; resolution_limited when it is narrower
    than the grid spacing around the midpoint (the grid cannot resolve how sharp the rise is).
    """
    n = len(x)
    if n < 5:
        return None
    X = np.column_stack([np.ones(n), x])
    lin, *_ = np.linalg.lstsq(X, s, rcond=None)
    rss_lin = float(np.sum((s - X @ lin) ** 2))
    span = float(x[-1] - x[0]) or 1.0
    # profile grid: for fixed (m, w) the model is linear in (b, a) -> closed form, vectorised
    mm, ww = np.meshgrid(
        np.linspace(x[0] - 0.25 * span, x[-1] + 0.25 * span, 61),
        np.geomspace(2e-3 * span, span, 30),
    )
    mm, ww = mm.ravel(), ww.ravel()
    g = 0.5 * (1.0 + np.tanh((x[None, :] - mm[:, None]) / (2.0 * ww[:, None])))
    gc = g - g.mean(1, keepdims=True)
    den = np.sum(gc * gc, 1)
    a_g = np.where(den > 1e-12, gc @ (s - s.mean()) / np.maximum(den, 1e-12), 0.0)
    b_g = s.mean() - a_g * g.mean(1)
    rss_g = np.sum((s[None, :] - b_g[:, None] - a_g[:, None] * g) ** 2, 1)
    i = int(np.argmin(rss_g))
    p0 = [b_g[i], a_g[i], mm[i], ww[i]]
    lo = [-np.inf, -np.inf, x[0] - span, 1e-3 * span]
    hi = [np.inf, np.inf, x[-1] + span, 2 * span]
    best = (float(rss_g[i]), np.array(p0))
    try:
        r = optimize.least_squares(
            lambda q: _logistic(x, *q) - s, np.clip(p0, lo, hi), bounds=(lo, hi), max_nfev=200
        )
        if float(np.sum(r.fun**2)) < best[0]:
            best = (float(np.sum(r.fun**2)), r.x)
    except (ValueError, np.linalg.LinAlgError):
        pass
    rss_sig, (b, a, m, w) = best
    width = LOGISTIC_10_90 * w
    i = int(np.clip(np.searchsorted(x, m), 1, n - 1))
    spacing = float(x[i] - x[i - 1])
    return {
        "delta_bic": _bic(rss_lin, n, 2) - _bic(rss_sig, n, 4),
        "midpoint_log10": float(m),
        "width_10_90_log10": float(width),
        "amplitude": float(a),
        "floor": float(b),
        "grid_spacing_log10": spacing,
        "resolution_limited": bool(width < spacing),
        "linear_slope_per_decade": float(lin[1]),
    }


def bigbench_shape(s: np.ndarray) -> dict:
    """BIG-bench linearity I(y)/RMS(dy) and breakthroughness I(y)/sqrt(median(dy^2)).

    I(y) = sign(argmax y - argmin y) * (max y - min y); dy are successive differences in scale
    order. Reported for comparison only; never decisive.
    """
    if len(s) < 2:
        return {"linearity": None, "breakthroughness": None}
    iy = float(np.sign(np.argmax(s) - np.argmin(s)) * np.ptp(s))
    dy = np.diff(s)
    rms = math.sqrt(float(np.mean(dy**2)))
    med = math.sqrt(float(np.median(dy**2)))
    return {
        "linearity": iy / rms if rms > 0 else None,
        "breakthroughness": iy / med if med > 0 else None,
    }


def hinge_fit(loss: np.ndarray, s: np.ndarray) -> dict | None:
    """Loss-threshold view (Du et al. 2024): s flat above a threshold loss, linear below it.

    s = a + b * max(0, L_t - loss). L_t is scanned over midpoints of the observed losses
    (least squares at each); compared with a plain line in loss by BIC.
    """
    ok = np.isfinite(loss) & np.isfinite(s)
    loss, s = loss[ok], s[ok]
    n = len(loss)
    if n < 4:
        return None
    srt = np.sort(np.unique(loss))
    cands = (srt[:-1] + srt[1:]) / 2
    best = None
    for lt in cands:
        h = np.maximum(0.0, lt - loss)
        X = np.column_stack([np.ones(n), h])
        beta, *_ = np.linalg.lstsq(X, s, rcond=None)
        rss = float(np.sum((s - X @ beta) ** 2))
        if best is None or rss < best[0]:
            best = (rss, float(lt), beta)
    X = np.column_stack([np.ones(n), loss])
    lin, *_ = np.linalg.lstsq(X, s, rcond=None)
    rss_lin = float(np.sum((s - X @ lin) ** 2))
    rss, lt, beta = best
    return {
        "threshold_loss": lt,
        "floor": float(beta[0]),
        "slope_below_threshold": float(beta[1]),
        "n_below_threshold": int(np.sum(loss < lt)),
        "delta_bic_vs_linear": _bic(rss_lin, n, 2) - _bic(rss, n, 3),
    }
