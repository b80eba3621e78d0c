"""Predictions from a fitted joint law with bootstrap CIs, and back-tests on held-out runs."""

from __future__ import annotations

import numpy as np

from analysis.bootstrap import Bootstrap, bootstrap_fit, percentile_ci
from analysis.fit import Fit, fit_joint
from analysis.laws import compute_optimal, joint_loss
from analysis.select import holdout_rows
from analysis.tables import RunTable
from scaling.errors import UserError


def _ci(point: float, samples: np.ndarray, level: float) -> dict:
    lo, hi = percentile_ci(np.asarray(samples, dtype=np.float64), level)
    return {"estimate": float(point), "lo": float(lo), "hi": float(hi), "level": level}


def predict_flops(fit: Fit, boot: Bootstrap, C: float, level: float = 0.9) -> dict:
    """Loss at the compute-optimal (N, D) for budget C (C = 6ND), with CIs for everything."""
    _positive("--flops", C)
    pt = compute_optimal(fit.params, C)
    bs = compute_optimal(boot.params, C)
    out = {"flops": float(C)}
    for k in ("loss", "N_opt", "D_opt", "tokens_per_param"):
        out[k] = _ci(float(pt[k]), bs[k], level)
    return out


def predict_nd(fit: Fit, boot: Bootstrap, N: float, D: float, level: float = 0.9) -> dict:
    """Loss of a model with N parameters trained on D tokens, with a CI."""
    _positive("--params", N)
    _positive("--tokens", D)
    pt = float(joint_loss(fit.params, N, D))
    return {
        "params": float(N),
        "tokens": float(D),
        "flops": 6.0 * N * D,
        "loss": _ci(pt, joint_loss(boot.params, N, D), level),
    }


def _positive(flag: str, v: float) -> None:
    if not np.isfinite(v) or v <= 0:
        raise UserError(f"{flag} must be a positive finite number, got {v!r}")


def holdout_mask(table: RunTable, holdout: str, n_params: int = 5) -> tuple[np.ndarray, str]:
    """Held-out rows for a hold-out spec: 'largest' budget, a FLOP threshold (C > value),
    @FILE of run names, or a filter expression (see analysis.select.holdout_rows)."""
    return holdout_rows(table, holdout, n_params)


def backtest(
    table: RunTable,
    holdout: str,
    *,
    n_resamples: int = 4000,
    seed: int = 0,
    level: float = 0.9,
    method: str = "grid",
) -> dict:
    """Fit on the smaller runs, predict the held-out ones; relative errors and MAE with CIs."""
    mask, desc = holdout_mask(table, holdout)
    train = table.subset(~mask)
    fit = fit_joint(train.N, train.D, train.loss, method=method)
    boot = bootstrap_fit(
        fit,
        [np.log(train.N), np.log(train.D)],
        np.log(train.loss),
        np.asarray(train.run_id),  # resample whole runs
        n_resamples=n_resamples,
        seed=seed,
    )
    N, D, L = table.N[mask], table.D[mask], table.loss[mask]
    pred = joint_loss(fit.params, N, D)
    pred_b = joint_loss({k: v[:, None] for k, v in boot.params.items()}, N[None], D[None])
    rel, rel_b = pred / L - 1.0, pred_b / L[None] - 1.0
    runs = []
    for i, rid in enumerate(np.array(table.run_id)[mask]):
        runs.append(
            {
                "run_id": str(rid),
                "N": float(N[i]),
                "D": float(D[i]),
                "C": float(N[i] * D[i] * 6),
                "actual": float(L[i]),
                "predicted": _ci(pred[i], pred_b[:, i], level),
                "rel_error": _ci(rel[i], rel_b[:, i], level),
            }
        )
    return {
        "holdout": holdout,
        "description": desc,
        "n_train": int(len(train)),
        "n_test": int(mask.sum()),
        "fit_params": fit.params,
        "runs": runs,
        "mean_abs_rel_error": _ci(np.mean(np.abs(rel)), np.mean(np.abs(rel_b), axis=1), level),
        "mae": _ci(np.mean(np.abs(pred - L)), np.mean(np.abs(pred_b - L[None]), axis=1), level),
        "fit": fit,
        "boot": boot,
    }
