"""The loss-threshold panel of the emergence figures: a hinge is drawn only where enough points
lie below it, and the loss axis says its unit (read from the runs' records)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.emergence.curves import Curve
from analysis.emergence.flagger import analyze_curves
from analysis.emergence.plots import MIN_BELOW, loss_panel, plot_curve
from analysis.emergence.sources import curves_from_results
from analysis.plots import _plt

# the demo sweep's four budgets: validation loss and add3 token accuracy (1-shot, 192 items)
DEMO_LOSS = [2.1139, 1.9165, 1.7481, 1.6014]
DEMO_ACC = [0.1443, 0.1443, 0.1521, 0.2198]


def _curve(loss, acc, unit: str | None = "nats/byte") -> Curve:
    k = len(loss)
    return Curve(task="add3", metric="token_acc", family="demo", shots=1,
                 scale=10 ** (10.9 + 0.3 * np.arange(k)), y=np.array(acc),
                 n_items=np.full(k, 192.0), chance=0.1, loss=np.array(loss),
                 loss_unit=unit)  # fmt: skip


def _panel(r: dict):
    plt = _plt()
    fig, ax = plt.subplots()
    loss_panel(ax, r)
    return fig, ax


def test_a_hinge_with_one_point_below_is_not_drawn():
    (r,) = analyze_curves([_curve(DEMO_LOSS, DEMO_ACC)])
    h = r["loss_threshold"]
    assert h["n_below_threshold"] == 1 < MIN_BELOW  # the fit puts its break before the last point
    fig, ax = _panel(r)
    assert len(ax.lines) == 1 and ax.lines[0].get_linestyle() == "None"  # the points, no line
    assert np.allclose(ax.lines[0].get_xdata(), DEMO_LOSS)
    assert "not identified" in ax.get_title() and "1 point below" in ax.get_title()
    assert ax.get_xlabel() == "validation loss (nats/byte)"
    _plt().close(fig)


def test_a_hinge_with_enough_points_below_is_drawn(tmp_path):
    loss = np.linspace(2.4, 1.6, 8)
    acc = 0.1 + 0.9 * np.clip(0.5 * (2.05 - loss), 0, None)  # flat, then rising below 2.05
    (r,) = analyze_curves([_curve(loss, acc, unit=None)])
    h = r["loss_threshold"]
    assert h["n_below_threshold"] >= MIN_BELOW
    fig, ax = _panel(r)
    hinge, threshold = ax.lines[1], ax.lines[2]
    y = np.asarray(hinge.get_ydata())
    assert np.ptp(y[np.asarray(hinge.get_xdata()) > h["threshold_loss"]]) < 1e-12  # flat above
    assert threshold.get_xdata()[0] == h["threshold_loss"]
    assert ax.get_title() == f"loss threshold ≈ {h['threshold_loss']:.3g}"
    assert ax.get_xlabel() == "validation loss"  # unit unknown: none claimed
    _plt().close(fig)
    assert plot_curve(r, [], tmp_path, scale="compute").is_file()  # the whole figure draws


def _rec(i: int, vocab: int) -> dict:
    c = 10 ** (11 + 0.3 * i)
    return {"run_id": f"r{i}-{vocab}", "family": f"v{vocab}", "N_total": 1e4 * 2**i,
            "D": c / (6e4 * 2**i), "C_6ND": c, "final_val_loss": 2.1 - 0.15 * i,
            "status": "done", "config": {"model": {"vocab_size": vocab}},
            "evals": {"scores": {"add3": {"1": {"token_acc": DEMO_ACC[i], "n_items": 192}}},
                      "chance": {"add3": {"token_acc": 0.1}}}}  # fmt: skip


def test_the_loss_unit_comes_from_the_records(tmp_path):
    recs = [_rec(i, v) for v in (259, 1024) for i in range(4)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    units = {c.family: c.loss_unit for c in curves_from_results(tmp_path)}
    assert units == {"v259": "nats/byte", "v1024": "nats/token"}  # byte-level vocab: per byte
    mixed = [dict(r, family="mixed") for r in recs]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mixed))
    assert [c.loss_unit for c in curves_from_results(tmp_path)] == [None]  # no false unit


def _companion_title(tmp_path, monkeypatch, em, tok) -> str:
    """The mirage panel's title in the figure of an exact-match curve with a token companion."""
    from analysis.emergence import plots

    k = len(em)
    kw = {"family": "F", "shots": 1, "scale": 10 ** (20.0 + np.arange(k)), "chance": 0.0}
    em_c = Curve("t", "exact_match", y=np.array(em), n_items=np.full(k, 2000.0),
                 companions=["token_acc"], **kw)  # fmt: skip
    tok_c = Curve("t", "token_acc", y=np.array(tok), n_items=np.full(k, 2000.0), **kw)
    r, comp = analyze_curves([em_c, tok_c])
    shown = []
    monkeypatch.setattr(plots.plt, "close", lambda fig: shown.append(fig))
    plot_curve(r, [comp], tmp_path, scale="compute")
    return shown[0].axes[1].get_title()


def test_the_mirage_panel_says_n_a_when_no_check_ran(tmp_path, monkeypatch):
    """It said "companion jumps = False" for a curve at chance throughout (the CLI: n/a)."""
    flat = _companion_title(tmp_path, monkeypatch, [0.0, 0.0], [0.1, 0.5])
    assert flat == "mirage check: n/a\n(no onset (at chance throughout))"
    em = [0.0, 0.0, 0.0005, 0.0, 0.4, 0.45, 0.5]
    tok = [0.3, 0.31, 0.3, 0.32, 0.8, 0.82, 0.84]
    assert (
        _companion_title(tmp_path, monkeypatch, em, tok) == "mirage check: companion jumps = True"
    )


def test_the_drawn_pre_onset_trend_is_the_line_the_test_fitted(tmp_path, monkeypatch):
    """The dashed trend was an unweighted refit of the pre-onset points while the test fits a
    weighted line with the extra scatter: the onset's predicted point sat off the line."""
    from analysis.emergence import plots

    y = np.array([0.0, 0.006, 0.0005, 0.02, 0.3, 0.35, 0.4])  # unequal binomial variances
    c = Curve("t", "em", "F", 10 ** np.arange(20.0, 27.0), y, n_items=np.full(7, 2000.0), chance=0)
    (r,) = analyze_curves([c])
    k, step = r["onset_index"], r["lfo"][0]
    assert k == 4 and step["index"] == k
    shown = []
    monkeypatch.setattr(plots.plt, "close", lambda fig: shown.append(fig))
    plot_curve(r, [], tmp_path, scale="compute")
    (line,) = [ln for ln in shown[0].axes[0].lines if ln.get_label() == "pre-onset trend"]
    on_line = np.interp(r["log10_scale"][k], line.get_xdata(), line.get_ydata())
    assert on_line == pytest.approx(step["predicted"], abs=1e-9)
    b0, b1 = np.polyfit(r["log10_scale"][:k], r["score_norm"][:k], 1)  # what it drew before
    assert abs(b0 + b1 * r["log10_scale"][k] - step["predicted"]) > 1e-3
