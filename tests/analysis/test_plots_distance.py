"""The report's distance panel: where its own predictions fall and where support ends."""

import numpy as np

from analysis.laws.intervals import SPAN_POWER, SUPPORT_MARGIN
from analysis.laws.simulate import isoflop_sweep
from analysis.plots import distance_panel_data, predictor_reliability
from analysis.report import run_analysis
from analysis.tables import RunTable


def test_the_reports_predictions_and_the_support_limit_are_on_the_distance_axis(tmp_path):
    s = isoflop_sweep(budgets=(1e18, 3e18, 1e19, 3e19, 1e20), n_sizes=5)
    n = s["N"].size
    table = RunTable([f"r{i}" for i in range(n)], s["N"], s["D"], s["C"], s["loss"],
                     s["budget"], [None] * n, source="simulated")  # fmt: skip
    res = run_analysis(table, n_resamples=40, holdout=None)
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
