"""`scaling analyze | plot | predict` end to end on a synthetic results.jsonl, and bad input."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from analysis.laws.simulate import isoflop_sweep
from scaling.cli import main


def _record(i, N, D, C, loss, budget, curve=None, status="done"):
    return {
        "run_id": f"r{i:03d}",
        "sweep": "synthetic",
        "cell": {"budget": budget, "size_index": i},
        "config": {"model": {"vocab_size": 259}},
        "N_total": N,
        "N_nonembed": 0.9 * N,
        "D": D,
        "C_6ND": C,
        "C_exact": 1.1 * C,
        "final_val_loss": loss,
        "best_val_loss": loss,
        "curve": curve,
        "evals": None,
        "status": status,
        "wall_time_s": 1.0,
        "device_kind": "cpu",
        "seed": 0,
    }


@pytest.fixture
def sweep_dir(tmp_path):
    sw = isoflop_sweep(
        budgets=(1e15, 1e16, 1e17, 1e18), n_sizes=6, sigma=0.005, rng=np.random.default_rng(0)
    )
    lines = []
    for i in range(sw["N"].size):
        N, D, C, L, b = (float(sw[k][i]) for k in ("N", "D", "C", "loss", "budget"))
        curve = None
        if i % 6 == 2:  # a validation curve for some runs (Approach 1 uses it)
            curve = f"run{i}/metrics.jsonl"
            (tmp_path / f"run{i}").mkdir()
            with open(tmp_path / curve, "w") as fh:
                for frac in (0.25, 0.5, 0.75, 1.0):
                    fh.write(
                        json.dumps(
                            {
                                "step": int(frac * 100),
                                "tokens": frac * D,
                                "val_loss": L * (1 + 0.3 * (1 - frac)),
                            }
                        )
                        + "\n"
                    )
        lines.append(json.dumps(_record(i, N, D, C, L, b, curve)))
    lines.append(json.dumps(_record(99, 1e6, 1e6, 6e12, float("nan"), 1e15, status="diverged")))
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_analyze_writes_report_fits_and_figures(sweep_dir, capsys):
    assert main(["analyze", str(sweep_dir), "--resamples", "200"]) == 0
    rep = sweep_dir / "report"
    md = (rep / "report.md").read_text()
    for s in (
        "Joint law",
        "90% CI",
        "Back-test",
        "Convergence",
        "Approach 2",
        "Predictive intervals",
        "Rolling-origin back-tests",
        "frontier L_opt(C) (on the lowest loss at each of 4 compute levels",
        "![interval_reliability](interval_reliability.png)",
        "nats/byte",
        "skipped run r099",
        "![loss_vs_compute](loss_vs_compute.png)",
    ):
        assert s in md, s
    for name in ("loss_vs_compute", "isoflop", "nopt_vs_c", "residuals", "interval_reliability"):
        assert (rep / f"{name}.png").stat().st_size > 10_000
        assert (rep / f"{name}.svg").is_file()
    fits = json.loads((rep / "fits.json").read_text())
    p = fits["joint"]["params"]
    assert abs(p["alpha"] / 0.34 - 1) < 0.25 and abs(p["E"] / 1.69 - 1) < 0.1
    assert fits["joint_ci"]["alpha"]["lo"] <= p["alpha"] <= fits["joint_ci"]["alpha"]["hi"]
    assert math.isclose(fits["joint"]["log_params"][3], p["alpha"])  # full precision, no rounding
    assert fits["approach1"]["n_curves"] == 4
    assert 0.3 < fits["approach2"]["a"] < 0.7
    assert fits["backtest"]["n_test"] == 6
    summary = capsys.readouterr().out  # the console summary quotes the fitted numbers
    assert f"alpha = {p['alpha']:.4g} [" in summary
    assert "back-test: fit on" in summary and "mean |relative error|" in summary
    assert "prediction at 100x the largest budget" in summary
    assert "predictive, " in summary and "extrapolation" in summary
    pv = fits["predictive"]
    assert pv["chosen"] in ("chinchilla", "kaplan", "overtrain", "stack")
    assert pv["rolling"]["origins"] and pv["cross_coverage"]["n"] > 0
    co = fits["compute_optimal"]  # the interval widens with the extrapolation distance
    widths = [c["interval_terms"]["total"] for c in co]
    assert widths[0] < widths[1] < widths[2], widths


def test_predict_json_and_text(sweep_dir, capsys):
    assert main(["predict", str(sweep_dir), "--flops", "1e21", "--json", "--resamples", "100"]) == 0
    out = json.loads(capsys.readouterr().out)
    pr = out["prediction"]
    assert pr["loss"]["lo"] <= pr["loss"]["estimate"] <= pr["loss"]["hi"]
    assert math.isclose(6 * pr["N_opt"]["estimate"] * pr["D_opt"]["estimate"], 1e21, rel_tol=1e-9)
    assert (
        main(
            ["predict", str(sweep_dir), "--params", "1e9", "--tokens", "2e10", "--resamples", "100"]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "predicted loss" in text and "extrapolation:" in text and "interval half-width" in text
    assert main(["predict", str(sweep_dir), "--holdout", "1e17", "--resamples", "100"]) == 0
    text = capsys.readouterr().out
    assert "mean |rel. error|" in text and "inside their 90% predictive intervals" in text


def test_the_order_runs_finished_in_changes_nothing(sweep_dir, capsys):
    """Launchers append to results.jsonl as their runs finish, so one sweep's lines come in
    different orders; its prediction, bootstrap included, must be the same (it was not), and
    so must a CSV table's whatever the order of its rows."""
    argv = ["predict", str(sweep_dir), "--flops", "1e21", "--json", "--resamples", "20"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    path = sweep_dir / "results.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[1::2] + lines[::-2]) + "\n")  # another order, same runs
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == first
    # a CSV table too: its rows in two orders give one answer
    recs = [json.loads(x) for x in lines if json.loads(x)["status"] == "done"]
    rows = [f"{r['run_id']},{r['N_total']},{r['D']},{r['final_val_loss']}" for r in recs]
    answers = []
    for order in (rows, rows[::-1]):
        (sweep_dir / "t.csv").write_text("run,N,D,loss\n" + "\n".join(order) + "\n")
        table = ["--table", str(sweep_dir / "t.csv"), "--map", "N=N", "--map", "D=D"]
        table += ["--map", "loss=loss", "--map", "run=run"]
        assert main(["predict", *table, *argv[2:]]) == 0
        answers.append(json.loads(capsys.readouterr().out))
    assert answers[0] == answers[1]


def test_predict_says_when_the_data_cannot_support_the_distance(sweep_dir, capsys):
    assert main(["predict", str(sweep_dir), "--flops", "1e26", "--resamples", "20"]) == 0
    assert "the data cannot support this distance" in capsys.readouterr().out


def test_plot_command(sweep_dir, tmp_path):
    out = tmp_path / "figs"
    assert main(["plot", str(sweep_dir), "--out", str(out), "--resamples", "50"]) == 0
    assert (out / "isoflop.png").is_file()


def _write(path, recs):
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")


@pytest.mark.parametrize("case", ["few", "nan", "inf", "negative_n", "zero_loss"])
def test_bad_values_exit_2(tmp_path, capsys, case):
    recs = [_record(i, 1e6 * 2**i, 1e8, 6e14 * 2**i, 3.0 - 0.1 * i, 1e15) for i in range(8)]
    if case == "few":
        recs = recs[:4]
    elif case == "nan":
        recs[3]["final_val_loss"] = float("nan")
    elif case == "inf":
        recs[3]["D"] = float("inf")
    elif case == "negative_n":
        recs[2]["N_total"] = -5
    else:
        recs[1]["final_val_loss"] = 0.0
    _write(tmp_path / "results.jsonl", recs)
    assert main(["predict", str(tmp_path), "--flops", "1e20", "--resamples", "20"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:")
    if case == "few":
        assert "4 usable point(s)" in err and "5 parameters" in err
    else:
        assert "positive finite" in err


def test_single_budget_gives_its_minimum_not_approach2(tmp_path, capsys):
    """One budget is its own design (`one_budget`): analyze exited 2 asking for Approach 2's
    second budget; it now reports that budget's IsoFLOP minimum and no allocation."""
    sw = isoflop_sweep(budgets=(1e18,), n_sizes=8, rng=np.random.default_rng(1))
    recs = [
        _record(i, *(float(sw[k][i]) for k in ("N", "D", "C", "loss", "budget"))) for i in range(8)
    ]
    _write(tmp_path / "results.jsonl", recs)
    assert main(["analyze", str(tmp_path), "--resamples", "20", "--holdout", "none"]) == 0
    out, err = capsys.readouterr()
    assert "Design: one compute budget (C = 1e+18" in out and "allocation not identified" in out
    assert "IsoFLOP minimum at the one budget (C = 1e+18)" in out
    assert "the exponents a, b need >= 2 budgets" in err and "RuntimeWarning" not in err


def test_csv_mapping_errors_exit_2(tmp_path, capsys):
    f = tmp_path / "t.csv"
    f.write_text(
        "size,flop,loss\n"
        + "".join(f"{1e6 * 2**i},{6e14 * 2**i},{3 - 0.1 * i}\n" for i in range(8))
    )
    assert (
        main(
            [
                "predict",
                "--csv",
                str(f),
                "--map",
                "N=size",
                "--map",
                "C=flops",
                "--map",
                "loss=loss",
                "--flops",
                "1e20",
            ]
        )
        == 2
    )
    assert "'flops' not found" in capsys.readouterr().err
    assert main(["predict", "--csv", str(f), "--map", "N=size", "--flops", "1e20"]) == 2
    assert (
        "--map D=COLUMN (tokens) or --map C=COLUMN (FLOPs) is required" in capsys.readouterr().err
    )
    assert main(["predict", "--csv", str(f), "--map", "X-1=size", "--flops", "1e20"]) == 2
    assert "'X-1' is not a usable name" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nowhere"), "--flops", "1e20"]) == 2


def test_csv_published_table_end_to_end(shared_data, tmp_path, capsys):
    csv = shared_data / "epoch_chinchilla_svg_extracted_data.csv"
    rc = main(
        [
            "predict",
            "--csv",
            str(csv),
            "--map",
            "N=Model Size",
            "--map",
            "C=Training FLOP",
            "--map",
            "loss=loss",
            "--drop-highest",
            "5",
            "--flops",
            "5.76e23",
            "--json",
            "--resamples",
            "100",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_runs"] == 240
    assert abs(out["params"]["alpha"] / 0.3473 - 1) < 0.005
    # Chinchilla's own budget: ~70B params is inside the compute-optimal CI neighbourhood
    assert 2e10 < out["prediction"]["N_opt"]["estimate"] < 2e11


@pytest.mark.parametrize("k", [-1, 24, 300])
def test_drop_highest_out_of_range_exit_2(sweep_dir, capsys, k):
    # 24 runs; a k >= 24 or < 0 used to slice argsort with a negative start and silently drop
    # some other number of rows than asked
    argv = ["predict", str(sweep_dir), "--flops", "1e19", "--resamples", "20"]
    assert main(argv + ["--drop-highest", str(k)]) == 2
    assert "--drop-highest" in capsys.readouterr().err


def test_bootstrap_resamples_runs_not_rows(tmp_path, capsys):
    """A CSV with two rows per run (--map run=...): the bootstrap draws whole runs, so the CIs
    equal those of the one-row-per-run table (resampling rows would make them too narrow)."""
    sw = isoflop_sweep(budgets=(1e17, 1e18, 1e19), n_sizes=5, rng=np.random.default_rng(2))
    rows = [f"r{i:02d},{sw['N'][i]},{sw['D'][i]},{sw['loss'][i]}\n" for i in range(15)]
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    one.write_text("run,N,D,loss\n" + "".join(rows))
    two.write_text("run,N,D,loss\n" + "".join(rows + rows))
    cis = []
    for f in (one, two):
        argv = ["predict", "--csv", str(f), "--flops", "1e20", "--resamples", "200", "--json"]
        argv += [a for k in ("run", "N", "D", "loss") for a in ("--map", f"{k}={k}")]
        assert main(argv) == 0
        cis.append(json.loads(capsys.readouterr().out)["prediction"]["bootstrap_loss"])
    for k in ("estimate", "lo", "hi"):
        assert cis[1][k] == pytest.approx(cis[0][k], rel=2e-3), (k, cis)


def test_frontier_fit_failure_is_a_note_not_an_abort(sweep_dir, monkeypatch):
    """The frontier L(C) is a cross-check: if its fit fails, analyze still reports the rest."""
    from analysis import report
    from analysis.tables import load_results
    from scaling.errors import UserError

    def boom(*a, **k):
        raise UserError("frontier L(C): the fit diverged")

    monkeypatch.setattr(report, "fit_power", boom)
    res = report.run_analysis(load_results(sweep_dir), n_resamples=20, holdout=None)
    assert "frontier_fit" not in res and "params_ci" in res
    assert any("frontier L(C) not fitted" in n for n in res["notes"])


def test_study_checks_pass_on_a_good_sweep_and_fail_loudly(sweep_dir, capsys):
    from analysis.checks import main as checks_main

    assert main(["analyze", str(sweep_dir), "--resamples", "100"]) == 0
    fits_path = sweep_dir / "report" / "fits.json"
    capsys.readouterr()
    assert checks_main([str(fits_path), "--max-backtest-error", "0.5"]) == 0
    out = capsys.readouterr().out
    for name in ("frontier falls", "IsoFLOP minima inside", "frontier exponent", "back-test"):
        assert f"[ok] {name}" in out, out
    fits = json.loads(fits_path.read_text())
    fits["approach2"]["minima"][-1]["inside_range"] = False
    fits["backtest"]["mean_abs_rel_error"]["estimate"] = 0.2
    bad = sweep_dir / "bad_fits.json"
    bad.write_text(json.dumps(fits))
    assert checks_main([str(bad)]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] IsoFLOP minima inside the grid" in out and "[FAIL] back-test" in out
    # over-confident intervals fail the checks instead of printing [ok]
    fits["backtest"]["coverage"] = {"inside": 2, "n": 6, "level": 0.9}
    fits["predictive"]["cross_coverage"] = {"inside": 11, "n": 20, "level": 0.9}
    bad.write_text(json.dumps(fits))
    assert checks_main([str(bad)]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] held-out runs inside their predictive intervals: 2/6" in out
    assert "[FAIL] rolling back-tests inside their predictive intervals: 11/20" in out


def test_coverage_checks_say_when_they_only_tested_the_prior():
    from analysis.checks import study_checks

    bt = {
        "mean_abs_rel_error": {"estimate": 0.01},
        "description": "runs at the largest budget",
        "coverage": {"inside": 5, "n": 5, "level": 0.9},
        "predictor": {"calibration": {"weight_user": 0.0, "n_origins": 1}},
    }
    cc = {"inside": 15, "n": 15, "level": 0.9, "prior_only": 15}
    out = {
        name: d
        for name, _, d in study_checks({"backtest": bt, "predictive": {"cross_coverage": cc}})
    }
    assert (
        "fit had 1 rolling origin, too few to calibrate on"
        in out["held-out runs inside their predictive intervals"]
    )
    assert (
        "all against the published-sweep prior alone"
        in out["rolling back-tests inside their predictive intervals"]
    )
    bt["predictor"]["calibration"]["weight_user"] = 0.4
    cc["prior_only"] = 4
    out = {
        name: d
        for name, _, d in study_checks({"backtest": bt, "predictive": {"cross_coverage": cc}})
    }
    assert out["held-out runs inside their predictive intervals"].endswith("P <= 1)")
    assert (
        "; 4 of them against the published-sweep prior alone"
        in out["rolling back-tests inside their predictive intervals"]
    )


def test_an_output_dir_that_cannot_be_written_exits_2_before_the_fit(
    sweep_dir, capsys, monkeypatch
):
    """A colleague's read-only sweep, or --out under a file: one line, exit 2, and no fit spent
    first (it fitted for the whole analysis, then died with an OSError traceback)."""
    import errno

    import analysis.report

    def no_fit(*a, **k):
        raise AssertionError("fitted before checking the output directory")

    monkeypatch.setattr(analysis.report, "run_analysis", no_fit)
    under_a_file = sweep_dir / "results.jsonl" / "report"
    assert main(["analyze", str(sweep_dir), "--out", str(under_a_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--out {under_a_file}: cannot write there" in err[0]
    write = Path.write_bytes

    def read_only(self, data):
        if self.name.startswith(".write-check-"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return write(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    assert main(["analyze", str(sweep_dir)]) == 2
    assert "report: cannot write there (Read-only file system)" in capsys.readouterr().err


def test_a_path_error_anywhere_is_one_line_and_exit_2(monkeypatch, capsys):
    from scaling import cli as scaling_cli

    class Parser:
        def parse_args(self, argv):
            def handler(args):
                raise PermissionError(13, "Permission denied", "/shared/sweep/leases/.lock")

            return type("Args", (), {"handler": staticmethod(handler)})()

    monkeypatch.setattr(scaling_cli, "build_parser", Parser)
    assert scaling_cli.main(["sweep", "run", "demo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: cannot use /shared/sweep/leases/.lock: Permission denied; check its "
        "permissions, or choose another path (e.g. --out)"
    ]


def test_the_frontier_check_forgives_a_rise_within_the_minimas_noise():
    """Epoch's Chinchilla: its two top budgets' minima are 2.200 and 2.201 (0.05% apart): level
    within noise, not a FAIL; a real rise still fails, and the detail shows each sign."""
    from analysis.checks import study_checks

    def check(losses):
        minima = [{"budget": 10.0**i, "loss_min": x} for i, x in enumerate(losses)]
        fits = {"approach2": {"minima": minima}, "design": {"kind": "isoflop"}}
        return {n: (ok, d) for n, ok, d in study_checks(fits)}["frontier falls with compute"]

    assert check([2.30, 2.200, 2.201]) == (True, "IsoFLOP minima 2.300 > 2.200 ~ 2.201")
    assert check([2.30, 2.20, 2.25]) == (False, "IsoFLOP minima 2.300 > 2.200 < 2.250")


def test_checks_help_states_the_backtest_threshold(capsys):
    """`python -m analysis.checks --help` listed --max-backtest-error without its 3% default."""
    from analysis.checks import main as checks_main

    with pytest.raises(SystemExit) as e:
        checks_main(["--help"])
    assert e.value.code == 0
    assert "(default 0.03)" in " ".join(capsys.readouterr().out.split())
