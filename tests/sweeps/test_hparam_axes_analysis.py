"""The analysis of hyperparameter axes on hand-built results: the best-batch and best-lr laws need
budgets / sizes spanning a range, diverged variants bound an axis instead of flagging an edge,
grid values are reported as the grid holds them, and loss_vs_lr.png has one colour per shape."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from analysis import hparams
from analysis.hparams import analyze_records, markdown, summary_lines
from analysis.tables import load_results
from scaling.cli import main

SHAPES = {"d16": 2.0e4, "d24": 4.0e4, "d32": 8.0e4}


def _batch_records(budgets: list[float], best_batch) -> list[dict]:
    """A batch axis [8..128] per (budget, shape) cell; the loss is a parabola in log10 batch
    around best_batch(budget). Each shape's own 6ND is off its budget by up to 5%, as planned
    shapes are."""
    recs = []
    for budget in budgets:
        for k, (shape, n) in enumerate(SHAPES.items()):
            c = budget * (1 + 0.05 * (k - 1))
            for b in (8, 16, 32, 64, 128):
                cell = dict(kind="isoflop", budget=budget, shape=shape, seed=0, batch=b,
                            hp_axes=["batch"])  # fmt: skip
                loss = 3.0 + 0.05 * math.log10(b / best_batch(budget)) ** 2
                recs.append(dict(run_id=f"{budget:.3g}/{shape}/b{b}", cell=cell, N_total=n,
                                 D=c / (6 * n), C_6ND=c, final_val_loss=loss))  # fmt: skip
    return recs


def test_one_budget_fits_no_batch_law() -> None:
    """Three shapes at one budget, constant planted best batch: their 6ND span 0.04 decades, which
    once fitted 'best batch ~ C^0.204 [0.0065, 0.689]'. Now the law is not fitted, with why."""
    hp = analyze_records(_batch_records([1e12], lambda c: 32.0))
    law = hp["laws"]["batch_vs_C"]
    assert "exponent" not in law and "1 distinct budgets C" in law["not_fitted"]
    line = next(s for s in summary_lines(hp) if "best batch" in s)
    assert "not fitted" in line and "^0." not in line


def test_batch_law_over_budgets_uses_the_planned_budget() -> None:
    """Budgets 1e11..1e13 with best batch = 32 (C/1e12)^0.3: the exponent comes back exactly,
    though each shape's own 6ND is off its budget (the fit is against the budget)."""
    hp = analyze_records(_batch_records([1e11, 1e12, 1e13], lambda c: 32.0 * (c / 1e12) ** 0.3))
    law = hp["laws"]["batch_vs_C"]
    assert law["exponent"] == pytest.approx(0.3, abs=1e-6) and law["n"] == 9


def test_one_size_fits_no_lr_law() -> None:
    recs = []
    for budget in (1e11, 1e12):
        for lr in (1e-3, 3e-3, 1e-2, 3e-2):
            cell = dict(kind="isoflop", budget=budget, shape="d16", seed=0, lr=lr, hp_axes=["lr"])
            recs.append(dict(run_id=f"{budget}/{lr}", cell=cell, N_total=2e4, D=budget / 1.2e5,
                             final_val_loss=3 + 0.1 * math.log10(lr / 5e-3) ** 2))  # fmt: skip
    law = analyze_records(recs)["laws"]["lr_vs_N"]
    assert "exponent" not in law and "1 distinct N" in law["not_fitted"]


def _lr_line(root: Path | None, diverge_top: bool) -> list[dict]:
    """One cell on lrs 1e-3..3e-2 whose loss falls with lr; the top lr diverged or trained."""
    recs = []
    for lr in (1e-3, 3e-3, 1e-2, 3e-2):
        cell = dict(kind="isoflop", budget=1e11, shape="d16", seed=0, lr=lr, hp_axes=["lr"])
        r = dict(run_id=f"lr{lr}", cell=cell, N_total=2e4, D=1e11 / 1.2e5, C_6ND=1e11,
                 status="done", final_val_loss=3.0 - 0.1 * math.log10(lr))  # fmt: skip
        if lr == 3e-2 and diverge_top:
            r.update(status="diverged", final_val_loss=None, diverged_at_step=5)
        recs.append(r)
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        (root / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs


def test_a_diverged_larger_lr_bounds_the_axis_instead_of_an_edge(tmp_path: Path) -> None:
    """Best lr 1e-2 is the largest that trained and 3e-2 diverged: no 'widen that axis', the
    note says the next larger value diverged. The diverged record reaches the axis analysis
    through load_results (it is no point of the fits)."""
    _lr_line(tmp_path / "sw", diverge_top=True)
    table = load_results(tmp_path / "sw")
    hp = table.hparams
    assert hp["diverged"] == ["lr0.03"] and hp["kept"] == ["lr0.01"] and len(table) == 1
    v = hp["groups"][0]["axes"]["lr"]
    assert not v["edge"] and v["diverged_next"] == "larger" and v["grid_best"] == 0.01
    assert v["losses"][-1] is None and v["best"] == pytest.approx(0.01)
    text = "\n".join(summary_lines(hp))
    assert (
        "EDGE" not in text
        and "widen that axis" not in text
        and "DIVERGED NEXT" in text
        and "next larger" in text
    )
    assert "the next larger value diverged" in markdown(hp)
    control = analyze_records(_lr_line(None, False))  # all trained: a real edge
    assert control["groups"][0]["axes"]["lr"]["edge"] and "widen that axis" in "\n".join(
        summary_lines(control)
    )


def test_loss_vs_lr_draws_a_diverged_variant_as_a_cross(tmp_path, monkeypatch) -> None:
    """The lr that diverged has no loss; the figure still shows it was tried (a cross at the
    top of the panel, at its lr), so the curve's end is not mistaken for the grid's edge."""
    figs = []
    monkeypatch.setattr(plt, "close", figs.append)
    hparams.figure(analyze_records(_lr_line(None, diverge_top=True)), tmp_path)
    (fig,) = figs
    crosses = [ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "x"]
    assert [list(ln.get_xdata()) for ln in crosses] == [[3e-2]]
    assert "diverged" in fig.legends[0].get_title().get_text()
    plt.close(fig)


def test_grid_best_is_the_grids_own_value() -> None:
    recs = []
    for lr in (0.01, 0.02, 0.04, 0.08):
        cell = dict(kind="isoflop", budget=1e11, shape="d16", seed=0, lr=lr, hp_axes=["lr"])
        recs.append(dict(run_id=str(lr), cell=cell, N_total=2e4, D=1e6, C_6ND=1e11,
                         final_val_loss=3 + 0.1 * math.log10(lr / 0.035) ** 2))  # fmt: skip
    hp = analyze_records(recs)
    assert repr(hp["groups"][0]["axes"]["lr"]["grid_best"]) == "0.04"
    row = next(r for r in markdown(hp).splitlines() if r.startswith("| C=1e+11"))
    assert row.split("|")[5].strip() == "0.04"


def test_loss_vs_lr_has_one_colour_per_shape_and_one_legend(tmp_path, monkeypatch) -> None:
    """Panels with different shape sets (d16,d24 | d24,d32): a shape keeps its colour across
    panels and the one legend lists every shape in those colours."""
    recs = []
    for budget, shapes in ((1e11, ("d16", "d24")), (1e12, ("d24", "d32"))):
        for shape in shapes:
            for lr in (1e-3, 3e-3, 1e-2, 3e-2):
                cell = dict(kind="isoflop", budget=budget, shape=shape, seed=0, lr=lr,
                            hp_axes=["lr"])  # fmt: skip
                recs.append(dict(run_id=f"{budget}/{shape}/{lr}", cell=cell,
                                 N_total=SHAPES[shape], D=budget / (6 * SHAPES[shape]),
                                 final_val_loss=3 + 0.1 * math.log10(lr / 5e-3) ** 2))  # fmt: skip
    figs = []
    monkeypatch.setattr(plt, "close", figs.append)
    (path,) = hparams.figure(analyze_records(recs), tmp_path)
    assert Path(path).stat().st_size > 5_000
    (fig,) = figs
    colour_of: dict[str, set] = {}
    for ax, shapes in zip(fig.axes, (("d16", "d24"), ("d24", "d32")), strict=True):
        curves = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
        for shape, ln in zip(shapes, curves, strict=True):
            colour_of.setdefault(shape, set()).add(ln.get_color())
    assert all(len(c) == 1 for c in colour_of.values()) and len(set.union(*colour_of.values())) == 3
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["d16", "d24", "d32"]
    for shape, handle in zip(labels, legend.legend_handles, strict=True):
        assert {handle.get_color()} == colour_of[shape]
    assert not any(ax.get_legend() for ax in fig.axes)
    plt.close(fig)


def test_empty_lr_factors_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text(
        'name = "g"\nkind = "nxd"\n[nxd]\ntokens = [8192]\n[shapes]\nrule = "list"\n'
        "list = [{d_model = 16, n_layers = 1, n_heads = 2}]\n"
    )
    assert main(["sweep", "plan", str(grid), "--set", "hparams.lr_factors=[]"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: grid [hparams] lr_factors = []: give a non-empty list")


def test_the_parabola_does_not_reach_across_a_diverged_lr() -> None:
    """lr 3e-3 diverged between 1e-3 and 1e-2, which trained (1e-2 best): the parabola through
    1e-3, 1e-2 and 3e-2 put the best lr at 4.4e-3, next to the lr that diverged. A diverged value
    bounds the axis, so the fit stops at it: the best is the grid's 1e-2, bounded below."""
    recs = []
    for lr, loss in ((1e-3, 3.1), (3e-3, None), (1e-2, 3.0), (3e-2, 3.2)):
        cell = dict(kind="isoflop", budget=1e11, shape="d16", seed=0, lr=lr, hp_axes=["lr"])
        r = dict(run_id=f"lr{lr}", cell=cell, N_total=2e4, D=1e11 / 1.2e5, C_6ND=1e11,
                 status="done" if loss else "diverged", final_val_loss=loss)  # fmt: skip
        recs.append(r)
    v = analyze_records(recs)["groups"][0]["axes"]["lr"]
    assert v["best"] == pytest.approx(1e-2) and v["grid_best"] == 1e-2
    assert v["diverged_next"] == "smaller" and not v["edge"] and v["n_points"] == 2
    p = hparams.parabola_optimum([0.0, 1.0, 2.0, 3.0], [1.0, float("nan"), 0.0, 0.5])
    assert p["x_best"] == 2.0 and p["a"] is None  # two points past the gap: no parabola


def test_an_axis_with_one_loss_for_every_lr_is_flat_not_an_edge() -> None:
    """Every lr gave exactly the same loss (the axis never reached the run): no best lr, no
    'widen that axis' (the grid's first value was reported as an EDGE), and the cell stays out
    of the lr law; the other shapes still fit it."""
    recs = []
    for shape, n in {**SHAPES, "d48": 1.6e5}.items():
        for lr in (1e-3, 3e-3, 1e-2, 3e-2, 1e-1):
            cell = dict(kind="isoflop", budget=1e12, shape=shape, seed=0, lr=lr, hp_axes=["lr"])
            best = 1e-2 * (n / 2e4) ** -0.5
            loss = 3.25 if shape == "d48" else 3 + 0.1 * math.log10(lr / best) ** 2
            recs.append(dict(run_id=f"{shape}/{lr}", cell=cell, N_total=n, D=1e12 / (6 * n),
                             C_6ND=1e12, final_val_loss=loss))  # fmt: skip
    hp = analyze_records(recs)
    flat = next(g for g in hp["groups"] if g["cell"]["shape"] == "d48")["axes"]["lr"]
    assert not flat["edge"] and flat.get("flat") and "does not vary" in flat["reason"]
    assert hp["edge_cells"] == [] and hp["flat_cells"] == ["C=1e+12/d48/seed0 (lr)"]
    law = hp["laws"]["lr_vs_N"]
    assert law["n"] == 3 and law["flat_left_out"] == 1 and law["edge_left_out"] == 0
    assert law["exponent"] == pytest.approx(-0.5, abs=0.05)
    text = "\n".join(summary_lines(hp))
    assert "widen that axis" not in text and "FLAT: the loss does not vary" in text
    assert "1 flat cells left out" in text
    row = next(r for r in markdown(hp).splitlines() if r.startswith("| C=1e+12/d48"))
    assert row.split("|")[3].strip() == "n/a" and "does not vary" in row


def test_an_axis_flat_only_up_to_a_divergence_is_not_flat() -> None:
    """FLAT was judged on the best value's finite run alone: 3.0, 3.0, diverged, 3.5 was 'every
    value gave the same loss', and a diverged neighbour (the axis plainly reaches the run) was
    hidden behind FLAT instead of reported as DIVERGED NEXT."""
    x = [-4.0, -3.5, -3.0, -2.5]
    varies = hparams.parabola_optimum(x, [3.0, 3.0, math.nan, 3.5])
    assert not varies["flat"] and "does not vary" not in varies["reason"]
    bounded = hparams.parabola_optimum(x[:3], [math.nan, 3.0, 3.0])
    assert not bounded["flat"] and bounded["diverged_next"] == "smaller"
    assert hparams.parabola_optimum(x[:2], [3.0, 3.0])["flat"]  # every value trained, one loss


def test_warmup_edge_goes_by_the_resolved_warmup_steps() -> None:
    """Warmup rules mix steps, fractions and "params": at 5000 steps 0.05 is 250 steps, so the
    best of ["params" (20 steps), 100, 200, 0.05] is 200, inside the grid; it was flagged EDGE
    (200 is the largest *number*). Records without warmup_steps keep the values' own order."""

    def rec(rule, steps, loss: float) -> dict:
        cell = dict(kind="isoflop", budget=1e12, shape="d16", seed=0, warmup=rule,
                    hp_axes=["warmup"])  # fmt: skip
        r = dict(run_id=f"w{rule}", cell=cell, final_val_loss=loss, N_total=1e4, D=1e6)
        return r if steps is None else r | {"warmup_steps": steps}

    losses = {"params": 3.3, 100: 3.2, 200: 3.1, 0.05: 3.15}
    steps = {"params": 20, 100: 100, 200: 200, 0.05: 250}
    hp = analyze_records([rec(w, steps[w], loss) for w, loss in losses.items()])
    v = hp["groups"][0]["axes"]["warmup"]
    assert (v["best"], v["edge"], hp["edge_cells"]) == (200, False, [])
    steps[0.05] = 10  # now 200 steps is the longest warmup: an edge
    hp = analyze_records([rec(w, steps[w], loss) for w, loss in losses.items()])
    assert hp["groups"][0]["axes"]["warmup"]["edge"] is True
    hp = analyze_records([rec(w, None, loss) for w, loss in losses.items()])
    assert hp["groups"][0]["axes"]["warmup"]["edge"] is True  # no steps recorded: as before


def test_t_quantile_is_exact() -> None:
    """The CI's Student-t quantile was a 400,000-draw Monte Carlo: 6.27 at 1 dof (exact 6.314)."""
    assert hparams.t_quantile(0.95, 1) == pytest.approx(6.313752, rel=1e-6)
    assert hparams.t_quantile(0.95, 10) == pytest.approx(1.812461, rel=1e-6)
