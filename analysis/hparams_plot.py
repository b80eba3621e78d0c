"""The figure of `analysis.hparams`: loss against an hyperparameter axis, per cell."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def loss_vs_axis(hp: dict[str, Any], out_dir: Path, axis: str = "lr") -> list[str]:
    """loss vs `axis` (log scale), one line per width (shape), one panel per budget/tokens;
    the fitted optimum marked, diverged variants as crosses along the top edge. Returns [png]
    or [] when no cell has that axis."""
    groups = [g for g in hp["groups"] if axis in g["axes"]]
    if not groups:
        return []
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.lines import Line2D  # noqa: PLC0415

    from scaling.fileio import save_figure  # noqa: PLC0415

    def panel_of(g: dict) -> tuple[float, str]:
        c = g["cell"]
        if "budget" in c:
            return float(c["budget"]), f"C={c['budget']:.3g}"
        if "tokens" in c:
            return float(c["tokens"]), f"D={c['tokens']:.3g}"
        return 0.0, f"{c.get('kind', 'all')}"

    panels = sorted({panel_of(g) for g in groups})
    shapes = sorted({str(g["cell"].get("shape")): g["N"] for g in groups}.items(),
                    key=lambda kv: kv[1])  # fmt: skip
    colour = {s: f"C{i % 10}" for i, (s, _) in enumerate(shapes)}  # one colour per shape
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for g in sorted((g for g in groups if panel_of(g) == panel), key=lambda g: g["N"]):
            v, c = g["axes"][axis], colour[str(g["cell"].get("shape"))]
            pts = sorted(
                (x, y) for x, y in zip(v["values"], v["losses"], strict=True) if y is not None
            )
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", ms=3, color=c)
            if gone := [x for x, y in zip(v["values"], v["losses"], strict=True) if y is None]:
                ax.plot(gone, [0.96] * len(gone), "x", ms=6, mew=1.5, color=c, clip_on=False,
                        transform=ax.get_xaxis_transform())  # fmt: skip
            if not v.get("flat"):  # a flat axis has no best value to mark
                ax.plot([v["best"]], [min(ys)], marker="*", ms=11, color=c,
                        markeredgecolor="k" if not v["edge"] else "r")  # fmt: skip
        ax.set(xscale="log", xlabel=f"peak {axis}" if axis == "lr" else axis, title=panel[1])
    axes[0][0].set_ylabel("final validation loss")
    handles = [Line2D([], [], color=colour[s], marker="o", ms=3, label=s) for s, _ in shapes]
    fig.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5),
               title="shape (star: fitted best; red edge: on grid edge;\n"
                     "x at the top: diverged, no loss)")  # fmt: skip
    path = Path(out_dir) / f"loss_vs_{axis}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=120, bbox_inches="tight")  # atomic: no truncated figure
    plt.close(fig)
    return [str(path)]
