"""Synthetic IsoFLOP sweeps from a known joint law, for ground-truth tests and the benchmark."""

from __future__ import annotations

import numpy as np

from analysis.laws.core import allocation_exponents, compute_optimal, joint_loss

CHINCHILLA_TRUTH = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def isoflop_sweep(
    truth: dict = CHINCHILLA_TRUTH,
    budgets: tuple = (1e18, 1e19, 1e20, 1e21),
    n_sizes: int = 7,
    span: float = 16.0,
    sigma: float = 0.01,
    rng: np.random.Generator | None = None,
) -> dict:
    """IsoFLOP grid around the true optimum with log-normal noise: log L = log L_true + sigma z.

    ``span`` is the ratio between the largest and smallest N at each budget (centred on N_opt).
    Returns arrays N, D, C, loss, budget (one entry per run).
    """
    rng = rng or np.random.default_rng(0)
    N, C, B = [], [], []
    for c in budgets:
        n_opt = float(compute_optimal(truth, c)["N_opt"])
        ns = n_opt * np.geomspace(span**-0.5, span**0.5, n_sizes)
        N.extend(ns)
        C.extend([c] * n_sizes)
        B.extend([c] * n_sizes)
    N, C = np.array(N), np.array(C)
    D = C / (6.0 * N)
    loss = joint_loss(truth, N, D) * np.exp(sigma * rng.standard_normal(N.size))
    return {"N": N, "D": D, "C": C, "loss": loss, "budget": np.array(B)}


def coverage_experiment(
    n_sweeps: int = 100,
    n_resamples: int = 200,
    level: float = 0.9,
    seed: int = 0,
    truth: dict = CHINCHILLA_TRUTH,
    **sweep_kw,
) -> dict:
    """Fraction of simulated sweeps whose percentile bootstrap CI covers each true parameter.

    Every sweep is fitted from a coarse start grid and then bootstrapped over runs, with all
    sweeps x starts (then sweeps x resamples) minimised in one batched L-BFGS each.
    Names are E, A, B, alpha, beta and the allocation exponents a, b.
    Returns {"coverage": {name: frac}, "rel_error_median": {name: ...}, "n_sweeps", "n_runs"}.
    """
    from analysis.laws.bootstrap import percentile_ci, resample_weights
    from analysis.laws.core import JOINT_NAMES, LogHuberObjective, joint_from_vec
    from analysis.laws.fit import chinchilla_grid
    from analysis.laws.lbfgs import lbfgs_batched

    rng = np.random.default_rng(seed)
    sweeps = [isoflop_sweep(truth, rng=rng, **sweep_kw) for _ in range(n_sweeps)]
    lN = np.stack([np.log(s["N"]) for s in sweeps])
    lD = np.stack([np.log(s["D"]) for s in sweeps])
    lL = np.stack([np.log(s["loss"]) for s in sweeps])
    starts = chinchilla_grid()[::9]
    S, K = n_sweeps, starts.shape[0]
    rows = np.repeat(np.arange(S), K)
    obj = LogHuberObjective([lN[rows], lD[rows]], lL[rows])
    r = lbfgs_batched(obj, np.tile(starts, (S, 1)), max_iter=30)
    f = np.where(np.isfinite(r.f), r.f, np.inf).reshape(S, K)
    keep = 4
    top = np.argsort(f, axis=1)[:, :keep] + K * np.arange(S)[:, None]
    rows = np.repeat(np.arange(S), keep)
    obj = LogHuberObjective([lN[rows], lD[rows]], lL[rows])
    r = lbfgs_batched(obj, r.x[top.ravel()], max_iter=1000, ftol=1e-13)
    f = np.where(np.isfinite(r.f), r.f, np.inf).reshape(S, keep)
    best = r.x.reshape(S, keep, -1)[np.arange(S), np.argmin(f, axis=1)]
    n_runs = lN.shape[1]
    W = np.concatenate([resample_weights(np.arange(n_runs), n_resamples, rng) for _ in range(S)])
    rows = np.repeat(np.arange(S), n_resamples)
    obj = LogHuberObjective([lN[rows], lD[rows]], lL[rows], weights=W)
    rb = lbfgs_batched(obj, best[rows], max_iter=500, ftol=1e-12, gtol=1e-8)
    est = joint_from_vec(best)
    boot = joint_from_vec(rb.x.reshape(S, n_resamples, -1))
    truth = dict(truth)
    for p in (est, boot, truth):
        p["a"], p["b"] = allocation_exponents(p)
    cover, err = {}, {}
    for k in (*JOINT_NAMES, "a", "b"):
        lo, hi = percentile_ci(boot[k], level, axis=1)
        cover[k] = float(np.mean((lo <= truth[k]) & (truth[k] <= hi)))
        err[k] = float(np.median(np.abs(est[k] / truth[k] - 1.0)))
    return {"coverage": cover, "rel_error_median": err, "n_sweeps": S, "n_runs": n_runs}
