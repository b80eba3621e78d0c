"""Figures (PNG + SVG): loss vs compute, IsoFLOP curves, N_opt vs C, residuals.

Matplotlib is imported lazily with the Agg backend, so importing this module is cheap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.laws.bootstrap import percentile_ci
from analysis.laws.core import compute_optimal, joint_loss_vec, power_loss
from analysis.plot_axes import compute_label, place_legend, tidy_log_axes
from scaling.fileio import save_figure

STYLE = {
    "font.size": 11,
    "axes.labelsize": 12,
    "axes.titlesize": 12,
    "legend.fontsize": 9,
    "lines.linewidth": 1.8,
    "savefig.bbox": "tight",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
    return plt


def _save(fig, out_dir: Path, name: str) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    tidy_log_axes(fig)
    paths = []
    for ext in ("png", "svg"):
        paths.append(str(save_figure(fig, out_dir / f"{name}.{ext}", dpi=150)))
    return paths


def loss_vs_compute(res: dict, out_dir: Path) -> list[str]:
    """Every run coloured by N, the Approach-1 envelope, the L(C) fit, the joint law's
    compute-optimal loss with its bootstrap band out to 100x the largest budget, and the printed
    predictions with their predictive intervals."""
    fig = loss_vs_compute_figure(res)
    paths = _save(fig, out_dir, "loss_vs_compute")
    _plt().close(fig)
    return paths


def loss_vs_compute_figure(res: dict):
    """The loss-versus-compute figure (open, for `loss_vs_compute` to save); its legend sits
    where it covers no run, line or prediction."""
    plt = _plt()
    from matplotlib.colors import LogNorm

    t, fit, boot, level = res["table"], res["fit"], res["boot"], res["level"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    sc = ax.scatter(
        t.C,
        t.loss,
        c=t.N,
        norm=LogNorm(),
        cmap="viridis",
        s=28,
        edgecolor="k",
        linewidth=0.3,
        zorder=3,
        label="runs (final loss)",
    )
    fig.colorbar(sc, ax=ax, label="parameters N")
    env = res.get("envelope")
    if env is not None:
        ax.step(
            env["C"], env["loss"], where="post", color="0.35", lw=1.2, label="Approach 1 envelope"
        )
    Cg = np.geomspace(t.C.min(), 100 * t.C.max(), 200)
    if res.get("compute_optimal"):  # a design that identifies the allocation (not a ladder)
        opt = compute_optimal(fit.params, Cg)
        bopt = compute_optimal({k: v[:, None] for k, v in boot.params.items()}, Cg[None, :])
        lo, hi = percentile_ci(bopt["loss"], level)
        label = f"joint law, {int(level * 100)}% bootstrap CI"
        ax.fill_between(Cg, lo, hi, color="C3", alpha=0.2, lw=0, label=label)
        ax.plot(Cg, opt["loss"], color="C3", label="joint law at compute-optimal N, D")
    lc = res.get("frontier_fit")
    if lc is not None:
        ax.plot(Cg, power_loss(lc.params, Cg), "--", color="C0", label="frontier fit L(C)")
    _predictive_points(ax, res.get("compute_optimal") or [], level)
    ax.axvline(t.C.max(), color="0.6", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(compute_label(t))
    ax.set_ylabel(f"validation loss ({t.loss_unit})")
    ax.set_title("Loss versus compute (dotted: largest budget run)")
    ax.grid(True, which="both", alpha=0.25)
    tidy_log_axes(fig)  # the tick labels are final before the legend looks for room
    place_legend(ax)
    return fig


def _predictive_points(ax, rows: list[dict], level: float) -> None:
    """The predictions `analyze` prints (1x, 10x, 100x the largest budget) with their predictive
    intervals: the chosen predictor's, which may differ from the joint law drawn as a line."""
    rows = [r for r in rows if r.get("loss", {}).get("kind") == "predictive"]
    if not rows:
        return
    c = np.array([r["flops"] for r in rows])
    est = np.array([r["loss"]["estimate"] for r in rows])
    err = np.array(
        [[e - r["loss"]["lo"], r["loss"]["hi"] - e] for e, r in zip(est, rows, strict=True)]
    ).T
    ax.errorbar(c, est, yerr=np.clip(err, 0, None), fmt="D", color="k", ms=5, capsize=4,
                zorder=4, label=f"prediction, {int(level * 100)}% predictive interval")  # fmt: skip


def isoflop(res: dict, out_dir: Path) -> list[str]:
    """Loss versus N per IsoFLOP budget, with the Approach-2 parabolas and their minima."""
    plt = _plt()
    t, a2 = res["table"], res.get("approach2")
    from analysis.tables import infer_budgets

    budgets = infer_budgets(t)
    ub = np.unique(budgets)
    cmap = plt.get_cmap("plasma")
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, c in enumerate(ub):
        m = budgets == c
        col = cmap(i / max(len(ub) - 1, 1) * 0.85)
        ax.scatter(t.N[m], t.loss[m], color=col, s=24, zorder=3, label=f"C = {c:.2g}")
    extrapolated = False
    one = [res["isoflop_minimum"]] if res.get("isoflop_minimum") else []  # one budget
    for row in (a2 or {}).get("minima") or one:
        i = int(np.flatnonzero(ub == row["budget"])[0]) if row["budget"] in ub else 0
        col = cmap(i / max(len(ub) - 1, 1) * 0.85)
        m = budgets == row["budget"]
        xc, (p0, p1, p2) = row["parabola"]["x_center"], row["parabola"]["coef"]
        x = np.linspace(np.log(t.N[m].min()), np.log(t.N[m].max()), 100) - xc
        ax.plot(np.exp(x + xc), p0 + p1 * x + p2 * x * x, color=col, lw=1.3)
        inside = row.get("inside_range", True)  # a minimum past the sampled N: hollow
        ax.plot(row["N_opt"], row["loss_min"], marker="*", ms=13, color=col,
                mec="k" if inside else col, mfc=col if inside else "none", zorder=4)  # fmt: skip
        extrapolated = extrapolated or not inside
    if extrapolated:
        ax.plot([], [], "*", ms=13, color="0.3", mfc="none",
                label="hollow: minimum outside the sampled N (extrapolated)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel(f"validation loss ({t.loss_unit})")
    ax.set_title("IsoFLOP curves (stars: parabola minima, Approach 2)")
    ax.grid(True, which="both", alpha=0.25)
    if len(ub) <= 12:
        tidy_log_axes(fig)  # the tick labels are final before the legend looks for room
        place_legend(ax, ncol=2)
    paths = _save(fig, out_dir, "isoflop")
    plt.close(fig)
    return paths


def nopt_vs_c(res: dict, out_dir: Path) -> list[str]:
    """Compute-optimal N versus C: joint law (with CI band), Approach 2 minima, Approach 1."""
    plt = _plt()
    t, fit, boot, level = res["table"], res["fit"], res["boot"], res["level"]
    Cg = np.geomspace(t.C.min(), 100 * t.C.max(), 200)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    bopt = compute_optimal({k: v[:, None] for k, v in boot.params.items()}, Cg[None, :])
    lo, hi = percentile_ci(bopt["N_opt"], level)
    a_exp = fit.params["beta"] / (fit.params["alpha"] + fit.params["beta"])
    ax.fill_between(Cg, lo, hi, color="C3", alpha=0.2, lw=0)
    ax.plot(
        Cg,
        compute_optimal(fit.params, Cg)["N_opt"],
        color="C3",
        label=f"joint law: N_opt ~ C^{a_exp:.3f} ({int(level * 100)}% CI band)",
    )
    a2 = res.get("approach2")
    if a2:
        bc = np.array([r.get("C_opt", r["budget"]) for r in a2["minima"]])  # the table's C
        ax.scatter(
            bc,
            [r["N_opt"] for r in a2["minima"]],
            marker="*",
            s=120,
            color="C1",
            edgecolor="k",
            zorder=4,
            label="IsoFLOP minima (Approach 2)",
        )
        ax.plot(
            Cg,
            np.exp(a2["log_coef"]) * Cg ** a2["a"],
            "--",
            color="C1",
            label=f"Approach 2 fit: C^{a2['a']:.3f}",
        )
    env = res.get("envelope")
    if env is not None and "a" in env:
        ax.scatter(env["C"], env["N"], s=10, color="0.4", label="Approach 1 envelope runs")
        ax.plot(
            Cg,
            np.exp(env["log_coef"]) * Cg ** env["a"],
            ":",
            color="0.3",
            label=f"Approach 1 fit: C^{env['a']:.3f}",
        )
    ax.axvline(t.C.max(), color="0.6", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(compute_label(t))
    ax.set_ylabel("compute-optimal parameters N_opt")
    ax.set_title("Compute-optimal model size")
    ax.legend(loc="upper left")
    ax.grid(True, which="both", alpha=0.25)
    paths = _save(fig, out_dir, "nopt_vs_c")
    plt.close(fig)
    return paths


def residuals(res: dict, out_dir: Path) -> list[str]:
    """log(actual) - log(fitted) versus C and versus N."""
    plt = _plt()
    t, fit = res["table"], res["fit"]
    r = np.log(t.loss) - np.log(joint_loss_vec(fit.vec, t.N, t.D))  # exact where A, B overflow
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, x, lab in (
        (axes[0], t.C, compute_label(t)),
        (axes[1], t.N, "parameters N"),
    ):
        ax.scatter(x, r, s=16, color="C0", edgecolor="k", linewidth=0.3)
        ax.axhline(0.0, color="k", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel(lab)
        ax.grid(True, which="both", alpha=0.25)
    axes[0].set_ylabel("log(actual / fitted loss)")
    fig.suptitle(f"Residuals of the joint law (RMS {np.sqrt(np.mean(r * r)):.4f})")
    paths = _save(fig, out_dir, "residuals")
    plt.close(fig)
    return paths


def reliability(rel: dict, out_dir: Path, name: str, title: str, back: dict | None = None):
    """Nominal vs observed coverage ({level: coverage}); with ``back`` a second panel shows the
    back-test errors against the interval's half-width (keys x, err, xg, hg, level, x_support,
    targets: [(x, half-width, label)] of the report's own predictions)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2 if back else 1, figsize=(10.5 if back else 4.6, 4.2))
    ax = axes[0] if back else axes
    lv = sorted(float(k) for k, v in rel.items() if v is not None)
    ax.plot([0.4, 1], [0.4, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    ax.plot(
        lv,
        [rel[k] for k in sorted(k for k, v in rel.items() if v is not None)],
        "o-",
        label="observed",
    )
    ax.set(xlabel="nominal level", ylabel="observed coverage", xlim=(0.4, 1.0), ylim=(0, 1.02))
    ax.set_title(title)
    ax.legend(loc="lower right")
    if back:
        _distance_panel(axes[1], back)
    paths = _save(fig, out_dir, name)
    plt.close(fig)
    return paths


def _distance_panel(ax, b: dict) -> None:
    """Back-test |log error| and the half-width against the relative distance; past the
    support limit (shaded) the interval is at least the published-sweeps prior's."""
    xg, hg, xs = np.asarray(b["xg"]), 100 * np.asarray(b["hg"]), b["x_support"]
    ax.scatter(b["x"], 100 * np.asarray(b["err"]), s=12, alpha=0.6, label="back-test |log error|")
    ok = xg <= xs
    # the line is drawn at the back-tests' median form spread; each diamond is a printed
    # interval's half-width at that prediction's own form spread, so it need not sit on the line
    ax.plot(xg[ok], hg[ok], color="C3", label=f"{b['level']:.0%} half-width at median form spread")
    if (~ok).any():
        ax.plot(xg[~ok], hg[~ok], color="C3", ls="--", label="half-width, prior (unsupported)")
        ax.axvspan(xs, xg[-1], color="0.9", zorder=0)
        # support is in the final fit's decades: back-tests from origins that fitted fewer
        # decades may sit inside the band, so it says whose support ends here
        note = " past the final fit's\n support: prior only"
        tr = ax.get_xaxis_transform()  # x in data, y in axes units
        ax.text(xs, 0.45, note, transform=tr, va="bottom", fontsize=8, color="0.35")
    for i, (x, h, label) in enumerate(b["targets"]):
        right = x > 0.6 * xg[-1]  # label on the side with room
        lab = "report's predictions (own form spread)" if i == 0 else None
        ax.plot([x], [100 * h], "kD", ms=5, zorder=3, label=lab)
        ax.annotate(label, (x, 100 * h), xytext=(-5 if right else 5, 4), fontsize=8,
                    textcoords="offset points", ha="right" if right else "left")  # fmt: skip
    xlim = (-0.02 * xg[-1], xg[-1])
    ax.set(xlabel="distance / sqrt(decades fitted)", ylabel="percent of loss", xlim=xlim)
    ax.set_ylim(bottom=0)
    ax.set_title("Errors grow with distance; so does the interval")
    place_legend(ax, fontsize=8)


def predictor_reliability(res: dict, out_dir: Path) -> list[str]:
    """The report's reliability figure from the rolling back-tests of the user's runs, with the
    report's predictions (the largest budget, 10x and 100x) placed on the distance axis."""
    pred, level = res["predictor"], res["level"]
    js = pred.to_json(level)
    back = distance_panel_data(res) if pred.rolling.row.size else None
    cc = js["cross_coverage"]
    title = "Rolling back-tests, leave-one-origin-out"
    if cc["n"] and cc.get("prior_only") == cc["n"]:  # too few origins: the prior's intervals
        title = "Rolling back-tests vs the prior's intervals\n(too few origins to calibrate on)"
    return reliability(js["reliability"], out_dir, "interval_reliability", title, back)


def distance_panel_data(res: dict) -> dict:
    """What the distance panel draws: back-test (x, |log error|), the half-width on a grid of x
    (at the back-tests' median form spread), the x where support ends, and the report's
    compute-optimal predictions as (x, half-width, label)."""
    from analysis.laws.intervals import SPAN_POWER, SUPPORT_MARGIN, relative_distance

    pred, level = res["predictor"], res["level"]
    rb, cal = pred.rolling, pred.calibration(level)
    x = relative_distance(rb.dist, rb.span)
    targets = []
    for co, label in zip(res.get("compute_optimal") or [], ("", "10x ", "100x "), strict=False):
        t = co.get("interval_terms") or {}
        if t.get("relative_distance") is not None:
            targets.append((t["relative_distance"], t["total"], f"{label}Cmax"))
    x_max = max([float(x.max()), 1.0] + [t[0] for t in targets]) * 1.08
    xg = np.linspace(0.0, x_max, 200)
    f = np.median(rb.form_spread())
    hg = [cal.terms(xi * cal.span**SPAN_POWER, 0.0, f)["total"] for xi in xg]
    x_support = float(relative_distance(cal.d_max + SUPPORT_MARGIN, cal.span))
    return dict(
        x=x,
        err=np.abs(rb.errors()),
        xg=xg,
        hg=hg,
        level=level,
        x_support=x_support,
        targets=targets,
    )


def all_figures(res: dict, out_dir: Path) -> dict:
    """Draw every figure the results allow; returns {name: [png, svg]}."""
    out = {"loss_vs_compute": loss_vs_compute(res, out_dir)}
    if res.get("compute_optimal") or "compute_optimal" not in res:  # no N_opt on a ladder
        out["nopt_vs_c"] = nopt_vs_c(res, out_dir)
    out["residuals"] = residuals(res, out_dir)
    if res.get("approach2") or res.get("isoflop_minimum"):  # one budget: its parabola
        out["isoflop"] = isoflop(res, out_dir)
    if res.get("predictor") is not None:
        out["interval_reliability"] = predictor_reliability(res, out_dir)
    return out
