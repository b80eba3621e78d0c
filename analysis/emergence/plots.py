"""Figures for flagged emergence curves (matplotlib, Agg backend; imported only when plotting)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.emergence.curves import MARGIN  # noqa: E402
from analysis.emergence.flagger import onset_phrase  # noqa: E402
from analysis.emergence.stats import _logistic  # noqa: E402
from scaling.fileio import save_figure  # noqa: E402

SCALE_LABEL = {"compute": "log10 training compute (FLOPs)", "params": "log10 parameters"}
MIN_BELOW = 3  # points below a loss threshold before its hinge is drawn: one or two fit anything


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:120]


def _trend(ax, r: dict, x: np.ndarray) -> None:
    """Pre-onset line and predictive intervals of the leave-future-out steps."""
    for step in r.get("lfo", []):
        j = step["index"]
        ax.errorbar(
            [x[j]],
            [step["predicted"]],
            yerr=[[1.96 * step["sd"]], [1.96 * step["sd"]]],
            fmt="s",
            mfc="none",
            color="tab:orange",
            capsize=3,
            zorder=3,
            label="LFO prediction ±1.96 SD" if j == r["lfo"][0]["index"] else None,
        )
    k = r.get("onset_index")
    first = (r.get("lfo") or [{}])[0]
    if k is not None and first.get("index") == k and first.get("trend"):
        # the line the test fitted (weighted, with the extra scatter), so the onset's
        # prediction lies on it; an unweighted refit drew a slightly different line
        b0, b1 = first["trend"]
        xx = np.linspace(x[0], x[min(k + 1, len(x) - 1)], 50)
        ax.plot(xx, b0 + b1 * xx, "--", color="tab:orange", lw=1, label="pre-onset trend")


def plot_curve(
    r: dict, companions: list[dict], out_dir: Path, *, scale: str, taken: set | None = None
) -> Path:
    """One PNG: normalised score with CIs, onset, LFO, sigmoid; companions; loss view. `taken`:
    the file names already written this run (family 'OPT IML' and 'OPT_IML' share a slug: the
    second figure overwrote the first); a repeated name gets _2, _3, ..."""
    x = np.asarray(r["log10_scale"])
    s = np.asarray(r["score_norm"])
    panels = 1 + bool(companions) + bool(r.get("loss_threshold"))
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.0), squeeze=False)
    ax = axes[0][0]
    lo, hi = np.asarray(r["ci_lo"]), np.asarray(r["ci_hi"])
    ax.errorbar(
        x,
        s,
        yerr=[np.maximum(s - lo, 0), np.maximum(hi - s, 0)],
        fmt="o-",
        color="tab:blue",
        capsize=3,
        label=f"{r['metric']} (95% CI)",
    )
    if r["bounded"]:
        ax.axhline(0.0, color="grey", lw=0.8, label="chance")
        ax.axhline(MARGIN, color="grey", lw=0.8, ls=":", label="margin (onset: CI low above)")
    if r.get("onset_index") is not None:
        ax.axvline(x[r["onset_index"]], color="tab:red", lw=0.8, ls="--", label="onset")
    _trend(ax, r, x)
    sig = r.get("sigmoid")
    if sig:
        xx = np.linspace(x[0], x[-1], 200)
        w = sig["width_10_90_log10"] / (2 * np.log(9))
        ax.plot(
            xx,
            _logistic(xx, sig["floor"], sig["amplitude"], sig["midpoint_log10"], w),
            color="tab:green",
            lw=1,
            label=f"sigmoid (ΔBIC {sig['delta_bic']:.1f})",
        )
    ax.set_xlabel(SCALE_LABEL.get(scale, "log10 scale"))
    ax.set_ylabel("chance-normalised score" if r["bounded"] else r["metric"])
    shots = "" if r["shots"] is None else f", {r['shots']}-shot"
    ax.set_title(f"{r['family']}: {r['task']}{shots}\nverdict: {r['verdict']}", fontsize=10)
    # below the axes: inside, it covered the smallest scales' points and error bars
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    col = 1
    if companions:
        ax2 = axes[0][col]
        col += 1
        for c in companions:
            cx, cy = np.asarray(c["log10_scale"]), np.asarray(c["score_norm"])
            rng = float(np.ptp(cy)) or 1.0
            cy = cy if c["bounded"] else (cy - cy.min()) / rng
            ax2.plot(cx, cy, "o-", label=f"{c['metric']} ({c.get('verdict')})")
        ax2.plot(x, s, "o--", color="tab:blue", alpha=0.5, label=r["metric"])
        ax2.set_xlabel(SCALE_LABEL.get(scale, "log10 scale"))
        ax2.set_ylabel("normalised (bounded: chance-norm.; else min-max)")
        ax2.set_title(mirage_title(r), fontsize=10)
        ax2.legend(fontsize=7, loc="upper left")
    if r.get("loss_threshold"):
        loss_panel(axes[0][col], r)
    fig.tight_layout()
    stem = _slug(f"emergence_{r['family']}_{r['task']}_{r['metric']}_{r['shots']}")
    taken = set() if taken is None else taken
    name = next(n for k in range(1, len(taken) + 2)
                if (n := stem + (f"_{k}" if k > 1 else "") + ".png") not in taken)  # fmt: skip
    taken.add(name)
    path = Path(out_dir) / name
    save_figure(fig, path, dpi=110, bbox_inches="tight")  # keeps the legend below the axes
    plt.close(fig)
    return path


def mirage_title(r: dict) -> str:
    """The companion panel's title: the mirage check's answer, or why it has none (it said
    "companion jumps = False" for a check that never ran, e.g. a curve at chance throughout,
    where `scaling emergence` prints n/a)."""
    mir = r.get("mirage") or {}
    if mir.get("checked"):
        return f"mirage check: companion jumps = {mir['any_companion_jumps']}"
    k, na = r.get("onset_index"), mir.get("not_checked") or {}
    if k is not None and na:
        why = f"{', '.join(na)} lacks a score the test needs"
    elif k is not None and k >= 1:
        why = f"{onset_phrase(r)}: too few points for the test"
    else:
        why = onset_phrase(r)
    return f"mirage check: n/a\n({why})"


def loss_panel(ax, r: dict) -> None:
    """Score against validation loss (in the runs' unit where known), with the hinge of the
    loss-threshold fit drawn only when at least MIN_BELOW points lie below the threshold."""
    loss, s = np.asarray(r["loss"]), np.asarray(r["score_norm"])
    h = r["loss_threshold"]
    ax.plot(loss, s, "o", color="tab:blue")
    if h["n_below_threshold"] >= MIN_BELOW:
        ll = np.linspace(np.nanmin(loss), np.nanmax(loss), 100)
        ax.plot(
            ll,
            h["floor"] + h["slope_below_threshold"] * np.maximum(0, h["threshold_loss"] - ll),
            color="tab:red",
        )
        ax.axvline(h["threshold_loss"], color="tab:red", ls=":", lw=0.8)
        title = f"loss threshold ≈ {h['threshold_loss']:.3g}"
    else:
        n = h["n_below_threshold"]
        title = f"loss threshold not identified ({n} point{'s' * (n != 1)} below, need {MIN_BELOW})"
    ax.invert_xaxis()
    unit = r.get("loss_unit")
    ax.set_xlabel(f"validation loss ({unit})" if unit else "validation loss")
    ax.set_ylabel("chance-normalised score" if r["bounded"] else r["metric"])
    ax.set_title(title, fontsize=10)
