"""The forms' domain: runs that overfit repeated data are found, and targets past the epochs at
which fitted runs overfit are flagged unsupported with at least the prior's interval."""

import numpy as np

from analysis.laws.domain import onset, outside, overfit_rows
from analysis.laws.forms import FORMS, design
from analysis.laws.predictive import build_predictor
from analysis.laws.rolling import compute_levels

# Muennighoff's law with R* = 5, R_N* = 3 (monotone: more N, D or U never raise the loss)
TRUTH = np.array([np.log(1.7), np.log(400), np.log(1000), 0.34, 0.3, np.log(5.0), np.log(3.0)])


def _sweep(seed: int = 0):
    """Sizes x unique-data budgets x epochs; from 32 epochs, models with at least one parameter
    per unique token overfit: their loss rises with more training (10% per doubling per N/U)."""
    N, U, E = (
        a.ravel()
        for a in np.meshgrid(
            np.logspace(7, 9, 5), [1e8, 1e9], [1, 2, 4, 8, 16, 32, 64], indexing="ij"
        )
    )
    X = design(N, E * U, U)
    L = np.exp(FORMS["data_constrained"].logpred(TRUTH[None], X)[0])
    planted = (E >= 32) & (N >= U)
    L = L * np.where(planted, 1.0 + 0.1 * np.log2(E / 16) * N / U, 1.0)
    L = L * np.exp(0.001 * np.random.default_rng(seed).standard_normal(L.size))
    return X, L, planted


def test_overfitting_runs_and_their_onset_are_found():
    X, L, planted = _sweep()
    m = overfit_rows(X, L)
    assert np.array_equal(m, planted)
    assert onset(X, m) == 32.0
    one = np.zeros_like(m)
    one[np.flatnonzero(m)[0]] = True  # a single overfitting run (one pair 1% apart): no onset
    assert onset(X, one) is None
    # the same runs without unique-token counts: nothing to judge, nothing flagged
    Xf = design(X["N"], X["D"])
    assert not overfit_rows(Xf, L).any() and onset(Xf, m) is None
    t = design(np.array([1e9, 1e9, 1e9]), np.array([3e10, 4e10, 4e10]), np.array([1e9, 1e9, 4e10]))
    assert outside(t, 32.0).tolist() == [False, True, False]
    assert not outside(design(t["N"], t["D"]), 32.0).any()  # no U: fresh data


def test_targets_past_the_onset_are_unsupported_and_not_calibrated_on():
    X, L, _ = _sweep()
    C = 6 * X["N"] * X["D"]
    pr = build_predictor(
        X, L, compute_levels(C), np.arange(L.size), n_resamples=5, forms=["chinchilla", "power_sum"]
    )
    assert pr.onset == 32.0
    rb = pr.rolling
    assert rb.row.size > 10 and np.all(X["D"][rb.row] / X["U"][rb.row] < 32)  # in-domain only
    # a large model repeating 1e9 unique tokens 40 times; the same model on 4e10 fresh tokens
    t = design(np.array([3e9, 3e9]), np.array([4e10, 4e10]), np.array([1e9, 4e10]))
    p = pr.predict(t, 0.9)
    assert p["supported"].tolist() == [False, True]
    flagged, fresh = p["terms"]
    assert flagged["why_unsupported"] == "overfitting" and fresh["why_unsupported"] == ""
    cal = pr.calibration(0.9)
    assert flagged["total"] >= cal.prior_h(flagged["relative_distance"]) - 1e-12
    assert pr.to_json()["overfit_onset_epochs"] == 32.0
