"""One IsoFLOP budget (a first sweep, or `--where` keeping one budget) is its own design: on it
D = C/(6N), so N and D move together and the joint law's N and D terms, the allocation
exponents and any compute-optimal point at another budget are not identified. It was read as an
IsoFLOP sweep: the joint law's allocation was printed as if identified (N_opt 5.2e5 [3.3e4,
1.0e6] at 1e13 FLOPs from five runs at 6e11) with numpy's invalid-power warning on stderr."""

import json
import warnings
from pathlib import Path

import numpy as np

from analysis.checks import study_checks
from analysis.design import detect_design
from analysis.laws.core import joint_loss
from analysis.laws.select import holdout_rows, where
from analysis.laws.simulate import CHINCHILLA_TRUTH, isoflop_sweep
from analysis.markdown import report_md
from analysis.report import fits_json, run_analysis
from analysis.summary import summary_lines
from analysis.table_file import load_table
from analysis.tables import RunTable
from scaling.cli import main


def _sweep(budgets, declared=True):
    s = isoflop_sweep(budgets=budgets, n_sizes=7, rng=np.random.default_rng(0))
    n = s["N"].size
    b = s["budget"] if declared else np.full(n, np.nan)
    ids = [f"r{i}" for i in range(n)]
    return RunTable(ids, s["N"], s["D"], s["C"], s["loss"], b, [None] * n, source="synthetic")


def test_one_budget_is_its_own_design_two_budgets_are_not():
    for declared in (True, False):  # a budget column, or C values that cluster into one
        d = detect_design(_sweep((1e19,), declared))
        assert d.kind == "one_budget" and "one compute budget (C = 1e+19" in d.description
        assert not d.supports("allocation") and not d.supports("approach2")
        assert d.exponents == () and "D = C/(6N)" in d.no_allocation
        assert detect_design(_sweep((1e18, 1e19), declared)).kind == "isoflop"
    mask, desc = holdout_rows(_sweep((1e19,)), "largest")  # was every run: 0 left to fit
    assert mask.sum() == 1 and "largest model size" in desc
    one_size = _sweep((1e19,))
    assert detect_design(one_size.subset(one_size.N == one_size.N[0])).kind == "one_size"


def test_one_budget_analysis_gives_its_minimum_no_allocation_no_warning():
    t = _sweep((1e19,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the invalid-power warning leaked
        res = run_analysis(t, n_resamples=40, holdout=None, intervals=False, need_approach2=True)
    assert res["compute_optimal"] == [] and "approach2" not in res
    m = res["isoflop_minimum"]  # the parabola's minimum at that budget: what one budget gives
    true = joint_loss(CHINCHILLA_TRUTH, t.N, t.D)
    assert m["budget"] == 1e19 and m["inside_range"] and abs(m["loss_min"] / true.min() - 1) < 0.01
    fits = json.loads(json.dumps(fits_json(res)))
    assert fits["isoflop_minimum"]["N_opt"] == m["N_opt"]
    assert set(fits["joint_unidentified"]) == {"A", "B", "alpha", "beta"}
    checks = {n: (ok, s) for n, ok, s in study_checks(fits)}
    for name in ("frontier falls with compute", "IsoFLOP minima inside the grid"):
        assert checks[name][0] is None and checks[name][1].startswith("not applicable: one comp")
    assert checks["allocation exponents identified"][0] is None
    text = "\n".join(summary_lines(res))
    assert "allocation not identified" in text and "N_opt ~ C^" not in text
    assert f"IsoFLOP minimum at the one budget (C = 1e+19): N_opt = {m['N_opt']:.4g}" in text
    md = report_md(res, {}, Path("."))
    assert "Allocation: not identified by this design" in md and "a, b need >= 2" in md


def test_predict_at_a_budget_on_one_real_budget_exits_2_without_a_warning(shared_data, capsys):
    """Porian et al.'s IsoFLOP data kept to one budget (6 model sizes at 1.28e19 FLOPs)."""
    f = shared_data / "porian2024_isoflop.csv"
    keep = 'config_id == "rw_base_short_chinchilla_standard_val" and C == 1.28e19'
    sub = where(load_table(f, {"N": "N", "D": "D", "loss": "loss"}), keep)
    assert len(sub) == 6 and detect_design(sub).kind == "one_budget"
    base = ["predict", "--csv", str(f), "--map", "N=N", "--map", "D=D", "--map", "loss=loss"]
    assert main([*base, "--where", keep, "--flops", "1e21"]) == 2
    err = capsys.readouterr().err
    assert "error: one compute budget (C = 1.28e+19" in err and "--params N --tokens D" in err
    assert "RuntimeWarning" not in err
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert main([*base, "--where", keep, "--params", "3e8", "--tokens", "7e9"]) == 0
    assert "predicted loss" in capsys.readouterr().out


def test_compare_on_one_budget_exits_2_and_asks_for_more_budgets(tmp_path, capsys):
    paths = []
    for name, budgets in (("one", (1e19,)), ("two", (1e18, 1e19))):
        t, f = _sweep(budgets), tmp_path / f"{name}.csv"
        rows = zip(t.N, t.D, t.loss, strict=True)
        f.write_text("N,D,loss\n" + "".join(f"{n},{d},{y}\n" for n, d, y in rows))
        paths.append(str(f))
    cols = ["--map", "N=N", "--map", "D=D", "--map", "loss=loss"]
    assert main(["compare", *paths, *cols, "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert (
        "error: one: one compute budget" in err and "IsoFLOP sweeps at >= 2 compute budgets" in err
    )


def test_one_budget_whose_unidentified_term_runs_off_to_inf_is_still_analyzed():
    """The design masks A, B, alpha, beta on one budget, yet a fit sending one of them to inf
    (five real demo runs at one budget: B; a simulated 7-size budget: A) made analyze exit 2
    ('diverged (B -> infinity) ... add runs'), with numpy's inf - inf warning from its CI."""
    N = np.array([4160.0, 7776.0, 12416.0, 18080.0, 24768.0])
    D = np.array([2429952.0, 1350656.0, 869376.0, 608256.0, 450560.0])
    L = np.array([2.29259609, 2.13882552, 2.13912394, 2.13750499, 2.24790662])
    demo = RunTable([f"r{i}" for i in range(5)], N, D, 6 * N * D, L, np.full(5, np.nan),
                    [None] * 5, source="demo")  # fmt: skip
    s = isoflop_sweep(budgets=(1e19,), n_sizes=7, rng=np.random.default_rng(3))
    ids = [f"r{i}" for i in range(7)]
    sim = RunTable(ids, s["N"], s["D"], s["C"], s["loss"], s["budget"], [None] * 7, source="s")
    for t in (demo, sim):
        assert detect_design(t).kind == "one_budget"
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            res = run_analysis(t, n_resamples=30, holdout=None, intervals=False)
        assert set(res["unidentified"]) == {"A", "B", "alpha", "beta"}
        assert res["isoflop_minimum"]["inside_range"]
        assert np.isfinite(res["params_ci"]["E"]["estimate"])


def test_a_prediction_ci_is_read_from_the_resamples_log_space_vectors():
    """predict --params/--tokens took its point from the log-space vector but its CI from the
    natural parameters, where a resample's B = exp(huge) over D^beta = inf read inf/inf = nan:
    on one budget's five demo runs the CI was [nan, nan] with numpy's All-NaN warning."""
    from analysis.laws.bootstrap import bootstrap_fit
    from analysis.laws.fit import fit_joint
    from analysis.laws.predict import predict_nd

    N = np.array([4160.0, 7776.0, 12416.0, 18080.0, 24768.0])
    D = np.array([2429952.0, 1350656.0, 869376.0, 608256.0, 450560.0])
    L = np.array([2.29259609, 2.13882552, 2.13912394, 2.13750499, 2.24790662])
    fit = fit_joint(N, D, L, identified=())
    boot = bootstrap_fit(fit, [np.log(N), np.log(D)], np.log(L), np.arange(5), n_resamples=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        ci = predict_nd(fit, boot, 1e4, 1e6)["loss"]
    assert np.isfinite(ci["lo"]) and np.isfinite(ci["hi"]) and ci["lo"] <= ci["hi"]
    assert 2.0 < ci["estimate"] < 2.3


def test_predict_json_gives_no_value_for_what_the_design_cannot_identify(tmp_path, capsys):
    """predict --json printed the one-budget fit's A, B, alpha and beta as numbers, which
    analyze and its report give no value ('not identified by this design'); they are null."""
    t = _sweep((1e19,))
    path = tmp_path / "one.csv"
    cols = zip(t.N, t.D, t.loss, strict=True)
    rows = "".join(f"r{i},{n:.17g},{d:.17g},{x:.17g}\n" for i, (n, d, x) in enumerate(cols))
    path.write_text("name,params,tokens,loss\n" + rows)
    m = ["--map", "N=params", "--map", "D=tokens", "--map", "run=name", "--map", "loss=loss"]
    argv = ["predict", "--table", str(path), *m, "--params", "3e8", "--tokens", "5e9"]
    assert main([*argv, "--resamples", "20", "--json"]) == 0
    params = json.loads(capsys.readouterr().out)["params"]
    assert {k for k, v in params.items() if v is None} == {"A", "B", "alpha", "beta"}
    assert 1.0 < params["E"] < 3.0
