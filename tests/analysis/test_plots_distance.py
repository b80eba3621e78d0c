"""The report's distance panel: where its own predictions fall and where support ends."""

import numpy as np
import pytest

from analysis.laws.intervals import SPAN_POWER, SUPPORT_MARGIN
from analysis.laws.simulate import isoflop_sweep
from analysis.plots import _distance_panel, _plt, distance_panel_data, predictor_reliability
from analysis.report import run_analysis
from analysis.tables import RunTable


@pytest.fixture(scope="module")
def res() -> dict:
    s = isoflop_sweep(budgets=(1e18, 3e18, 1e19, 3e19, 1e20), n_sizes=5)
    n = s["N"].size
    table = RunTable([f"r{i}" for i in range(n)], s["N"], s["D"], s["C"], s["loss"],
                     s["budget"], [None] * n, source="simulated")  # fmt: skip
    return run_analysis(table, n_resamples=40, holdout=None)


def test_the_reports_predictions_and_the_support_limit_are_on_the_distance_axis(res, tmp_path):
    b = distance_panel_data(res)
    cal = res["predictor"].calibration(res["level"])
    # C_max, 10x and 100x: 0, 1 and 2 decades out, in units of decades / sqrt(decades fitted)
    assert [t[2] for t in b["targets"]] == ["Cmax", "10x Cmax", "100x Cmax"]
    x_t = np.array([t[0] for t in b["targets"]])
    assert np.allclose(x_t, np.array([0.0, 1.0, 2.0]) / cal.span**SPAN_POWER)
    for x, h, _ in b["targets"]:
        assert (
            h == res["compute_optimal"][round(x * cal.span**SPAN_POWER)]["interval_terms"]["total"]
        )  # the diamonds are the printed intervals' half-widths
    assert b["xg"][-1] > x_t.max()  # the axis reaches the furthest prediction
    assert b["x_support"] == (cal.d_max + SUPPORT_MARGIN) / cal.span**SPAN_POWER
    hg = np.asarray(b["hg"])
    assert np.all(np.diff(hg) >= -1e-12)  # the half-width never narrows further out
    figs = predictor_reliability(res, tmp_path)
    assert [p.rsplit(".", 1)[1] for p in figs] == ["png", "svg"]


def test_the_legend_says_which_form_spread_the_line_and_the_diamonds_use(res):
    """The line is the half-width at the back-tests' median form spread, each diamond a printed
    interval at its own: the legend says so (a diamond off the line is no error), and it sits
    over no back-test point or diamond."""
    b = distance_panel_data(res)
    fig, ax = _plt().subplots(figsize=(5.2, 4.2))
    _distance_panel(ax, b)
    leg = ax.get_legend()
    labels = [t.get_text() for t in leg.get_texts()]
    assert f"{b['level']:.0%} half-width at median form spread" in labels
    assert "report's predictions (own form spread)" in labels
    fig.draw_without_rendering()
    pts = np.r_[
        np.c_[b["x"], 100 * np.asarray(b["err"])], [(x, 100 * h) for x, h, _ in b["targets"]]
    ]
    assert not leg.get_window_extent().count_contains(ax.transData.transform(pts))
    _plt().close(fig)


def test_the_coverage_panel_says_when_it_scored_the_priors_intervals(res, tmp_path, monkeypatch):
    """With 2 origins, leaving one out leaves nothing to calibrate on: the coverage panel then
    shows the prior's intervals, and its title says so."""
    import analysis.plots as plots

    titles = []
    monkeypatch.setattr(
        plots, "reliability", lambda rel, out, name, title, back: titles.append(title)
    )
    predictor_reliability(res, tmp_path)
    pred = res["predictor"]
    cc = pred.cross_coverage(res["level"])
    assert cc["prior_only"] < cc["n"]  # 5 budgets: the other origins calibrate
    monkeypatch.setattr(
        type(pred), "cross_coverage", lambda self, lv=0.9: cc | {"prior_only": cc["n"]}
    )
    predictor_reliability(res, tmp_path)
    assert titles[0] == "Rolling back-tests, leave-one-origin-out"
    assert titles[1].startswith("Rolling back-tests vs the prior's intervals")
