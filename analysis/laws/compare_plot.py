"""The figure of `scaling compare`: both sweeps' frontiers with bootstrap bands, and the compute
multiplier of B over A along A's frontier (analysis/laws/compare.py computes the numbers); and
`write`, which saves compare.json with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from analysis.laws.bootstrap import percentile_ci
from analysis.laws.compare import (
    SweepFit,
    compute_for_loss,
    frontier_loss,
    frontier_params,
    law_C,
)
from scaling.fileio import atomic_write
from scaling.results import clean_json


def figure(a: SweepFit, b: SweepFit, res: dict, out_dir: Path) -> list[str]:
    """Both sweeps' runs and frontiers (bootstrap bands) on one axis, and m(L) with its CI."""
    from analysis.plots import _plt, _save

    plt = _plt()
    level, R = res["level"], res["n_resamples"]
    # the law's C = 6ND throughout: the frontiers, the runs and the extrapolated region
    c_lo = min(law_C(a.table).min(), law_C(b.table).min())
    c_max = max(law_C(a.table).max(), law_C(b.table).max())
    Cg = np.geomspace(c_lo / 2, res["extrapolate"] * c_max, 200)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"wspace": 0.3})
    fa = frontier_params(a.fit.params)
    for s, col in ((a, "C0"), (b, "C3")):
        f = frontier_params(s.fit.params)
        fb = frontier_params({k: v[:R, None] for k, v in s.boot.params.items()})
        lo, hi = percentile_ci(frontier_loss(fb, Cg[None, :]), level)
        ax.fill_between(Cg, lo, hi, color=col, alpha=0.18, lw=0)
        ax.plot(Cg, frontier_loss(f, Cg), color=col, label=f"{s.label}: frontier L*(C)")
        ax.scatter(law_C(s.table), s.table.loss, s=18, color=col, edgecolor="k", lw=0.3, zorder=3)
    ax.axvline(c_max, color="0.6", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C = 6ND (FLOPs)")
    ax.set_ylabel(f"validation loss ({res['loss_unit']})")
    ax.set_title(f"Compute-optimal frontiers ({int(level * 100)}% bootstrap bands)")
    ax.legend(loc="upper right")
    ax.grid(True, which="both", alpha=0.25)
    # multiplier versus compute on A's frontier
    ba = frontier_params({k: v[:R, None] for k, v in a.boot.params.items()})
    bb = frontier_params({k: v[:R, None] for k, v in b.boot.params.items()})
    fb0 = frontier_params(b.fit.params)
    L_on_a = frontier_loss(fa, Cg)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = compute_for_loss(fa, L_on_a) / compute_for_loss(fb0, L_on_a)
        mb = compute_for_loss(ba, L_on_a[None, :]) / compute_for_loss(bb, L_on_a[None, :])
    lo, hi = percentile_ci(mb, level)
    ax2.fill_between(Cg, lo, hi, color="C2", alpha=0.2, lw=0)
    ax2.plot(Cg, m, color="C2", label=f"multiplier of {b.label} over {a.label}")
    ax2.axhline(1.0, color="k", lw=1)
    ax2.axvline(c_max, color="0.6", ls=":", lw=1)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    # the y range follows the runs' compute: past it the multiplier's band may span 1e-10..1e3,
    # which squashed the measured part into a line
    seen = np.concatenate([m[Cg <= c_max], lo[Cg <= c_max], hi[Cg <= c_max], [1.0]])
    seen = seen[np.isfinite(seen) & (seen > 0)]
    ax2.set_ylim(seen.min() / 3, seen.max() * 3)
    _multiplier_points(ax2, res["multipliers"])
    for axis in (ax, ax2):
        axis.axvspan(c_max, Cg[-1], color="0.93", lw=0, zorder=0)
        # at the top of the shaded span, clear of both legends
        axis.text(c_max * 1.08, 0.98, "extrapolated", transform=axis.get_xaxis_transform(),
                  ha="left", va="top", fontsize=8, color="0.4")  # fmt: skip
    ax2.set_xlabel(f"compute {a.label} spends to reach the loss (FLOPs)")
    ax2.set_ylabel(f"C({a.label}) / C({b.label}) at equal loss")
    ax2.set_title("Compute multiplier (> 1: B is cheaper)")
    ax2.legend(loc="best")
    ax2.grid(True, which="both", alpha=0.25)
    paths = _save(fig, out_dir, "compare")
    plt.close(fig)
    return paths


def _multiplier_points(ax, rows: list[dict]) -> None:
    """Each reported multiplier with its CI. A CI end at 0 or inf (some resamples never reach
    that loss) is no bound: the point is hollow and that side a dashed line to the axis edge
    ending in an arrow, so an unbounded multiplier does not pass for a precise one."""
    y0, y1 = ax.get_ylim()
    open_ = False
    for r in rows:
        mm, x = r["multiplier"], r["C_A"]
        if not (np.isfinite(x) and np.isfinite(mm["estimate"])):
            continue  # a loss at or below a frontier's E: no multiplier to draw
        est, lo, hi = mm["estimate"], mm["lo"], mm["hi"]
        lo_ok, hi_ok = bool(np.isfinite(lo) and lo > 0), bool(np.isfinite(hi))
        bounded = lo_ok and hi_ok
        # the bar spans the CI's finite ends; a percentile CI need not contain the full fit's
        # estimate (a bar measured from the point then had a negative side: matplotlib raised)
        bot, top = sorted((lo if lo_ok else est, hi if hi_ok else est))
        ax.errorbar(x, bot, yerr=[[0.0], [top - bot]], fmt="none", ecolor="k", capsize=3,
                    zorder=4)  # fmt: skip
        ax.plot([x], [est], "o", color="k", ms=4 if bounded else 6,
                mfc="k" if bounded else "none", zorder=5)  # fmt: skip
        for ok, end, tip in ((lo_ok, y0, "v"), (hi_ok, y1, "^")):
            if not ok:
                ax.plot([x, x], [est, end], color="k", ls="--", lw=1, zorder=4)
                ax.plot([x], [end], marker=tip, color="k", ms=6, clip_on=False, zorder=4)
        open_ |= not bounded
    if open_:  # a legend entry (the caller's ax.legend picks it up)
        ax.plot([], [], color="k", ls="--", marker="o", mfc="none", ms=6,
                label="hollow, dashed to the edge: CI unbounded (0 or inf)")  # fmt: skip


def write(res: dict, a: SweepFit, b: SweepFit, out_dir: Path) -> dict:
    """compare.json and the figure in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(clean_json(res), indent=2)  # strict JSON: an unreachable loss's inf -> null
    atomic_write(out_dir / "compare.json", text + "\n")  # the numbers first: a figure can fail
    figs = figure(a, b, res, out_dir)
    return {"json": str(out_dir / "compare.json"), "figures": figs}
