"""Ablation figures: removable fraction vs N and vs compute (with the fitted trend), and the
pruning curves of every run. Matplotlib (Agg) is imported lazily."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.ablation import KINDS, suite
from analysis.plot_axes import tidy_log_axes
from analysis.plots import _plt
from scaling.fileio import save_figure
from scaling.results import C_6ND, N_TOTAL

COLORS = {"heads": "tab:blue", "ffn": "tab:orange", "both": "tab:green"}
# the kinds sit side by side at one run's x, DODGE of the runs' log10 span apart (the runs of
# one compute budget span a few percent in C: a fixed step would be as wide as the data)
DODGE = 0.03
DODGE_ONE_X = 0.01  # decades, when every run has the same x


def dodge_step(xs: list[float]) -> float:
    """The decades between neighbouring kinds at one x: DODGE of the data's log10 span."""
    span = float(np.ptp(np.log10(xs))) if len(xs) else 0.0
    return DODGE * span if span > 0 else DODGE_ONE_X


def plot_removable(recs: list[dict], summary: dict, out: Path, metric: str = "logprob") -> Path:
    """ablation_removable.png: see `removable_figure`."""
    plt = _plt()
    fig = removable_figure(recs, summary, metric)
    path = out / "ablation_removable.png"
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def removable_figure(recs: list[dict], summary: dict, metric: str = "logprob"):
    """Two panels (x = N, x = C): removable fraction per run with its CI, one colour per kind,
    the fitted line where a trend was fitted."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, axis, key, label in (
        (axes[0], "N", N_TOTAL, "parameters N"),
        (axes[1], "C", C_6ND, "training compute C = 6ND (FLOPs)"),
    ):
        step = dodge_step([r[key] for r in recs if r.get(key)])
        for j, kind in enumerate(KINDS):
            pts = [(r[key], suite(r, kind, metric)) for r in recs if r.get(key)]
            pts = [(x * 10 ** (step * (j - 1)), s) for x, s in pts if s is not None]
            if not pts:
                continue
            x = np.array([p[0] for p in pts])
            y = np.array([p[1]["estimate"] for p in pts])
            err = np.array([[p[1]["estimate"] - p[1]["lo"], p[1]["hi"] - p[1]["estimate"]]
                            for p in pts]).T  # fmt: skip
            ax.errorbar(x, y, yerr=np.clip(err, 0, None), fmt="o", color=COLORS[kind],
                        capsize=3, label=kind)  # fmt: skip
            t = next((t for t in summary["trends"] if (t["kind"], t["metric"], t["axis"])
                      == (kind, metric, axis)), None)  # fmt: skip
            if t is not None and not t.get("all_censored"):  # a slope of '< f' zeros: none
                xs = np.linspace(min(t["x"]), max(t["x"]), 20)
                ax.plot(10**xs, t["intercept"] + t["slope"] * xs, color=COLORS[kind], lw=1.2,
                        label=f"{kind} fit: {t['slope']:+.2f}/decade "
                              f"[{t['slope_lo']:+.2f}, {t['slope_hi']:+.2f}]")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylim(-0.03, 1.0)
        ax.grid(alpha=0.3)
    tol = recs[0]["spec"]["tol"] if recs else 0.05
    axes[0].set_ylabel(f"fraction removable (<= {tol:.0%} drop, {metric})")
    axes[0].legend(loc="best")
    fig.suptitle("How much of each model can be removed without hurting the few-shot suite")
    tidy_log_axes(fig)  # C of one budget spans a few percent: few, distinct tick labels
    return fig


def plot_curves(recs: list[dict], out: Path, metric: str = "logprob") -> Path:
    """One panel per kind: suite-average retained score (1 = unpruned) against the fraction
    removed, one line per run coloured by N."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(KINDS), figsize=(13, 4), sharey=True)
    cmap = plt.get_cmap("viridis")
    Ns = np.log10([r.get(N_TOTAL) or 1 for r in recs])
    span = np.ptp(Ns) or 1.0
    for ax, kind in zip(axes, KINDS, strict=True):
        for r, n in zip(recs, Ns, strict=True):
            s = r["removable"].get(kind, {}).get(metric, {}).get("suite", {})
            if not s.get("retained"):
                continue
            x = r["curves"][kind]["actual"]
            y = [np.nan if v is None else v for v in s["retained"]]
            ax.plot(x, y, "o-", ms=3, color=cmap((n - Ns.min()) / span),
                    label=f"N={r.get(N_TOTAL, 0):.2g}")  # fmt: skip
        tol = recs[0]["spec"]["tol"] if recs else 0.05
        ax.axhline(1 - tol, color="grey", ls="--", lw=1, label=f"{tol:.0%} drop (removable)")
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(lo, -0.5), max(hi, 1.05))  # a collapsed curve would squash the rest
        ax.set_title(kind)
        ax.set_xlabel("fraction removed (least important first)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"retained suite {metric} (1 = unpruned)")
    axes[-1].legend(loc="best", fontsize=8)
    path = out / "ablation_curves.png"
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def all_figures(ab: dict, out: Path) -> dict[str, list[str]]:
    """The report's ablation figures from `analysis.ablation.analyze`'s output."""
    recs, summary = ab["runs"], ab["summary"]
    if not recs:  # an empty table: nothing to draw (np.ptp of no sizes raised)
        return {}
    return {
        "ablation removable fraction vs N and C": [str(plot_removable(recs, summary, out))],
        "ablation pruning curves": [str(plot_curves(recs, out))],
    }
