"""`python -m analysis.checks`: a check whose analysis did not run says so ([n/a]) instead of
vanishing; the back-test threshold prints as given; bad input exits 2 with one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from analysis.checks import main, study_checks
from scaling.errors import UserError

TWO_BUDGETS = {  # the shape of a 2-budget IsoFLOP study's fits.json: no frontier, no origins
    "design": {"kind": "isoflop", "description": "IsoFLOP sweep: 2 budgets"},
    "notes": ["frontier L(C) not fitted: 2 envelope point(s) < 3"],
    "approach2": {
        "minima": [
            {"budget": 1e19, "loss_min": 2.99, "inside_range": True},
            {"budget": 1e20, "loss_min": 2.61, "inside_range": True},
        ]
    },
    "predictive": {"cross_coverage": {"inside": 0, "n": 0, "level": 0.9}},
}


def test_checks_whose_analysis_did_not_run_are_na_not_left_out():
    """A 2-budget study (frontier not fitted, no rolling origins, --holdout none) printed only
    its two IsoFLOP lines: no frontier, back-test or rolling line at all, so `make demo`-style
    use could not tell a skipped check from a missing one."""
    got = {name: (ok, d) for name, ok, d in study_checks(TWO_BUDGETS)}
    assert got["frontier exponent finite and positive"] == (
        None,
        "not answered: frontier L(C) not fitted: 2 envelope point(s) < 3",
    )
    assert got["back-test error below 3%"][0] is None
    assert "--holdout none" in got["back-test error below 3%"][1]
    assert got["rolling back-tests inside their predictive intervals"][0] is None
    skipped = dict(TWO_BUDGETS, notes=["back-test skipped: only 1 budget"])
    got = {name: d for name, _, d in study_checks(skipped, 0.025)}
    assert got["back-test error below 2.5%"] == "not answered: back-test skipped: only 1 budget"


def test_the_threshold_prints_as_given(tmp_path, capsys):
    """`--max-backtest-error 0.025` printed '[ok] back-test error below 2%' for an error of
    2.2%, and 0.0004 read 'below 0%' beside an [ok]."""
    fits = dict(TWO_BUDGETS, backtest={
        "mean_abs_rel_error": {"estimate": 0.022}, "description": "runs at 1e+20",
        "coverage": {"n": 0},
    })  # fmt: skip
    path = tmp_path / "fits.json"
    path.write_text(json.dumps(fits))
    assert main([str(path), "--max-backtest-error", "0.025"]) == 0
    assert "[ok] back-test error below 2.5%: 2.20%" in capsys.readouterr().out
    assert main([str(path), "--max-backtest-error", "0.0004"]) == 1
    assert "[FAIL] back-test error below 0.04%: 2.20%" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["nan", "-1", "0", "inf"])
def test_a_bad_threshold_is_refused(tmp_path, bad):
    """nan failed every back-test and -1 read 'below -100%', both with exit 1."""
    path = tmp_path / "fits.json"
    path.write_text(json.dumps(TWO_BUDGETS))
    with pytest.raises(UserError, match=f"--max-backtest-error {bad}: give a positive fraction"):
        main([str(path), "--max-backtest-error", bad])


def test_a_json_that_is_not_an_object_exits_2_with_one_line(tmp_path):
    """A fits.json holding a list was an AttributeError traceback."""
    path = tmp_path / "fits.json"
    path.write_text("[]")
    p = subprocess.run(
        [sys.executable, "-m", "analysis.checks", str(path)], capture_output=True, text=True
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr
    assert "not a fits.json written by `scaling analyze`" in p.stderr


def test_report_md_says_no_rolling_back_test_ran_instead_of_0_of_0():
    """Two budgets leave no rolling origin: report.md read 'Leave-one-origin-out coverage of the
    back-tests: 0/0 inside their 90% intervals', and the checks printed nothing about it."""
    from pathlib import Path

    import numpy as np

    from analysis.markdown import report_md
    from analysis.report import fits_json, run_analysis
    from analysis.tables import RunTable

    c = np.repeat([1e12, 1e13], 6)
    n = np.tile(np.geomspace(3e4, 3e5, 6), 2) * np.sqrt(c / 1e12)
    d = c / (6 * n)
    loss = (1.0 + 60 / n**0.34 + 90 / d**0.3) * np.exp(0.003 * np.sin(np.arange(12)))
    t = RunTable([f"r{i}" for i in range(12)], n, d, c, loss, c, [None] * 12, source="t")
    res = run_analysis(t, n_resamples=10, holdout=None)
    text = report_md(res, {}, Path("."))
    assert "0/0 inside" not in text
    assert "No rolling-origin back-test ran, so there is no coverage of them to check." in text
    got = {name: ok for name, ok, _ in study_checks(json.loads(json.dumps(fits_json(res))))}
    assert got["rolling back-tests inside their predictive intervals"] is None


def test_scattered_runs_say_no_isoflop_budgets_once():
    """'not applicable: scattered runs: 5 model sizes, no IsoFLOP budgets or grid has no IsoFLOP
    budgets' (the OLMo ladder with a logged C)."""
    desc = "scattered runs: 5 model sizes, no IsoFLOP budgets or grid"
    fits = {"design": {"kind": "scattered", "description": desc, "approaches": ["joint"]}}
    got = {name: d for name, _, d in study_checks(fits)}
    assert got["IsoFLOP minima inside the grid"] == f"not applicable: {desc}"
    fits["design"].update(kind="grid", description="N x D grid: 5 model sizes x 4 token counts")
    got = {name: d for name, _, d in study_checks(fits)}
    assert got["IsoFLOP minima inside the grid"].endswith("4 token counts has no IsoFLOP budgets")


def test_an_error_just_under_the_threshold_does_not_print_as_the_threshold():
    """'[ok] back-test error below 3%: 3.00%' for 2.996%, and '[FAIL] ...: 3.00%' for 3.004%."""
    bt = {"mean_abs_rel_error": {"estimate": 0.02996}, "description": "d", "coverage": {}}
    got = {n: (ok, d) for n, ok, d in study_checks({"backtest": bt})}
    assert got["back-test error below 3%"] == (True, "2.996% on d")
    bt["mean_abs_rel_error"]["estimate"] = 0.03004
    got = {n: (ok, d) for n, ok, d in study_checks({"backtest": bt})}
    assert got["back-test error below 3%"] == (False, "3.004% on d")
    bt["mean_abs_rel_error"]["estimate"] = 0.0114
    assert study_checks({"backtest": bt})[0][2] == "1.14% on d"
