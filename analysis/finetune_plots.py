"""Fine-tuning figures: loss vs D_f per model size (one panel per method), and the methods
compared across N. Drawn from `analysis.laws.finetune.analyze`'s output (PNG + SVG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.laws.core import mult_loss
from analysis.plots import _plt, _save


def _params(group: dict) -> dict | None:
    fit = group["fits"].get("N")
    return None if fit is None else fit["fit"]["params"]


def loss_vs_df(res: dict, task: str, out_dir: Path) -> list[str]:
    """Fine-tuned test loss against D_f, one colour per N, fitted law dashed; panel per method."""
    plt = _plt()
    from matplotlib.colors import LogNorm

    groups = [g for g in res["groups"] if g["task"] == task]
    fig, axes = plt.subplots(
        1, len(groups), figsize=(4.2 * len(groups) + 1, 4.2), sharey=True, squeeze=False
    )
    all_n = [r["n_params"] for g in groups for r in g["rows"]]
    norm = LogNorm(min(all_n), max(all_n) * 1.0001)
    cmap = plt.get_cmap("viridis")
    for ax, g in zip(axes[0], groups, strict=True):
        p = _params(g)
        for n in sorted({r["n_params"] for r in g["rows"]}):
            rows = sorted((r for r in g["rows"] if r["n_params"] == n), key=lambda r: r["d_f"])
            d = np.array([r["d_f"] for r in rows], float)
            c = cmap(norm(n))
            ax.plot(d, [r["eval_loss"] for r in rows], "o", color=c, mec="k", mew=0.3)
            ax.axhline(rows[0]["pre_eval_loss"], color=c, lw=0.8, ls=":")
            if p is not None:
                dg = np.geomspace(d.min(), d.max() * 4, 100)
                ax.plot(dg, mult_loss(p, n, dg), "--", color=c, lw=1.2)
        ax.set_xscale("log")
        ax.set_title(g["method"])
        ax.set_xlabel("fine-tuning examples D_f")
        ax.grid(True, which="both", alpha=0.25)
    axes[0][0].set_ylabel(f"{task}: test loss (nats / target token)")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=list(axes[0]), label="parameters N")
    fig.suptitle("Fine-tuned loss vs D_f (dots: runs, dashed: fitted law, dotted: before)")
    paths = _save(fig, out_dir, f"finetune_{task}_loss_vs_df")
    plt.close(fig)
    return paths


def methods_vs_n(res: dict, task: str, out_dir: Path) -> list[str]:
    """Full vs LoRA vs QLoRA: loss against N at the smallest and largest D_f, with the laws."""
    plt = _plt()
    groups = [g for g in res["groups"] if g["task"] == task]
    d_all = sorted({r["d_f"] for g in groups for r in g["rows"]})
    fig, ax = plt.subplots(figsize=(7, 4.6))
    for i, g in enumerate(groups):
        p = _params(g)
        for d, ls in ((d_all[0], ":"), (d_all[-1], "-")):
            rows = sorted((r for r in g["rows"] if r["d_f"] == d), key=lambda r: r["n_params"])
            if not rows:
                continue
            n = np.array([r["n_params"] for r in rows], float)
            ax.plot(n, [r["eval_loss"] for r in rows], "o", color=f"C{i}", mec="k", mew=0.3)
            if p is not None:
                ng = np.geomspace(n.min(), n.max() * 4, 100)
                ax.plot(ng, mult_loss(p, ng, d), ls, color=f"C{i}", label=f"{g['method']}, D_f={d}")
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel(f"{task}: test loss (nats / target token)")
    ax.set_title("Methods across scale (lines: fitted laws)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8)
    paths = _save(fig, out_dir, f"finetune_{task}_methods")
    plt.close(fig)
    return paths


def all_figures(res: dict, out_dir: Path) -> dict:
    out = {}
    for task in sorted({g["task"] for g in res["groups"]}):
        out[f"fine-tuning {task}: loss vs D_f"] = loss_vs_df(res, task, out_dir)
        out[f"fine-tuning {task}: methods across N"] = methods_vs_n(res, task, out_dir)
    return out
