"""Predictive intervals on real published sweeps (../shared/data): the coverage band is a test."""

import numpy as np

from analysis.laws import validate


def test_interval_coverage_on_published_sweeps_stays_in_band(shared_data, capsys):
    """Fit small compute, predict the largest budgets of six published sweeps; the pooled
    coverage of nominal 90% intervals must stay within 80-97% (bootstrap-only: ~25%)."""
    res = validate.run(shared_data, n_resamples=20, quiet=True)
    with capsys.disabled():  # the rest is a benchmark: printed, not asserted
        print()
        validate.print_table(res)
        validate.print_forms_table(res)
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
