"""`scaling compare`: compute multiplier and exponent test on synthetic sweeps of known truth."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from analysis.laws import compare as cmp
from analysis.laws.simulate import CHINCHILLA_TRUTH, isoflop_sweep
from analysis.tables import RunTable
from scaling.cli import main

BUDGETS = (1e18, 1e19, 1e20, 1e21)


def _table(truth: dict, seed: int, name: str, sigma: float = 0.01) -> RunTable:
    rng = np.random.default_rng(seed)
    s = isoflop_sweep(truth, budgets=BUDGETS, n_sizes=6, sigma=sigma, rng=rng)
    n = s["N"].size
    return RunTable(
        [f"{name}{i}" for i in range(n)],
        s["N"],
        s["D"],
        s["C"],
        s["loss"],
        s["budget"],
        [None] * n,
        source=name,
    )


def _planted(multiplier: float) -> dict:
    """L_B(N, D) = L_A(m N, D): B's frontier is A's at m times the compute."""
    t = dict(CHINCHILLA_TRUTH)
    t["A"] = t["A"] / multiplier ** t["alpha"]
    return t


@pytest.fixture(scope="module")
def base_fit():
    return cmp.fit_sweep(_table(CHINCHILLA_TRUTH, 1, "a"), "A", n_resamples=300, seed=0)


def test_frontier_closed_form_matches_numeric_minimum():
    f = cmp.frontier_params(CHINCHILLA_TRUTH)
    C = 1e21
    N = np.geomspace(1e8, 1e11, 20001)
    D = C / (6 * N)
    from analysis.laws.core import joint_loss

    assert cmp.frontier_loss(f, C) == pytest.approx(
        joint_loss(CHINCHILLA_TRUTH, N, D).min(), rel=1e-7
    )
    assert cmp.compute_for_loss(f, cmp.frontier_loss(f, C)) == pytest.approx(C, rel=1e-9)
    assert np.isinf(cmp.compute_for_loss(f, CHINCHILLA_TRUTH["E"] * 0.99))
    # the planted law really is a 2x compute multiplier
    g = cmp.frontier_params(_planted(2.0))
    assert cmp.frontier_loss(g, C) == pytest.approx(cmp.frontier_loss(f, 2 * C), rel=1e-12)


def test_planted_2x_multiplier_is_covered(base_fit):
    b = cmp.fit_sweep(_table(_planted(2.0), 2, "b"), "B", n_resamples=300, seed=1)
    res = cmp.compare(base_fit, b, level=0.9)
    rows = res["multipliers"]
    assert [r["extrapolated"] for r in rows] == [False, False, False, True]
    c_min = min(base_fit.table.C.min(), b.table.C.min())
    for r in rows[:3]:  # default losses: both frontiers reach them inside the runs' compute
        assert c_min * (1 - 1e-9) <= min(r["C_A"], r["C_B"]), r
    for r in rows:
        m = r["multiplier"]
        assert m["lo"] <= 2.0 <= m["hi"], r
        if not r["extrapolated"]:  # inside the data it is clearly not "no difference"
            assert m["lo"] > 1.0 and r["p_B_cheaper"] > 0.95, r
    t = res["test"]
    assert t["d_gamma"]["lo"] <= 0.0 <= t["d_gamma"]["hi"]
    assert t["verdict"].startswith("offset only")
    # reversed, B needs 2x A's compute: at the loss A reaches with 0.9x the largest budget,
    # B's frontier runs past every run, so that multiplier is extrapolated too
    c_max = max(base_fit.table.C.max(), b.table.C.max())
    loss = float(cmp.frontier_loss(cmp.frontier_params(b.fit.params), 0.9 * c_max))
    (row, _) = cmp.compare(b, base_fit, losses=[loss])["multipliers"]
    assert row["C_A"] < c_max < row["C_B"] and row["extrapolated"]


def test_identical_sweeps_cover_1(base_fit):
    table = base_fit.table
    b = cmp.fit_sweep(table, "A again", n_resamples=300, seed=7)  # independent resamples
    res = cmp.compare(base_fit, b, losses=[2.4, 2.2])
    for r in res["multipliers"]:
        m = r["multiplier"]
        assert m["estimate"] == pytest.approx(1.0)
        assert m["lo"] < 1.0 < m["hi"], r
    assert [r["loss"] for r in res["multipliers"][:2]] == [2.4, 2.2]
    assert res["test"]["verdict"].startswith("offset only")


def test_different_exponent_is_detected():
    """A real exponent change (gamma 0.154 -> 0.237) is flagged, and its CI covers the truth.
    The frontier exponent trades off against E, so this needs 0.5% noise to be detected."""
    a = cmp.fit_sweep(_table(CHINCHILLA_TRUTH, 1, "a", 0.005), "A", n_resamples=300, seed=0)
    truth = dict(CHINCHILLA_TRUTH, A=1500.0, B=1500.0, alpha=0.5, beta=0.45)
    b = cmp.fit_sweep(_table(truth, 3, "b", 0.005), "B", n_resamples=300, seed=1)
    res = cmp.compare(a, b)
    d, g = res["test"]["d_gamma"], cmp.frontier_params
    true_d = g(truth)["gamma"] - g(CHINCHILLA_TRUTH)["gamma"]
    assert 0 < d["lo"] <= true_d <= d["hi"], d
    assert res["test"]["verdict"].startswith("exponents differ")
    assert res["test"]["p_equal_gamma"] < 0.1


def _write_csv(path, table: RunTable, named: bool = False) -> None:
    """Columns params, flops, loss (mapped with --map), or, `named`, N, D and loss: `compare`
    needs no --map for those, as `analyze`."""
    cols = (table.N, table.D, table.loss) if named else (table.N, table.C, table.loss)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["N", "D", "loss"] if named else ["params", "flops", "loss"])
        for row in zip(*cols, strict=True):
            w.writerow([repr(float(x)) for x in row])


def test_cli_writes_json_and_figure(tmp_path, capsys):
    ta, tb = _table(CHINCHILLA_TRUTH, 1, "a"), _table(_planted(2.0), 2, "b")
    _write_csv(tmp_path / "rope.csv", ta)
    _write_csv(tmp_path / "learned.csv", tb)
    args = ["compare", str(tmp_path / "rope.csv"), str(tmp_path / "learned.csv")]
    args += ["--map", "N=params", "--map", "C=flops", "--map", "loss=loss"]
    assert main(args + ["--resamples", "100", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "compute multiplier of B = learned over A = rope" in out
    res = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert res["A"]["n_runs"] == 24 and len(res["multipliers"]) == 4
    assert (tmp_path / "out" / "compare.png").stat().st_size > 10_000
    # one clear line for a bad request
    assert main(["compare", str(tmp_path / "rope.csv"), str(tmp_path / "learned.csv")]) == 2
    assert "--map" in capsys.readouterr().err
    assert main(args + ["--losses", "2,x"]) == 2
    assert capsys.readouterr().err.startswith("error: --losses")


def _write_results(root, table: RunTable, tokenizer: str, dataset: str) -> None:
    root.mkdir(parents=True)
    recs = [
        {
            "run_id": rid,
            "status": "done",
            "N_total": float(n),
            "D": float(d),
            "final_val_loss": float(loss),
            "final_val_bpb": float(loss) / np.log(2),
            "tokenizer": tokenizer,
            "config": {"data": {"dataset": dataset}},
        }
        for rid, n, d, loss in zip(table.run_id, table.N, table.D, table.loss, strict=True)
    ]
    (root / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_sweep_dirs_with_other_tokenizers_need_bits_per_byte(tmp_path, capsys):
    _write_results(tmp_path / "a", _table(CHINCHILLA_TRUTH, 1, "a"), "utf8-bytes-v1", "x")
    _write_results(tmp_path / "b", _table(_planted(2.0), 2, "b"), "spm-0123", "y")
    args = ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--resamples", "50"]
    assert main(args) == 2
    assert "different tokenizers" in capsys.readouterr().err
    assert main(args + ["--loss", "bpb", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["loss_unit"] == "bits/byte"
    assert "trained on different data (x vs y)" in out.err
    assert (tmp_path / "b" / "compare_a_vs_b" / "compare.json").is_file()


def test_a_size_ladder_cannot_be_compared_and_says_why(tmp_path, capsys):
    """Two ladders (D = 20 N): the frontier the multiplier reads is not identified; compare
    printed nan multipliers and a verdict from a degenerate E, with exit 0."""
    N = np.geomspace(1e7, 1e9, 6)
    files = []
    for k, shift in (("a", 0.0), ("b", 0.05)):
        f = tmp_path / f"{k}.csv"
        loss = 2.0 + 400 / N**0.3 + shift
        f.write_text(
            "N,D,loss\n" + "".join(f"{n},{20 * n},{y}\n" for n, y in zip(N, loss, strict=True))
        )
        files.append(str(f))
    argv = ["compare", *files, "--map", "N=N", "--map", "D=D", "--map", "loss=loss"]
    assert main([*argv, "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert "size ladder" in err and "not identified" in err and err.count("\n") == 1


def test_a_sweep_whose_n_term_vanishes_cannot_be_compared(tmp_path, capsys):
    """An N x D grid whose losses do not depend on N: the fit sends A/N^alpha below 1e-6 of
    every loss, so the frontier E + K C^-gamma built from alpha (116) means nothing."""
    N, D = (x.ravel() for x in np.meshgrid(np.geomspace(1e7, 1e9, 5), np.geomspace(1e9, 1e11, 4)))
    files = []
    for k in ("a", "b"):
        loss = (1.7 + 410 / D**0.28) * np.exp(np.random.default_rng(8).normal(0, 0.005, N.size))
        f = tmp_path / f"{k}.csv"
        rows = zip(N, D, loss, strict=True)
        f.write_text("N,D,loss\n" + "".join(f"{n},{d},{y}\n" for n, d, y in rows))
        files.append(str(f))
    argv = ["compare", *files, "--map", "N=N", "--map", "D=D", "--map", "loss=loss"]
    assert main([*argv, "--resamples", "10", "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: a: the fitted A term sits at its bound 0") and err.count("\n") == 1
    )


def test_frontier_above_its_own_best_runs_is_flagged(base_fit, shared_data):
    """Porian et al.'s tuned constant-lr sweep: the joint law's frontier passes 3-5% above that
    sweep's best runs at its smallest budgets, so multipliers there read the misfit; a law that
    fits (the synthetic sweep) is not flagged."""
    assert cmp.frontier_vs_runs(base_fit)["n_below"] == 0
    rows = [r for r in csv.DictReader((shared_data / "porian2024_isoflop.csv").open())
            if r["config_id"] == "rw_tuned_short_const_standard_val"
            and float(r["D"]) >= float(r["N"])]  # fmt: skip
    N, D, L = (np.array([float(r[k]) for r in rows]) for k in ("N", "D", "loss"))
    C = np.array([float(r["C"]) for r in rows])
    t = RunTable([f"p{i}" for i in range(N.size)], N, D, C, L, C, [None] * N.size, source="tc")
    tc = cmp.fit_sweep(t, "tuned const", n_resamples=20, seed=0)
    f = cmp.frontier_vs_runs(tc)
    assert f["n_below"] >= 1 and f["worst_below"] > 0.03 and f["worst_at_C"] < 3e16
    res = {"A": {"label": "a", "frontier_vs_runs": cmp.frontier_vs_runs(base_fit)},
           "B": {"label": "tuned const", "frontier_vs_runs": f}}  # fmt: skip
    (line,) = cmp.misfit_lines(res)
    assert "B = tuned const: its fitted frontier lies above its own best run" in line


@pytest.mark.parametrize("c_from", ["column", "6ND"])
def test_budgets_without_a_budget_column_cluster_C_like_analyze(shared_data, c_from):
    """No budget column: runs are grouped into budgets by clustering C (tables.infer_budgets),
    not by exact float equality of 6ND, which made nearly every run its own 'budget' (97 on
    this 12-budget sweep; 27 when D came from a C column)."""
    rows = [r for r in csv.DictReader((shared_data / "porian2024_isoflop.csv").open())
            if r["config_id"] == "rw_tuned_short_const_standard_val"
            and float(r["D"]) >= float(r["N"])]  # fmt: skip
    N, D, L, Ccol = (np.array([float(r[k]) for r in rows]) for k in ("N", "D", "loss", "C"))
    C = Ccol if c_from == "column" else 6.0 * N * D
    nan = np.full(N.size, np.nan)
    t = RunTable([f"p{i}" for i in range(N.size)], N, D, C, L, nan, [None] * N.size, source="t")
    f = cmp.frontier_vs_runs(cmp.fit_sweep(t, "tc", n_resamples=5, seed=0))
    assert (f["n_budgets"], f["n_below"]) == (12, 2)
    assert f["worst_below"] == pytest.approx(0.048, abs=0.001)


def _csv_pair(tmp_path) -> list[str]:
    ta, tb = _table(CHINCHILLA_TRUTH, 1, "a"), _table(_planted(2.0), 2, "b")
    _write_csv(tmp_path / "rope.csv", ta)
    _write_csv(tmp_path / "learned.csv", tb)
    args = ["compare", str(tmp_path / "rope.csv"), str(tmp_path / "learned.csv")]
    return args + ["--map", "N=params", "--map", "C=flops", "--map", "loss=loss"]


@pytest.mark.parametrize(
    ("flag", "needle"),
    [
        ("--extrapolate=nan", "--extrapolate must be a finite factor > 1"),
        ("--extrapolate=inf", "--extrapolate must be a finite factor > 1"),
        ("--extrapolate=0.5", "got 0.5"),
        ("--losses=inf", "--losses 'inf'"),
        ("--seed=-1", "--seed must be a non-negative integer, got -1"),
        # two CSVs: these pick results.jsonl fields, and were ignored silently
        ("--loss=bpb", "--loss bpb: applies to a sweep directory's results.jsonl only"),
        ("--flops-kind=exact", "--flops-kind exact: applies to a sweep directory's"),
    ],
)
def test_bad_numbers_exit_2_before_the_fits(tmp_path, capsys, monkeypatch, flag, needle):
    """--extrapolate nan/inf and --losses inf printed nan multipliers with exit 0; --seed -1 was a
    numpy traceback; --extrapolate 0.5 was refused only after both bootstraps had run."""

    def no_fit(*a, **k):
        raise AssertionError("fitted before the arguments were checked")

    monkeypatch.setattr(cmp, "fit_sweep", no_fit)
    assert main([*_csv_pair(tmp_path), "--resamples", "10", flag]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1, err


def test_a_loss_below_the_irreducible_loss_says_so(tmp_path, capsys):
    """A --losses value at or below both fitted E: C*(L) is infinite, and the line read
    'A needs C = inf, B inf; multiplier nan [nan, nan]'; it now says neither reaches it, and an
    upper bound made of infinite resamples reads inf, not nan."""
    E = CHINCHILLA_TRUTH["E"]
    argv = [*_csv_pair(tmp_path), "--resamples", "20", "--out", str(tmp_path / "o")]
    assert main([*argv, "--losses", f"{E / 2:g},{E + 0.3:g}"]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out, out
    assert f"loss {E / 2:.4g} nats/token: A and B never reach it (at or below A's E = " in out
    assert "ask for a loss above E" in out
    text = (tmp_path / "o" / "compare.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    assert json.loads(text)["multipliers"][0]["C_A"] is None
    s = np.array([1.0, 2.0, np.inf, np.inf, np.nan])
    assert cmp._ci(1.0, s, 0.9)["hi"] == np.inf


def test_a_ci_whose_both_bounds_are_infinite_resamples_reads_inf_not_nan():
    """When nearly every resample never reaches the loss (C = inf), numpy's percentile puts
    inf - inf = nan at the lower bound too: it printed 'multiplier 3 [nan, inf]'."""
    ci = cmp._ci(3.0, np.array([1.0] + [np.inf] * 20), 0.9)
    assert ci["lo"] == np.inf and ci["hi"] == np.inf
    ci = cmp._ci(3.0, np.array([1.0, 2.0, np.inf, np.inf, np.inf]), 0.9)
    assert 1.0 < ci["lo"] < 2.0 and ci["hi"] == np.inf  # a finite bound stays as it was


def test_an_unbounded_multiplier_ci_is_drawn_open_not_as_a_bare_dot(
    base_fit, tmp_path, monkeypatch
):
    """A multiplier whose CI is [0, inf] (some resamples never reach that loss) was drawn as a
    plain dot, which reads as precise; it is now hollow with dashed open ends and a legend
    entry saying the CI is unbounded. A bounded one stays a filled dot with no such entry."""
    import matplotlib.pyplot as plt

    from analysis.laws import compare_plot

    b = cmp.fit_sweep(base_fit.table, "again", n_resamples=50, seed=7)
    res = cmp.compare(base_fit, b, losses=[2.4, 2.2])
    figs = []
    monkeypatch.setattr(plt, "close", figs.append)
    compare_plot.figure(base_fit, b, res, tmp_path / "bounded")
    res["multipliers"][1]["multiplier"].update(lo=0.0, hi=float("inf"))
    compare_plot.figure(base_fit, b, res, tmp_path / "open")
    monkeypatch.undo()
    for fig, n_open in zip(figs, (0, 1), strict=True):
        ax2 = fig.axes[1]
        dots = [ln for ln in ax2.get_lines() if ln.get_marker() == "o" and len(ln.get_xdata())]
        hollow = [ln for ln in dots if ln.get_markerfacecolor() == "none"]
        assert len(dots) == len(res["multipliers"]) == 3 and len(hollow) == n_open
        labels = [t.get_text() for t in ax2.get_legend().get_texts()]
        assert any("CI unbounded" in t for t in labels) == bool(n_open)
    dashed = [ln for ln in figs[1].axes[1].get_lines() if ln.get_linestyle() == "--"]
    assert len([ln for ln in dashed if len(ln.get_xdata()) == 2]) == 2  # down to 0, up to inf
    for fig in figs:
        plt.close(fig)


def test_swapping_a_and_b_mirrors_every_result_and_csv_columns_are_used_by_name(tmp_path, capsys):
    """The bootstrap seeds went by position (A seed, B seed + 1), so swapping the arguments
    resampled each sweep differently: gamma_B - gamma_A read +0.017 [-0.020, +0.047] (p 0.34)
    one way and -0.017 [-0.051, +0.027] (p 0.45) the other. Seeds now follow the sweeps' rows.
    A CSV whose columns are named N, D and loss was refused without --map, unlike `analyze`."""
    ta, tb = _table(CHINCHILLA_TRUTH, 1, "a"), _table(_planted(2.0), 2, "b")
    _write_csv(tmp_path / "a.csv", ta, named=True)
    _write_csv(tmp_path / "b.csv", tb, named=True)
    res = {}
    for x, y in (("a", "b"), ("b", "a")):
        argv = ["compare", str(tmp_path / f"{x}.csv"), str(tmp_path / f"{y}.csv")]
        assert main([*argv, "--resamples", "30", "--out", str(tmp_path / x)]) == 0
        assert "note: a: column(s) N, loss, D used by name" in capsys.readouterr().err
        res[x] = json.loads((tmp_path / x / "compare.json").read_text())["test"]
    ab, ba = res["a"], res["b"]
    for k in ("gamma", "E"):
        d, e = ab[f"d_{k}"], ba[f"d_{k}"]
        assert d["estimate"] == pytest.approx(-e["estimate"])
        assert (d["lo"], d["hi"]) == pytest.approx((-e["hi"], -e["lo"]))
        assert ab[f"p_equal_{k}"] == ba[f"p_equal_{k}"]
        assert ab[f"{k}_A"] == ba[f"{k}_B"]


def test_a_multiplier_estimate_outside_its_ci_is_drawn_not_a_crash():
    """A percentile CI need not contain the full fit's estimate; the error bar was measured from
    the point, so an estimate below the CI's lower end made matplotlib raise ('yerr' must not
    contain negative values) and `compare` died before writing compare.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.laws import compare_plot

    fig, ax = plt.subplots()
    ax.set_yscale("log")
    ax.set_ylim(0.1, 10)
    row = {"multiplier": {"estimate": 1.0, "lo": 1.2, "hi": 3.0}, "C_A": 1e19}
    compare_plot._multiplier_points(ax, [row])
    bar = ax.collections[-1].get_segments()[0]  # the CI bar spans the CI, not the point
    assert (bar[0][1], bar[1][1]) == pytest.approx((1.2, 3.0))
    dots = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    assert [tuple(ln.get_ydata()) for ln in dots] == [(1.0,)]
    plt.close(fig)


def test_a_loss_only_one_sweep_never_reaches_reads_as_one_sweep(base_fit):
    """'B never reach it' for one sweep; the verb now agrees with how many never reach it."""
    hi_E = cmp.fit_sweep(_table(dict(CHINCHILLA_TRUTH, E=2.0), 3, "b"), "B", n_resamples=20, seed=1)
    res = cmp.compare(base_fit, hi_E, losses=[1.85])
    line = cmp.summary_lines(res)[1]
    assert "nats/token: B never reaches it (at or below B's E = " in line, line


def test_the_compute_range_is_the_laws_6nd_not_a_table_c_that_counts_otherwise(base_fit):
    """C*(L) counts C = 6ND, but the range it was checked against (and the default losses, the
    figure's runs and its shaded region) read the table's C, which `--flops-kind exact` or a
    mapped C puts above 6ND: a loss past the runs' 6ND read as inside them."""
    t = base_fit.table
    scaled = RunTable(list(t.run_id), t.N, t.D, 1.3 * t.C, t.loss, t.budget,
                      [None] * len(t), source="exact")  # fmt: skip
    s = cmp.fit_sweep(scaled, "exact", n_resamples=20, seed=0)
    f = cmp.frontier_params(s.fit.params)
    c6 = float(np.max(6.0 * t.N * t.D))
    past = float(cmp.frontier_loss(f, 1.2 * c6))  # beyond every run's 6ND, inside 1.3 x 6ND
    inside = float(cmp.frontier_loss(f, 0.5 * c6))
    res = cmp.compare(s, s, losses=[inside, past])
    assert [r["extrapolated"] for r in res["multipliers"][:2]] == [False, True]
    assert res["A"]["C_range"][1] == pytest.approx(c6)


def test_bad_outputs_and_mixed_units_exit_2_before_the_fits(tmp_path, capsys, monkeypatch):
    """--out naming a file failed only when writing ('cannot use X: File exists'), and sweeps in
    different loss units were refused only by `compare()`, both after the two bootstraps."""

    def no_fit(*a, **k):
        raise AssertionError("fitted before the inputs were checked")

    monkeypatch.setattr(cmp, "fit_sweep", no_fit)
    argv = [*_csv_pair(tmp_path), "--resamples", "10"]
    (tmp_path / "file").write_text("")
    assert main([*argv, "--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"error: --out {tmp_path / 'file'} is a file, not a directory; pass a directory path\n"
    )
    assert main([*argv, "--out", str(tmp_path / "file" / "sub")]) == 2  # was: after the fits
    assert capsys.readouterr().err.startswith(f"error: --out {tmp_path / 'file' / 'sub'}: cannot")
    _write_results(tmp_path / "sw", _table(CHINCHILLA_TRUTH, 1, "a"), "bytes", "python_source")
    res = tmp_path / "sw" / "results.jsonl"
    recs = [json.loads(line) for line in res.read_text().splitlines()]
    res.write_text("".join(json.dumps(dict(r, loss_unit="nats/byte")) + "\n" for r in recs))
    _write_csv(tmp_path / "b.csv", _table(_planted(2.0), 2, "b"), named=True)
    assert main(["compare", str(tmp_path / "sw"), str(tmp_path / "b.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the sweeps report loss in different units (sw: 'nats/byte', ")
    assert "--loss-unit" in err and err.count("\n") == 1
    # a sweep whose runs are in two units was fitted as one, in its last run's unit
    units = ["nats/byte", "nats/token"] * 12
    lines = [json.dumps(dict(r, loss_unit=u)) + "\n" for r, u in zip(recs, units, strict=True)]
    res.write_text("".join(lines))
    assert main(["compare", str(tmp_path / "sw"), str(tmp_path / "b.csv")]) == 2
    err = capsys.readouterr().err
    assert "losses are in different units (nats/byte, nats/token)" in err and "--loss bpb" in err


def test_a_label_with_a_slash_names_one_output_folder(tmp_path, capsys):
    """--labels lr/2,b wrote to B_DIR/compare_lr/2_vs_b/: a folder inside a folder."""
    argv = [*_csv_pair(tmp_path), "--resamples", "10", "--labels", "lr/2,b"]
    assert main(argv) == 0
    assert "compute multiplier of B = b over A = lr/2" in capsys.readouterr().out
    assert (tmp_path / "compare_lr_2_vs_b" / "compare.json").is_file()


def test_noise_free_equal_sweeps_are_not_called_different():
    """Two noise-free sweeps of one law (the fake trainer's, a simulation) refit the same
    parameters in every resample, and the optimiser's 1e-12 differences gave gamma_B - gamma_A
    = -1.3e-12 [-1.3e-12, -1.3e-12], p = 0 and the verdict 'exponents differ'."""
    ta = _table(CHINCHILLA_TRUTH, 1, "a", sigma=0.0)
    tb = RunTable(
        list(ta.run_id),
        ta.N,
        ta.D,
        ta.C,
        ta.loss * (1 + 1e-12),
        ta.budget,
        [None] * len(ta),
        source="b",
    )  # fmt: skip  (the rope/learned fake sweeps)
    a = cmp.fit_sweep(ta, "A", n_resamples=20, seed=0)
    b = cmp.fit_sweep(tb, "B", n_resamples=20, seed=1)
    t = cmp.compare(a, b)["test"]
    assert t["verdict"].startswith("offset only"), t["d_gamma"]
    assert t["p_equal_gamma"] == 1.0 and t["p_equal_E"] == 1.0


def test_a_loss_outside_one_sweeps_own_runs_is_extrapolated(base_fit):
    """'extrapolated' was checked against the union of both sweeps' compute, so a loss B reaches
    only past its own largest run (but inside A's range) read as measured."""
    t = base_fit.table
    small = t.subset(t.budget <= 1e19)  # B: the two smallest budgets of the same law
    b = cmp.fit_sweep(small, "B", n_resamples=20, seed=1)
    fb = cmp.frontier_params(b.fit.params)
    c6 = float(np.max(6.0 * small.N * small.D))
    loss = float(cmp.frontier_loss(fb, 10 * c6))  # B needs 10x its largest run; A has runs there
    res = cmp.compare(base_fit, b, losses=[loss])
    row = res["multipliers"][0]
    assert row["C_A"] < float(np.max(6.0 * t.N * t.D)) and row["extrapolated"]
