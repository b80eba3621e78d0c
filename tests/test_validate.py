"""Predictive intervals on real published sweeps (../shared/data): the coverage band is a test."""

from analysis import validate


def test_interval_coverage_on_published_sweeps_stays_in_band(shared_data, capsys):
    """Fit small compute, predict the largest budgets of six published sweeps; the pooled
    coverage of nominal 90% intervals must stay within 80-97% (bootstrap-only: ~25%)."""
    res = validate.run(shared_data, n_resamples=20, quiet=True)
    with capsys.disabled():  # the rest is a benchmark: printed, not asserted
        print()
        validate.print_table(res)
    p = res["pooled"]
    assert validate.BAND[0] <= p["coverage"] <= validate.BAND[1], p
    assert p["bootstrap_only_coverage"] < 0.5, p
    assert p["n_test"] > 150
