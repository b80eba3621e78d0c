"""Axis and legend layout shared by the figures: log-axis tick labels that do not collide, and a
legend placed where it covers no data. Works on matplotlib objects it is handed; imports
matplotlib only inside its functions."""

from __future__ import annotations

import numpy as np

# the corners first, then the edges' middles: where a legend usually has room
LEGEND_LOCS = ("upper right", "lower left", "upper left", "lower right", "center left",
               "center right", "upper center", "lower center")  # fmt: skip
SUBS_125, SUBS_FINE = (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0, 7.0)


def _sci(x: float, _pos: int | None = None) -> str:
    exp = int(np.floor(np.log10(x) + 1e-9))
    mant = round(x / 10**exp)
    return f"$10^{{{exp}}}$" if mant == 1 else f"${mant}\\times10^{{{exp}}}$"


def narrow_ticks(lo: float, hi: float, nbins: int = 3) -> tuple[list[float], list[str]]:
    """Ticks for a log axis too narrow for even one 1-2-3-5-7 tick pair (a few percent wide, as
    the runs of one compute budget): at most nbins + 1 evenly spaced ticks inside [lo, hi],
    labelled m x 10^e with one exponent and as many decimals as the spacing needs, so every
    label is distinct and short."""
    from matplotlib.ticker import MaxNLocator

    exp = int(np.floor(np.log10(hi) + 1e-9))
    scale = 10.0**exp
    locs = MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10]).tick_values(lo / scale, hi / scale)
    mants = [round(float(m), 9) for m in locs if lo / scale - 1e-12 <= m <= hi / scale + 1e-12]
    dec = next(d for d in range(10) if all(abs(round(m, d) - m) < 1e-9 for m in mants))
    tail = "" if exp == 0 else f"\\times10^{{{exp}}}"
    return [m * scale for m in mants], [f"${m:.{dec}f}{tail}$" for m in mants]


def _n_log_ticks(lo: float, hi: float, subs: tuple[float, ...]) -> int:
    """How many of the ticks subs x 10^e lie in [lo, hi] (LogLocator itself falls back to
    linear ticks when there are fewer than two, so it cannot be asked)."""
    decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
    return sum(lo <= s * 10.0**e <= hi for e in decades for s in subs)


def tidy_log_axes(fig) -> None:
    """Matplotlib labels minor log ticks on axes spanning under ~2 decades, and the labels
    collide. Label only 1-2-5 ticks there (1-2-3-5-7 under a factor 4, never the minor ones),
    and on an axis where fewer than two of those fall, a few evenly spaced `narrow_ticks`."""
    from matplotlib.ticker import (
        FixedFormatter,
        FixedLocator,
        FuncFormatter,
        LogLocator,
        NullFormatter,
    )

    for ax in fig.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale != "log":
                continue
            lo, hi = sorted(axis.get_view_interval())
            if lo <= 0 or hi / lo > 10**2:  # matplotlib labelled minor ticks at 1.57 decades
                continue
            subs = SUBS_125 if hi / lo > 4 else SUBS_FINE
            if _n_log_ticks(lo, hi, subs) >= 2:
                axis.set_major_locator(LogLocator(base=10, subs=subs))
                axis.set_major_formatter(FuncFormatter(_sci))
            else:
                ticks, labels = narrow_ticks(lo, hi)
                axis.set_major_locator(FixedLocator(ticks))
                axis.set_major_formatter(FixedFormatter(labels))
            axis.set_minor_formatter(NullFormatter())


def _dense(xy: np.ndarray, step: float = 4.0) -> np.ndarray:
    """A polyline's display vertices with points added every `step` pixels along it, so a legend
    cannot sit on a segment between two vertices unnoticed."""
    xy = xy[np.isfinite(xy).all(axis=1)]
    out = [xy]
    for a, b in zip(xy[:-1], xy[1:], strict=True):
        n = int(np.hypot(*(b - a)) // step)
        if n > 1:
            out.append(a + (b - a) * np.linspace(0, 1, n)[:, None])
    return np.concatenate(out) if len(xy) else np.empty((0, 2))


def data_display_points(ax) -> np.ndarray:
    """Display coordinates of what the axes draw as data: markers (scatter, errorbar), the
    vertices of every line and error bar (densified), and the outline of filled bands. Lines
    placed in axes units (axvline, axhline: references across the whole axes) do not count."""
    from matplotlib.collections import PathCollection

    pts = [np.empty((0, 2))]
    for line in ax.lines:
        if line.get_transform() != ax.transData:
            continue
        pts.append(_dense(line.get_transform().transform(line.get_xydata())))
    for coll in ax.collections:
        if isinstance(coll, PathCollection) and len(coll.get_offsets()):
            pts.append(coll.get_offset_transform().transform(coll.get_offsets()))
            continue
        for path in coll.get_paths():
            pts.append(_dense(coll.get_transform().transform(path.vertices)))
    return np.concatenate(pts)


def place_legend(ax, pad: float = 4.0, **kw):
    """The legend in the first of LEGEND_LOCS where it covers no data point or line (with `pad`
    pixels to spare); below the axes, under the axis label, where every place inside covers some.
    Call it when the axes' limits are final."""
    ax.figure.draw_without_rendering()  # autoscaled limits and tick labels settle first
    renderer = ax.figure.canvas.get_renderer()
    pts = data_display_points(ax)
    for loc in LEGEND_LOCS:
        leg = ax.legend(loc=loc, **kw)
        if not leg.get_window_extent(renderer).padded(pad).count_contains(pts):
            return leg
        leg.remove()
    below = ax.get_tightbbox(renderer).y0  # under the tick labels and the axis label
    y = ax.transAxes.inverted().transform((0.0, below - pad))[1]
    return ax.legend(loc="upper center", bbox_to_anchor=(0.5, y), **{"ncol": 2, **kw})


def compute_label(table) -> str:
    """The x label of an axis of the table's C: "C = 6ND" only when it is (a mapped C or
    `--flops-kind exact` counts otherwise, and the label said 6ND under those runs)."""
    from analysis.cli_source import c_ratio

    r = c_ratio(table)
    if abs(r - 1.0) <= 0.01:
        return "training compute C = 6ND (FLOPs)"
    return f"training compute C (FLOPs as given, {r:.3g}x 6ND; joint law at 6ND)"
