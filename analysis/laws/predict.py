"""Predictions with calibrated predictive intervals, and back-tests on held-out runs.

The loss interval is the predictive interval of analysis/laws/predictive.py (parameter + form +
extrapolation terms, calibrated by rolling back-tests); the compute-optimal N and D keep the
Chinchilla law's run-level bootstrap CIs. ``bootstrap_loss`` (parameter noise only) is reported
beside it for comparison: it is not a predictive interval.
"""

from __future__ import annotations

import numpy as np

from analysis.design import identified_exponents
from analysis.laws.bootstrap import Bootstrap, bootstrap_fit, percentile_ci
from analysis.laws.core import compute_optimal, joint_loss_vec
from analysis.laws.fit import Fit, fit_joint
from analysis.laws.forms import design
from analysis.laws.predictive import Predictor, build_predictor
from analysis.laws.rolling import compute_levels
from analysis.laws.select import holdout_rows
from analysis.tables import RunTable
from scaling.errors import UserError


def _ci(point: float, samples: np.ndarray, level: float) -> dict:
    lo, hi = percentile_ci(np.asarray(samples, dtype=np.float64), level)
    return {"estimate": float(point), "lo": float(lo), "hi": float(hi), "level": level}


def table_design(table: RunTable) -> dict:
    """The forms' design of a table; unique tokens from a numeric, positive `U` column if any
    (then the data-constrained form joins the candidates where runs repeat data)."""
    U = (getattr(table, "extra", None) or {}).get("U")
    if U is not None:
        U = np.asarray(U)
        if U.dtype.kind != "f" or not np.all(np.isfinite(U) & (U > 0)):
            U = None
    return design(table.N, table.D, U)


def table_predictor(
    table: RunTable, *, n_resamples: int = 100, seed: int = 0, prior: dict | bool | None = True
) -> Predictor:
    """All law forms fitted to ``table`` (each bootstrapped), rolling back-tests, calibration."""
    X = table_design(table)
    levels = compute_levels(table.C, table.budget)
    try:
        return build_predictor(
            X,
            table.loss,
            levels,
            np.asarray(table.run_id),
            n_resamples=n_resamples,
            seed=seed,
            prior=prior,
        )
    except ValueError as e:
        raise UserError(f"{table.source}: {e}; add runs at more compute budgets") from None


def _interval(pred: Predictor, Xt: dict, level: float) -> dict:
    p = pred.predict(Xt, level)
    t = p["terms"][0]
    return {
        "loss": {
            "estimate": float(p["loss"][0]),
            "lo": float(p["lo"][0]),
            "hi": float(p["hi"][0]),
            "level": level,
            "kind": "predictive",
        },
        "interval_terms": t,
        "distance_decades": t["distance_decades"],
        "supported": t["supported"],
        "predictor": pred.chosen,
        "forms": {n: float(v[0]) for n, v in p["forms"].items()},
    }


def predict_flops(
    fit: Fit, boot: Bootstrap, C: float, level: float = 0.9, pred: Predictor | None = None
) -> dict:
    """Loss at the compute-optimal (N, D) for budget C (C = 6ND), with CIs for everything.

    With a predictor, the loss at Chinchilla's optimal (N, D) comes from the chosen predictor
    with its predictive interval; N_opt and D_opt keep their bootstrap CIs."""
    _positive("--flops", C)
    pt = compute_optimal(fit.params, C)
    bs = compute_optimal(boot.params, C)
    out = {"flops": float(C)}
    for k in ("loss", "N_opt", "D_opt", "tokens_per_param"):
        out[k] = _ci(float(pt[k]), bs[k], level)
    if pred is not None:
        out["bootstrap_loss"] = out.pop("loss")
        Xt = design(np.array([float(pt["N_opt"])]), np.array([float(pt["D_opt"])]))
        out.update(_interval(pred, Xt, level))
        fr = pred.frontier_loss(C, level)
        if fr is not None:
            out["frontier_L_opt"] = fr
    return out


def predict_nd(
    fit: Fit, boot: Bootstrap, N: float, D: float, level: float = 0.9, pred: Predictor | None = None
) -> dict:
    """Loss of a model with N parameters trained on D tokens, with a CI."""
    _positive("--params", N)
    _positive("--tokens", D)
    pt = float(joint_loss_vec(fit.vec, N, D))
    out = {
        "params": float(N),
        "tokens": float(D),
        "flops": 6.0 * N * D,
        "loss": _ci(pt, joint_loss_vec(boot.vecs, N, D), level),  # as `pt`: exact at overflow
    }
    if pred is not None:
        out["bootstrap_loss"] = out.pop("loss")
        out.update(_interval(pred, design(np.array([N]), np.array([D])), level))
    return out


def _positive(flag: str, v: float) -> None:
    if not np.isfinite(v) or v <= 0:
        raise UserError(f"{flag} must be a positive finite number, got {v!r}")


def holdout_mask(table: RunTable, holdout: str, n_params: int = 5) -> tuple[np.ndarray, str]:
    """Held-out rows for a hold-out spec: 'largest' budget, a FLOP threshold (C > value),
    @FILE of run names, or a filter expression (see analysis.laws.select.holdout_rows)."""
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
    ident = identified_exponents(train)
    fit = fit_joint(train.N, train.D, train.loss, method=method, identified=ident)
    boot = bootstrap_fit(
        fit,
        [np.log(train.N), np.log(train.D)],
        np.log(train.loss),
        np.asarray(train.run_id),  # resample whole runs
        n_resamples=n_resamples,
        seed=seed,
    )
    N, D, L = table.N[mask], table.D[mask], table.loss[mask]
    predictor = table_predictor(train, n_resamples=min(n_resamples, 100), seed=seed)
    Xt = table_design(table.subset(mask))
    if "U" in Xt and "U" not in predictor.X:
        Xt = design(N, D)
    pi = predictor.predict(Xt, level)
    pred = joint_loss_vec(fit.vec, N, D)
    pred_b = joint_loss_vec(boot.vecs[:, None, :], N[None], D[None])  # (R, n), as `pred`
    pred_b_lo, pred_b_hi = percentile_ci(pred_b, level)
    ids = np.array(table.run_id)[mask]
    runs = [_held_out_run(i, str(r), N, D, L, pi, pred, pred_b, level) for i, r in enumerate(ids)]
    inside = np.array([r["inside"] for r in runs])
    pb = predictor.boot_log(Xt)
    pb = pred_b if pb is None else np.exp(pb)
    return {
        "holdout": holdout,
        "description": desc,
        "n_train": int(len(train)),
        "n_test": int(mask.sum()),
        "fit_params": fit.params,
        "runs": runs,
        "mean_abs_rel_error": _ci(
            np.mean(np.abs(pi["loss"] / L - 1.0)),
            np.mean(np.abs(pb / L[None] - 1.0), axis=1),
            level,
        ),
        "mae": _ci(np.mean(np.abs(pi["loss"] - L)), np.mean(np.abs(pb - L[None]), axis=1), level),
        "coverage": {"inside": int(inside.sum()), "n": int(inside.size), "level": level},
        "bootstrap_coverage": float(np.mean((pred_b_lo <= L) & (L <= pred_b_hi))),
        "predictor": predictor.to_json(level),
        "fit": fit,
        "boot": boot,
        "pred": predictor,
    }


def _held_out_run(i, rid, N, D, L, pi, pred, pred_b, level) -> dict:
    """One held-out run of the back-test: its predictive interval, error and the bootstrap's."""
    return {
        "run_id": rid,
        "N": float(N[i]),
        "D": float(D[i]),
        "C": float(N[i] * D[i] * 6),
        "actual": float(L[i]),
        "predicted": {
            "estimate": float(pi["loss"][i]),
            "lo": float(pi["lo"][i]),
            "hi": float(pi["hi"][i]),
            "level": level,
            "kind": "predictive",
        },
        "rel_error": {
            "estimate": float(pi["loss"][i] / L[i] - 1),
            "lo": float(pi["lo"][i] / L[i] - 1),
            "hi": float(pi["hi"][i] / L[i] - 1),
            "level": level,
        },
        "inside": bool(pi["lo"][i] <= L[i] <= pi["hi"][i]),
        "bootstrap_predicted": _ci(pred[i], pred_b[:, i], level),
        "distance_decades": float(pi["distance"][i]),
        "interval_terms": pi["terms"][i],
    }
