"""Hyperparameter axes of sweep grids ([hparams] lr / lr_factors / batch_size / warmup lists) and
their analysis: best value per cell by a parabola in log space, CIs, edge flags, power laws, and
`scaling analyze` keeping only the best variant of each cell."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from analysis.hparams import (
    analyze_records,
    best_variants,
    parabola_optimum,
    power_law,
    summary_lines,
)
from scaling.cli import main
from scaling.errors import UserError
from sweeps.fake import fake_loss
from sweeps.grid import plan_grid
from sweeps.hparams import Point, parse_hparams

GRID = {
    "name": "ax",
    "kind": "isoflop",
    "seeds": [0, 1],
    "isoflop": {"budgets": [7.5e10, 1.5e11], "center_tokens_per_param": 100, "window": 5},
    "shapes": {"rule": "aspect", "aspect": 1000, "min_layers": 2, "head_dim": 4, "count": 3},
    "hparams": {"lr": 1e-2, "lr_exp": 0.0, "lr_max": 0.0, "batch_size": 16,
                "min_batch_size": 16, "min_steps": 1},
    "base": {"model": {"seq_len": 64}},
}  # fmt: skip


def _grid(**hparams) -> dict:
    g = json.loads(json.dumps(GRID))
    g["hparams"].update(hparams)
    return g


def _key(c) -> tuple:
    return (c.cell["budget"], c.cell["shape"], c.cell["seed"])


def test_lr_axis_multiplies_every_cell_once_per_lr() -> None:
    base = plan_grid(_grid())
    lrs = [3e-3, 1e-2, 3e-2]
    plan = plan_grid(_grid(lr=lrs))
    assert len(plan.cells) == 3 * len(base.cells) == 36
    assert len({c.run_id for c in plan.cells}) == 36
    by_cell = {}
    for c in plan.cells:
        by_cell.setdefault(_key(c), []).append(c)
        assert c.lr == c.config.train.lr == c.cell["lr"] and c.cell["hp_axes"] == ["lr"]
        assert f"lr={c.lr:.4g}" in c.label and f"lr={c.lr:.4g}" in c.config.name
    assert set(by_cell) == {_key(c) for c in base.cells}
    for cells in by_cell.values():
        assert sorted(c.lr for c in cells) == lrs
        assert len({(c.steps, c.batch, c.tokens) for c in cells}) == 1  # only the lr moves
    assert all("hp_axes" not in c.cell and "lr=" not in c.label for c in base.cells)


def test_lr_factors_batch_and_warmup_axes_combine() -> None:
    plan = plan_grid(
        _grid(lr_factors=[0.5, 2.0], lr_exp=1.0, lr_width=64, batch_size=[8, 16],
              warmup=["params", 0.05])
    )  # fmt: skip
    assert len(plan.cells) == 12 * 2 * 2 * 2
    counts = Counter(_key(c) for c in plan.cells)
    assert set(counts.values()) == {8}
    for c in plan.cells:
        assert c.cell["hp_axes"] == ["batch", "lr", "warmup"]
        rule = 1e-2 * 64 / c.cell["d_model"]
        assert c.lr == pytest.approx(rule * c.cell["lr_factor"], rel=1e-12)
        assert c.batch == c.cell["batch"] == c.config.train.batch_size
        assert abs(c.c_exact / c.cell["budget"] - 1) <= 0.01  # budgets still matched
        if c.cell["warmup"] == 0.05:
            assert c.warmup == round(0.05 * c.steps)


@pytest.mark.parametrize(
    "hp,match",
    [
        (dict(lr=[]), r"lr = \[\]: give a non-empty list"),
        (dict(lr=[1e-3, -1e-3]), "not a positive number"),
        (dict(lr=[1e-3, 1e-3]), "repeated"),
        (dict(lr=[1e-3], lr_factors=[1.0]), "either lr"),
        (dict(batch_size=[8.5]), "positive integer"),
        # an axis batch skipped the check the scalar batch gets (the device count's multiple)
        (
            dict(batch_size=[8, 12], batch_multiple=8),
            r"\[8, 12\]: 12 is not a multiple of "
            "batch_multiple = 8; use 16 or lower batch_multiple",
        ),  # fmt: skip
        (dict(warmup=[]), "warmup = \\[\\]"),
    ],
)
def test_bad_axes_are_user_errors(hp, match) -> None:
    with pytest.raises(UserError, match=match):
        plan_grid(_grid(**hp))


def test_empty_lr_list_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text(
        'name = "g"\nkind = "nxd"\n[nxd]\ntokens = [8192]\n[shapes]\nrule = "list"\n'
        "list = [{d_model = 16, n_layers = 1, n_heads = 2}]\n[hparams]\nlr = []\n"
    )
    assert main(["sweep", "plan", str(grid)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: grid [hparams] lr = []")


def test_parabola_recovers_a_planted_optimum() -> None:
    """Planted best lr 0.012 on a 9-point grid with noise: the vertex lands within 5% and the
    90% CI covers the truth in 80-97% of 200 noise draws (the window choice costs a little)."""
    x = np.log10(np.geomspace(1e-3, 1e-1, 9))
    truth = math.log10(0.012)
    covered, best = 0, []
    for seed in range(200):
        y = 2.0 + 0.3 * (x - truth) ** 2 + np.random.default_rng(seed).normal(0, 0.002, x.size)
        fit = parabola_optimum(x, y)
        assert not fit["edge"] and fit["n_points"] == 5
        covered += fit["lo"] <= truth <= fit["hi"]
        best.append(10 ** fit["x_best"])
    assert np.median(np.abs(np.array(best) / 0.012 - 1)) < 0.02
    assert 0.8 <= covered / 200 <= 0.97


def test_optimum_on_the_grid_edge_is_flagged() -> None:
    x = np.log10(np.geomspace(1e-3, 1e-2, 5))
    y = 2.0 + 0.3 * (x - math.log10(0.05)) ** 2  # best lr far above the grid
    fit = parabola_optimum(x, y)
    assert fit["edge"] and "edge" in fit["reason"]
    inside = parabola_optimum(x, 2.0 + 0.3 * (x - math.log10(3e-3)) ** 2)
    assert not inside["edge"] and 10 ** inside["x_best"] == pytest.approx(3e-3, rel=1e-6)
    assert fit["x_best"] == x[-1] and fit["lo"] is None  # not the vertex, far past the grid
    # loss straight in log lr: a curvature of +-1e-17 from rounding put the vertex at 1e300
    # (10**x_best overflowed); the best value is the grid's edge, whatever the rounding
    line = parabola_optimum(x, 3.0 - 0.1 * x)
    assert line["edge"] and line["x_best"] == x[-1]


def _lr_star(n: float) -> float:
    return 0.05 * (n / 1e4) ** -0.5


def _synthetic_sweep(root: Path, lrs: list[float]) -> list[dict]:
    """results.jsonl of an lr grid with a planted best lr(N) = 0.05 (N/1e4)^-0.5."""
    plan = plan_grid(_grid(lr=lrs))
    recs = []
    for c in plan.cells:
        s = c.summary()
        pen = 0.08 * math.log10(c.lr / _lr_star(c.n_total)) ** 2
        loss = fake_loss(c.n_total, c.tokens, c.cell["seed"]) + pen
        recs.append(dict(s, N_total=c.n_total, N_nonembed=c.n_nonembed, C_6ND=c.c_6nd,
                         final_val_loss=loss, status="done"))  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    (root / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs


def test_best_lr_per_cell_and_lr_vs_n_power_law() -> None:
    lrs = list(np.geomspace(3e-3, 1.0, 11))
    recs = []
    plan = plan_grid(_grid(lr=lrs))
    for c in plan.cells:
        loss = 3.0 + 0.08 * math.log10(c.lr / _lr_star(c.n_total)) ** 2
        recs.append(dict(run_id=c.run_id, cell=c.cell, final_val_loss=loss, N_total=c.n_total,
                         D=c.tokens, C_6ND=c.c_6nd))  # fmt: skip
    hp = analyze_records(recs)
    assert len(hp["groups"]) == 12 and len(hp["kept"]) == 12 and len(hp["dropped"]) == 120
    for g in hp["groups"]:
        assert g["axes"]["lr"]["best"] == pytest.approx(_lr_star(g["N"]), rel=1e-6)
        assert not g["axes"]["lr"]["edge"]
    law = hp["laws"]["lr_vs_N"]
    assert law["exponent"] == pytest.approx(-0.5, abs=1e-6) and law["edge_left_out"] == 0
    # a grid that stops below the larger models' best lr: their edge best is only a bound and
    # stays out of the law (it fed the law as if it were the optimum)
    narrow = [r for r in recs if r["cell"]["lr"] >= lrs[4]]
    hp = analyze_records(narrow)
    edge = sum(g["axes"]["lr"]["edge"] for g in hp["groups"])
    law = hp["laws"]["lr_vs_N"]
    assert (
        edge > 0
        and law["edge_left_out"] == edge
        and "edge cells left out" in "\n".join(summary_lines(hp))
    )


def test_lr_law_ci_covers_as_promised_and_needs_three_sizes() -> None:
    """Best lr ~ N^e from 3 sizes with noise on the best lrs: the 90% CI covers the true
    exponent about 90% of the time (a bootstrap over the points covered 64%); 2 sizes: no CI."""
    N = np.array([1e4, 1e5, 1e6])
    hits = 0
    for seed in range(300):
        noise = np.random.default_rng(seed).normal(0, 0.1, N.size)
        law = power_law(N, 0.05 * (N / 1e4) ** -0.5 * np.exp(noise))
        hits += law["lo"] <= -0.5 <= law["hi"]
    assert 0.85 <= hits / 300 <= 0.95
    two = power_law(N[:2], np.array([1e-2, 3e-3]))
    assert two["lo"] is None and two["hi"] is None and two["n"] == 2


def test_analyze_uses_the_best_lr_run_as_each_cells_point(tmp_path: Path, capsys) -> None:
    lrs = [3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
    recs = _synthetic_sweep(tmp_path / "sw", lrs)
    rc = main(["analyze", str(tmp_path / "sw"), "--resamples", "20", "--holdout", "none"])
    out = capsys.readouterr().out
    assert rc == 0 and "hyperparameter axes: 12 cells" in out
    fits = json.loads((tmp_path / "sw" / "report" / "fits.json").read_text())
    assert fits["n_runs"] == 12  # one point per (budget, shape, seed), not one per lr
    kept = set(fits["hparams"]["kept"])
    for g in fits["hparams"]["groups"]:
        same = [r for r in recs if r["cell"]["shape"] == g["cell"]["shape"]
                and r["cell"]["budget"] == g["cell"]["budget"]
                and r["cell"]["seed"] == g["cell"]["seed"]]  # fmt: skip
        assert g["best_run"] == min(same, key=lambda r: r["final_val_loss"])["run_id"] in kept
    assert (tmp_path / "sw" / "report" / "loss_vs_lr.png").stat().st_size > 10_000
    assert "## Hyperparameter axes" in (tmp_path / "sw" / "report" / "report.md").read_text()


def test_best_variants_is_the_fits_selection() -> None:
    """best_variants (used by `scaling emergence`) keeps exactly the runs analyze_records keeps;
    runs without axes pass through; a variant with a NaN loss never wins."""
    plan = plan_grid(_grid(lr=[3e-3, 3e-2, 3e-1]))
    recs = [dict(run_id=c.run_id, cell=c.cell, N_total=c.n_total, D=c.tokens, C_6ND=c.c_6nd,
                 final_val_loss=3.0 + 0.08 * math.log10(c.lr / _lr_star(c.n_total)) ** 2)
            for c in plan.cells]  # fmt: skip
    plain = dict(run_id="plain", cell={"kind": "isoflop"}, final_val_loss=9.0)
    kept, n_dropped = best_variants([*recs, plain])
    hp = analyze_records(recs)
    assert sorted(r["run_id"] for r in kept) == sorted([*hp["kept"], "plain"])
    assert n_dropped == len(hp["dropped"]) == 2 * len(kept) - 2
    best = min(recs[:3], key=lambda r: r["final_val_loss"])
    recs[recs.index(best)] = dict(best, final_val_loss=float("nan"))
    assert best["run_id"] not in {r["run_id"] for r in best_variants(recs)[0]}


def test_grid_without_axes_has_one_point() -> None:
    assert parse_hparams({})[1] == (Point(),)
    assert parse_hparams({"lr": 1e-2, "warmup": 0.05})[1] == (Point(),)
