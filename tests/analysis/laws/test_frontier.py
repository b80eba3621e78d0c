"""Approaches 1 and 2 (analysis/laws/frontier.py): the curves they read and the compute they
regress on."""

import numpy as np

from analysis.laws.frontier import approach2, read_curve
from analysis.tables import RunTable


def test_a_damaged_metrics_file_keeps_its_intact_points(tmp_path, capsys):
    """A torn line, bytes that are not UTF-8, a line that is not an object cost those lines,
    not the analysis (it raised UnicodeDecodeError / AttributeError)."""
    f = tmp_path / "metrics.jsonl"
    f.write_bytes(
        b'{"step": 10, "tokens": 1000, "loss": 3.0}\n'  # a training record: no val_loss
        b'{"step": 20, "tokens": 2000, "val_loss": 2.5}\n'
        b"\xff\xfe\n"
        b"[1, 2]\n"
        b'{"step": 40, "tokens": 4000, "val_loss": 2.1}\n'
        b'{"step": 50, "tokens": 5000, "val_lo'  # torn by a kill
    )
    C, L = read_curve(str(f), N=100.0)
    np.testing.assert_allclose(C, [6.0 * 100 * 2000, 6.0 * 100 * 4000])
    np.testing.assert_allclose(L, [2.5, 2.1])
    assert "damaged line(s) skipped" in capsys.readouterr().err
    assert read_curve(str(tmp_path / "absent.jsonl"), N=100.0) is None


def test_approach2_regresses_on_the_tables_compute_not_the_nominal_budget():
    """A grid's nominal budgets count FLOPs one way (exact, attention included), the table
    another (C = 6ND): a share of the budget that varies with N. Approach 2 reads each minimum's
    C and D in the table's units, so N_opt ~ C^a recovers the planted a = 0.5 (it regressed on
    the nominal budgets and put D_opt = budget / 6 N_opt, off by the FLOP share)."""
    runs = []
    for budget in (1e15, 4e15, 1.6e16, 6.4e16):
        for N in np.geomspace(2e5, 2e8, 13):
            share = 0.8 * (N / 2e5) ** 0.02  # 6ND / budget: smaller models spend more on attention
            D = share * budget / (6 * N)
            C = 6 * N * D
            N_opt = 0.1 * np.sqrt(C)  # the planted optimum, in the table's C
            runs.append((N, D, C, budget, 2.0 + 0.05 * np.log(N / N_opt) ** 2))
    N, D, C, budget, loss = (np.array(v) for v in zip(*runs, strict=True))
    ids = [str(i) for i in range(N.size)]
    table = RunTable(ids, N, D, C, loss, budget, [None] * N.size)
    a2 = approach2(table)
    assert abs(a2["a"] - 0.5) < 0.01, a2["a"]
    for m in a2["minima"]:
        assert abs(6 * m["N_opt"] * m["D_opt"] / m["C_opt"] - 1) < 1e-6
        assert abs(m["N_opt"] / (0.1 * np.sqrt(m["C_opt"])) - 1) < 0.02
        assert m["C_opt"] < m["budget"]  # 6ND counts less than the nominal budget here


def test_approach2_fits_b_when_c_is_not_6nd():
    """The table's C counts attention too (C = 6ND (1 + 2e3 N^-0.3) here, as the engine's exact
    FLOPs do), so D_opt ~ C^b with b != 1 - a: b was reported as 1 - a (0.50 here, against
    0.64 from the minima). b now comes from the minima's D_opt; with C = 6ND it is still 1 - a."""
    for attn in (2e3, 0.0):
        runs = []
        for budget in (1e16, 1e17, 1e18, 1e19):
            for N in np.geomspace(1e5, 1e9, 25):
                C = budget
                D = C / (6 * N * (1 + attn * N**-0.3))
                N_opt = 0.1 * np.sqrt(C)
                runs.append((N, D, C, budget, 2.0 + 0.05 * np.log(N / N_opt) ** 2))
        N, D, C, budget, loss = (np.array(v) for v in zip(*runs, strict=True))
        table = RunTable([str(i) for i in range(N.size)], N, D, C, loss, budget, [None] * N.size)
        W = np.random.default_rng(0).multinomial(N.size, np.full(N.size, 1 / N.size), size=20)
        a2 = approach2(table, W.astype(float))
        lc = np.log([m["C_opt"] for m in a2["minima"]])
        b_direct = np.polyfit(lc, np.log([m["D_opt"] for m in a2["minima"]]), 1)[0]
        assert abs(a2["a"] - 0.5) < 0.01, a2["a"]
        assert abs(a2["b"] - b_direct) < 1e-9, (a2["b"], b_direct)
        assert np.all(np.isfinite(a2["b_boot"]))
        if attn:
            assert a2["b"] > 0.6 and abs(a2["a"] + a2["b"] - 1) > 0.03
            assert not np.allclose(a2["a_boot"] + a2["b_boot"], 1.0, atol=0.01)
        else:
            assert abs(a2["a"] + a2["b"] - 1) < 1e-6


def test_approach2_counts_sizes_as_the_design_does():
    """Epoch's 7.94e20 budget has N = 1.593e9, 1.609e9 and 2.28e9: two sizes, not three (within
    0.03 dex is one size); a parabola through them was a fit to 2 points."""
    rows = []
    for budget, Ns in ((1e19, (1e8, 2e8, 4e8, 8e8)), (1e20, (3e8, 6e8, 1.2e9, 2.4e9)),
                       (7.94e20, (1.593e9, 1.609e9, 2.28e9))):  # fmt: skip
        for N in Ns:
            D = budget / (6 * N)
            rows.append((N, D, budget, 2.0 + 0.05 * np.log(N / (0.1 * np.sqrt(budget))) ** 2))
    N, D, C, loss = (np.array(v) for v in zip(*rows, strict=True))
    table = RunTable([str(i) for i in range(N.size)], N, D, C, loss, C.copy(), [None] * N.size)
    a2 = approach2(table)
    assert [m["budget"] for m in a2["minima"]] == [1e19, 1e20]
    assert any("7.94e+20: fewer than 3 model sizes" in n for n in a2["notes"])


def test_frontier_ci_resamples_runs_not_their_curve_points(tmp_path):
    """Five runs whose validation curves put 149 points on the Approach-1 envelope, each run
    off the law by its own 2% (run-level noise). Resampling the points as if independent gave
    alpha's 90% CI a width of 0.005; resampling the runs they come from gives about 0.04."""
    import json

    from analysis.report import _frontier

    rng = np.random.default_rng(0)
    Ns = np.geomspace(1e6, 1e8, 5)
    ends, curves = [], []
    for i, N in enumerate(Ns):
        toks = np.geomspace(40 * N / 30, 40 * N, 40)
        L = (1.7 + 400 * N**-0.34 + 400 * toks**-0.28) * np.exp(0.02 * rng.standard_normal())
        p = tmp_path / f"m{i}.jsonl"
        p.write_text(
            "".join(
                json.dumps({"tokens": t, "val_loss": v}) + "\n"
                for t, v in zip(toks, L, strict=True)
            )
        )
        ends.append(L[-1])
        curves.append(str(p))
    D = 40 * Ns
    table = RunTable([str(i) for i in range(5)], Ns, D, 6 * Ns * D, np.array(ends),
                     np.full(5, np.nan), curves)  # fmt: skip
    res = {"notes": [], "level": 0.9}
    _frontier(res, table, n_resamples=200, seed=0)
    env = res["envelope"]
    assert env["C"].size > 100 and np.all(env["N"] == Ns[env["run"]])
    ci = res["frontier_ci"]["alpha"]
    assert ci["hi"] - ci["lo"] > 0.02, ci
    assert not res["notes"]


def test_approach2_says_how_many_resamples_its_ci_leaves_out():
    """7 sizes per budget over a 4x span, 1% noise: in 5 of 500 run resamples fewer than 2
    budgets keep a parabola minimum near the sampled sizes, so the resample has no exponent.
    The CI (nanpercentile) left them out without a word; now the report counts them."""
    from analysis.design import detect_design
    from analysis.laws.bootstrap import resample_weights
    from analysis.laws.simulate import isoflop_sweep
    from analysis.report import _approach2

    truth = {"E": 1.82, "A": 482.0, "B": 2085.0, "alpha": 0.3478, "beta": 0.3658}
    sw = isoflop_sweep(truth, span=4.0, sigma=0.01, rng=np.random.default_rng(1))
    n = sw["N"].size
    table = RunTable([str(i) for i in range(n)], sw["N"], sw["D"], sw["C"], sw["loss"],
                     sw["budget"], [None] * n)  # fmt: skip
    W = resample_weights(np.arange(n), 500, np.random.default_rng(0))
    res = {"notes": [], "level": 0.9}
    _approach2(res, table, detect_design(table), W, required=True)
    assert res["approach2"]["n_boot_failed"] == 5
    assert any("5 of 500 bootstrap resamples" in n for n in res["notes"])
