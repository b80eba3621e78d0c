"""The IsoFLOP figure tells an extrapolated minimum from an interior one, and its legend, which
may then not fit inside the axes, is placed without covering a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.plots import _plt, isoflop
from analysis.report import run_analysis
from analysis.tables import RunTable


def _table(n_lo: float) -> RunTable:
    """Three budgets x 5 sizes from n_lo over 6x; the fake law's optimum is ~1e5 at 1e12."""
    c = np.repeat([1e12, 2e12, 4e12], 5)
    n = np.tile(np.geomspace(n_lo, 6 * n_lo, 5), 3) * np.sqrt(c / 1e12)
    d = c / (6 * n)
    loss = 1.0 + 60 / n**0.34 + 90 / d**0.3
    return RunTable([f"r{i}" for i in range(n.size)], n, d, c, loss, c, [None] * n.size,
                    source="t")  # fmt: skip


def _figure(table: RunTable, tmp_path, monkeypatch):
    res = run_analysis(table, n_resamples=10, holdout=None, intervals=False)
    plt, figs = _plt(), []
    monkeypatch.setattr(plt, "close", figs.append)
    isoflop(res, tmp_path)
    monkeypatch.undo()
    return res, figs[0]


def test_an_extrapolated_minimum_is_a_hollow_star_with_a_legend_entry(tmp_path, monkeypatch):
    """Every minimum was a filled star, so a budget whose minimum lies past its sampled N (the
    [FAIL] of `analysis.checks`) looked like a centred one."""
    for n_lo, hollow in ((4e4, False), (5e3, True)):  # centred on the optimum; all below it
        res, fig = _figure(_table(n_lo), tmp_path, monkeypatch)
        minima = res["approach2"]["minima"]
        assert all(m["inside_range"] != hollow for m in minima)
        stars = [ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "*"]
        drawn = [ln for ln in stars if len(ln.get_xdata())]
        assert len(drawn) == len(minima)
        assert all((ln.get_markerfacecolor() == "none") == hollow for ln in drawn)
        texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert any("outside the sampled N" in t for t in texts) == hollow
        fig.canvas.draw()
        box = fig.axes[0].get_legend().get_window_extent()
        t = res["table"]
        xy = fig.axes[0].transData.transform(np.c_[t.N, t.loss])
        assert not box.count_contains(xy)  # the legend covers no run
        _plt().close(fig)


def test_one_budget_draws_its_parabola_and_minimum(tmp_path, monkeypatch):
    """A one-budget study reports its IsoFLOP minimum, but no isoflop figure was drawn (only
    Approach 2's minima were), so the parabola behind the reported N_opt was never shown."""
    from analysis.plots import all_figures

    t = _table(4e4)
    t = t.subset(t.budget == 1e12)
    res = run_analysis(t, n_resamples=10, holdout=None, intervals=False)
    m = res["isoflop_minimum"]
    assert "approach2" not in res and m is not None
    plt, figs = _plt(), []
    monkeypatch.setattr(plt, "close", figs.append)
    out = all_figures(res, tmp_path)
    monkeypatch.undo()
    assert "isoflop" in out
    fig = next(f for f in figs if f.axes[0].get_title().startswith("IsoFLOP"))
    stars = [ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "*"]
    assert [(ln.get_xdata()[0], ln.get_ydata()[0]) for ln in stars] == [(m["N_opt"], m["loss_min"])]
    for f in figs:
        plt.close(f)


def test_log_tick_labels_at_1_6_decades_do_not_collide():
    """N from 3e8 to 8e9 (1.43 decades of data, ~1.6 with margins) was left to matplotlib, which
    labelled its minor ticks: '3x10^8' and '4x10^8' overlapped."""
    from analysis.plot_axes import tidy_log_axes

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.scatter([3e8, 8e9], [1, 2])
    ax.set_xscale("log")
    tidy_log_axes(fig)
    fig.canvas.draw()
    lo, hi = sorted(ax.get_xlim())
    shown = [t for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi and t.get_text()]
    boxes = [t.get_window_extent() for t in shown]
    assert len(shown) >= 2
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    plt.close(fig)


def test_a_figure_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    """Figures were saved straight to their path: a save that died midway (a crash, a full disk)
    left a truncated PNG where report.md links the figure; the old one now stays."""
    from matplotlib.figure import Figure

    from analysis.plots import _save

    (tmp_path / "f.png").write_bytes(b"old")

    def dies_midway(self, target, **kw):
        if hasattr(target, "write"):
            target.write(b"partial")
        else:
            Path(target).write_bytes(b"partial")
        raise OSError("killed")

    fig = _plt().figure()
    monkeypatch.setattr(Figure, "savefig", dies_midway)
    try:
        _save(fig, tmp_path, "f")
    except OSError:
        pass
    assert (tmp_path / "f.png").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]
    # the ablation figures too (ablation_removable.png, ablation_curves.png)
    from analysis import ablation_plots

    monkeypatch.setattr(ablation_plots, "removable_figure", lambda *a, **k: fig)
    (tmp_path / "ablation_removable.png").write_bytes(b"old")
    try:
        ablation_plots.plot_removable([], {}, tmp_path)
    except OSError:
        pass
    assert (tmp_path / "ablation_removable.png").read_bytes() == b"old"
    _plt().close(fig)


def test_approach2_from_extrapolated_minima_says_so_in_the_summary_and_report():
    """The summary printed 'cross-check, IsoFLOP parabolas (Approach 2): a = 0.470 [0.442,
    0.487]' as a plain cross-check though every minimum lay past its budget's runs (a note
    said so further down); the summary line and report.md's row now say it."""
    from analysis.markdown import report_md
    from analysis.summary import summary_lines

    for n_lo, caveat in ((4e4, False), (5e3, True)):
        res = run_analysis(_table(n_lo), n_resamples=10, holdout=None, intervals=False)
        line = next(s for s in summary_lines(res) if "Approach 2" in s)
        row = next(s for s in report_md(res, {}, Path(".")).splitlines() if "Approach 2 (" in s)
        said = "; minima outside the sampled N at 3 of 3 budgets (extrapolated)"
        assert (said in line, said in row) == (caveat, caveat), (line, row)
