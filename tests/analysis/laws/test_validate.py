"""Predictive intervals on real published sweeps (../shared/data): the coverage band is a test."""

import numpy as np

from analysis.laws import bounds, validate


def test_interval_coverage_on_published_sweeps_stays_in_band(shared_data, capsys):
    """Fit small compute, predict the largest budgets of six published sweeps; the pooled
    coverage of nominal 90% intervals must stay within 80-97% (bootstrap-only: ~25%)."""
    res = validate.run(shared_data, n_resamples=20, quiet=True)
    with capsys.disabled():  # the rest is a benchmark: printed, not asserted
        print()
        validate.print_table(res)
        validate.print_forms_table(res)
        bounds.print_bounds(res)
    p = res["pooled"]
    assert validate.BAND[0] <= p["coverage"] <= validate.BAND[1], p
    assert p["bootstrap_only_coverage"] < 0.5, p
    assert p["n_test"] > 150
    # runs past the fitted runs' back-tests or their overfitting onset are flagged, still scored
    assert 0 < p["supported"]["n_test"] < p["n_test"]
    assert sum(r["unsupported"] for r in res["studies"]) == p["n_test"] - p["supported"]["n_test"]
    # the per-form table: the old single-form fit and the chosen predictor on the same held-out runs
    err = {
        k: np.concatenate([r["by_form"][k] for r in res["studies"]])
        for k in ("old chinchilla fit", "chosen")
    }
    assert err["chosen"].size == err["old chinchilla fit"].size == p["n_test"]
    assert np.mean(err["chosen"]) < np.mean(err["old chinchilla fit"])  # 3.0% vs 4.5% (README)
    b = bounds.hindsight_bounds(res)  # even in hindsight nothing reaches 1.5% at 4-20x
    assert 0.015 < b["best_form_per_run_4_20x"] <= b["best_form_per_set_4_20x"]
    assert 0.015 < b["best_stack_per_set_4_20x"] <= b["best_form_per_set_4_20x"] + 1e-9


def test_hindsight_bounds_by_hand():
    """Two data sets, two forms, the held-out log errors known: the bounds are the hand values."""
    a = {"f": np.array([0.02, 0.06]), "g": np.array([-0.02, -0.02])}  # opposite signs
    b = {"f": np.array([0.1, 0.2, 0.3]), "g": np.array([0.4, 0.1, 0.2])}  # same sign: no cancelling
    studies = []
    for le, far in ((a, [True, True]), (b, [True, False, True])):
        n = len(far)
        le |= {"chosen": np.zeros(n), bounds.OLD: np.zeros(n)}  # neither is a candidate
        studies.append(
            {"far": np.array(far), "log_errors": le, "abs_rel": np.arange(1, n + 1) / 100}
        )
    got = bounds.hindsight_bounds({"studies": studies}, level=1.0)
    e = lambda x: abs(np.expm1(x))  # noqa: E731 - |relative error| from a log error
    # per set: g on the first (mean 2% < 4%), f on the second (far runs 0.1, 0.3 vs 0.4, 0.2)
    single = [e(-0.02), e(-0.02), e(0.1), e(0.3)]
    assert np.isclose(got["best_form_per_set_4_20x"], np.mean(single))
    per_run = [e(-0.02), e(-0.02), e(0.1), e(0.2)]  # |expm1(-x)| < expm1(x)
    assert np.isclose(got["best_form_per_run_4_20x"], np.mean(per_run))
    # stack, first set: |0.04w - 0.02| + |0.08w - 0.02| is least (0.01) at w_f = 1/4, errors
    # -0.01 and 0; second set: 0.6 - 0.2 w_f, least at f alone
    stack = [e(-0.01), 0.0, e(0.1), e(0.3)]
    assert np.isclose(got["best_stack_per_set_4_20x"], np.mean(stack), atol=1e-9)
    # widths at level 1: the largest |error| per set, 2% twice and 3% three times; median 3%
    assert np.isclose(got["median_hindsight_width"], 0.03)


def test_bad_level_or_resamples_exit_2_before_any_fit(tmp_path, capsys):
    """`python -m analysis.laws.validate --level 1.5` ended in numpy's percentile traceback and
    `--resamples 0` in an unpacking error: each is one line naming the value, exit 2, before
    any data are read."""
    import subprocess
    import sys

    for args, what in (
        (["--level", "1.5"], "--level 1.5"),
        (["--resamples", "0"], "--resamples 0"),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "analysis.laws.validate", "--data", str(tmp_path), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith(f"error: {what}:") and r.stderr.count("\n") == 1, r.stderr
