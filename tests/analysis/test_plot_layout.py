"""Figure layout that a reader relies on: legends cover no data, log-axis tick labels on a
narrow range are few, distinct and apart, and the ablation panels' dodge stays near the data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.ablation import trend
from analysis.ablation_plots import DODGE, removable_figure
from analysis.plot_axes import narrow_ticks, place_legend
from analysis.plots import _plt, loss_vs_compute_figure
from analysis.report import run_analysis
from analysis.tables import RunTable
from scaling.results import C_6ND, N_TOTAL


def _covered(ax, xy: np.ndarray) -> int:
    """How many of the data points xy (data units) the axes' legend box contains."""
    ax.figure.draw_without_rendering()
    box = ax.get_legend().get_window_extent()
    return int(box.count_contains(ax.transData.transform(xy)))


def _shown_ticks(axis) -> list:
    """The tick labels drawn inside the view, with their text."""
    lo, hi = sorted(axis.get_view_interval())
    return [t for t in axis.get_ticklabels() if lo <= t.get_position()[axis.axis_name == "y"]
            <= hi and t.get_text()]  # fmt: skip


def _apart(labels) -> bool:
    boxes = [t.get_window_extent() for t in labels]
    return not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


# the demo sweep's 20 runs (N, D, final loss in nats/byte): four budgets 7.5e10 .. 6e11
DEMO_RUNS = [(4160, 2429952, 2.3026), (7776, 1350656, 2.1360), (12416, 869376, 2.1139),
             (18080, 608256, 2.1373), (24768, 450560, 2.2471), (7776, 2702336, 2.0568),
             (12416, 1737728, 1.9787), (18080, 1217536, 1.9165), (24768, 902144, 1.9469),
             (32480, 696320, 2.0318), (12416, 3476480, 1.8697), (18080, 2434048, 1.8160),
             (24768, 1803264, 1.7497), (32480, 1391616, 1.7481), (50976, 902144, 1.7825),
             (12416, 6951936, 1.7938), (18080, 4868096, 1.7402), (32480, 2783232, 1.6031),
             (50976, 1805312, 1.6014), (73568, 1265664, 1.6439)]  # fmt: skip
BUDGETS = [7.5e10] * 5 + [1.5e11] * 5 + [3e11] * 5 + [6e11] * 5


def _demo_table(tmp_path) -> RunTable:
    """The demo's runs, each with a learning curve (val loss every 10% of its tokens) that takes
    Approach 1's envelope down to a tenth of the smallest budget, as the demo's figure has it."""
    curves = []
    for i, (_, d, loss) in enumerate(DEMO_RUNS):
        path = tmp_path / f"r{i}.jsonl"
        path.write_text("".join(json.dumps({"tokens": t, "val_loss": loss * (d / t) ** 0.1}) + "\n"
                                for t in np.linspace(0.1, 1, 10) * d))  # fmt: skip
        curves.append(str(path))
    n, d, loss = (np.array(c, float) for c in zip(*DEMO_RUNS, strict=True))
    return RunTable([f"r{i}" for i in range(n.size)], n, d, 6 * n * d, loss,
                    np.array(BUDGETS), curves, loss_unit="nats/byte", source="demo")  # fmt: skip


def test_the_loss_vs_compute_legend_covers_no_run_or_prediction(tmp_path):
    table = _demo_table(tmp_path)
    res = run_analysis(table, n_resamples=40, holdout=None)
    fig = loss_vs_compute_figure(res)
    ax = fig.axes[0]
    runs = np.c_[table.C, table.loss]
    preds = [(r["flops"], r["loss"][k]) for r in res["compute_optimal"] for k in
             ("estimate", "lo", "hi") if r.get("loss", {}).get("kind") == "predictive"]  # fmt: skip
    assert len(preds) == 9  # 1x, 10x, 100x: estimate and both interval ends
    assert _covered(ax, runs) == 0 and _covered(ax, np.array(preds)) == 0
    ax.legend(loc="upper right")  # where it used to be: over the runs of the two largest budgets
    assert _covered(ax, runs) > 0
    _plt().close(fig)


def test_a_legend_moves_off_the_data_and_out_of_full_axes():
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    xy = np.array([(x, y) for x in np.linspace(0.55, 1, 12) for y in np.linspace(0.5, 1, 12)])
    ax.scatter(*xy.T, label="upper-right block")
    ax.plot([0, 0.3], [0.5, 0.5], label="a line")
    ax.set(xlim=(0, 1), ylim=(0, 1))
    place_legend(ax)
    assert _covered(ax, xy) == 0
    grid = np.array([(x, y) for x in np.linspace(0, 1, 40) for y in np.linspace(0, 1, 40)])
    ax.scatter(*grid.T, s=2, label="everywhere")
    ax.set_xlabel("x label")
    place_legend(ax)
    fig.draw_without_rendering()
    box = ax.get_legend().get_window_extent()
    assert _covered(ax, grid) == 0
    assert box.y1 < ax.xaxis.label.get_window_extent().y0  # below the axis label, not on it
    plt.close(fig)


@pytest.mark.parametrize(("lo", "hi"), [(5.146e11, 5.622e11), (0.97, 1.04), (8.1e3, 1.3e4)])
def test_narrow_log_ranges_get_few_distinct_ticks(lo, hi):
    ticks, labels = narrow_ticks(lo, hi)
    assert 2 <= len(ticks) <= 4 and all(lo <= t <= hi for t in ticks)
    assert len(set(labels)) == len(labels)
    assert all(len(lab) < 20 for lab in labels)


# the demo sweep's ablation: three runs of one compute budget (C within 0.035 decades)
RUNS = [(12416, 5.1789e11, 0.0, 0.0, 0.0), (32480, 5.4240e11, 0.36, 0.0, 0.4),
        (73568, 5.5867e11, 0.36, 0.0, 0.4)]  # fmt: skip


def _ablation_records() -> list[dict]:
    recs = []
    for n, c, *est in RUNS:
        rem = {kind: {"logprob": {"suite": {"estimate": e, "lo": max(e - 0.2, 0), "hi": e}}}
               for kind, e in zip(("heads", "ffn", "both"), est, strict=True)}  # fmt: skip
        recs.append({"run_id": f"n{n}", N_TOTAL: n, C_6ND: c, "removable": rem,
                     "spec": {"tol": 0.05}})  # fmt: skip
    return recs


def test_ablation_panels_dodge_within_the_data_and_label_narrow_compute():
    recs = _ablation_records()
    trends = [t for kind in ("heads", "ffn", "both") for axis in ("N", "C")
              if (t := trend(recs, kind, "logprob", axis, resamples=50))]  # fmt: skip
    assert {t["axis"] for t in trends} == {"N"}  # C spans too little for a trend
    fig = removable_figure(recs, {"trends": trends})
    fig.draw_without_rendering()
    for ax, data in zip(fig.axes, ([r[0] for r in RUNS], [r[1] for r in RUNS]), strict=True):
        xs = np.concatenate([line.get_xdata() for line in ax.lines if line.get_marker() == "o"])
        span = np.log10(max(data) / min(data))
        assert len(xs) == 3 * len(RUNS)
        out = np.log10(xs.max() / max(data)), np.log10(min(data) / xs.min())
        assert max(out) <= DODGE * span * (1 + 1e-9)  # the dodge reaches a few % of the span
        shown = _shown_ticks(ax.xaxis)
        texts = [t.get_text() for t in shown]
        assert 2 <= len(shown) <= 5 and len(set(texts)) == len(texts), texts
        assert _apart(shown), texts
    assert max(xs) < 5.6e11  # no point where no run is (the largest is 5.587e11)
    _plt().close(fig)
