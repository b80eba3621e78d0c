"""What the analysis reads: results.jsonl records and --at points files, and the one-line errors
their bad values give (the value as written, and the fix)."""

import json

import pytest

from analysis.tables import load_results
from scaling.errors import UserError


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _rec(i, **kw):
    base = dict(run_id=f"r{i}", status="done", N_total=1e6 * (i + 1), D=2e7, final_val_loss=3.0)
    return {**base, **kw}


def test_a_nan_loss_is_named_as_nan_and_a_missing_field_says_the_fix(tmp_path):
    f = _write(tmp_path / "results.jsonl", [_rec(0), _rec(1, final_val_loss=float("nan"))])
    with pytest.raises(UserError) as e:
        load_results(f)
    msg = str(e.value)
    assert "got nan for run 'r1'" in msg and "np.float64" not in msg and "fix or drop" in msg
    rec = _rec(1)
    del rec["final_val_loss"]
    _write(f, [_rec(0), rec])
    with pytest.raises(UserError, match=r"run r1 lacks field\(s\) \['final_val_loss'\]; fix or"):
        load_results(f)


def test_points_with_d_and_c_columns_use_each_rows_d_else_its_c(tmp_path):
    """An --at file with N, D and C columns was refused when the unused C cell was blank; a row
    with D blank and C given now gets D = C / (6 N), as a file without a D column does."""
    from analysis.laws.points import read_points

    f = tmp_path / "at.csv"
    f.write_text("name,N,D,C\na,1e9,2e10,\nb,1e9,,1.2e21\n")
    pts = read_points(f)
    assert pts.kind == "nd" and pts.names == ["a", "b"]
    assert pts.D.tolist() == pytest.approx([2e10, 2e11]) and pts.C[0] == pytest.approx(1.2e20)
    f.write_text("name,N,D,C\na,1e9,2e10,\nc,1e9,,\n")
    with pytest.raises(UserError, match=r"at.csv:3: no 'D' or 'C' value"):
        read_points(f)


def test_flops_kind_exact_is_said_and_the_law_keeps_6nd(tmp_path):
    """With --flops-kind exact report.md and fits.json said "C = 6ND FLOPs", and the
    compute-optimal point 'at the largest budget' sat at the exact count read as 6ND (25% beyond
    the largest run here)."""
    import numpy as np

    from analysis.cli_source import c_convention, note_flop_convention
    from analysis.report import fits_json, run_analysis

    recs = []
    for i, (n, d) in enumerate([(n, t * n) for n in (1e5, 2e5, 4e5, 8e5) for t in (5, 20, 80)]):
        loss = 1.7 + 400 / n**0.34 + 400 / d**0.28
        recs.append(_rec(i, N_total=n, D=d, C_6ND=6 * n * d, C_exact=7.5 * n * d,
                         final_val_loss=loss))  # fmt: skip
    t = load_results(_write(tmp_path / "results.jsonl", recs), flops="exact")
    note_flop_convention(t, "the exact C (--flops-kind exact)")
    assert any(n.startswith("the exact C (--flops-kind exact) is 1.25x 6ND") for n in t.notes)
    assert c_convention(t).startswith("C = FLOPs as given, 1.25x 6ND")
    res = run_analysis(t, n_resamples=20, holdout=None, intervals=False)
    assert res["compute_optimal"][0]["flops"] == pytest.approx(np.max(6 * t.N * t.D))
    assert fits_json(res)["conventions"]["C"].startswith("C = FLOPs as given")
    six = load_results(tmp_path / "results.jsonl")
    assert c_convention(six) == "C = 6ND FLOPs"


def test_predict_holdout_none_means_no_backtest_as_in_analyze(tmp_path, capsys):
    """`predict --holdout none` exited 2 ("'none' is not a condition") though `analyze` takes it."""
    from scaling.cli import main

    f = tmp_path / "t.csv"
    rows = [(n, t * n) for n in (1e6, 4e6, 1.6e7, 6.4e7) for t in (5, 20, 80)]
    f.write_text("N,D,loss\n" + "".join(
        f"{n:g},{d:g},{1.7 + 400 / n**0.34 + 400 / d**0.28:.5f}\n" for n, d in rows))  # fmt: skip
    base = ["predict", "--csv", str(f), "--map", "N=N", "--map", "D=D", "--map", "loss=loss"]
    argv = [*base, "--params", "1e8", "--tokens", "2e9", "--resamples", "10", "--json"]
    assert main([*argv, "--holdout", "none"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "backtest" not in out and out["n_fit"] == len(rows)


def test_predict_json_is_strict_json(tmp_path, capsys):
    """On one model size the calibration's coverage is NaN: `predict --json` printed NaN, which
    strict JSON readers (jq, JSON.parse) refuse."""
    from scaling.cli import main

    f = tmp_path / "t.csv"
    f.write_text("N,D,loss\n" + "".join(
        f"1e8,{t * 1e8:g},{1.7 + 400 / 1e8**0.34 + 400 / (t * 1e8) ** 0.28:.5f}\n"
        for t in (5, 10, 20, 40, 80, 160)))  # fmt: skip
    base = ["predict", "--csv", str(f), "--map", "N=N", "--map", "D=D", "--map", "loss=loss"]
    assert main([*base, "--params", "1e8", "--tokens", "1e10", "--resamples", "10", "--json"]) == 0
    text = capsys.readouterr().out
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in predict --json"))


def test_predict_at_a_budget_checks_the_runs_the_holdout_leaves(tmp_path, capsys):
    """`predict --flops C --holdout 'N > 2e6'` on a grid left one model size and printed a
    compute-optimal N of 1.4 parameters; it now exits 2 before fitting and says why."""
    from scaling.cli import main

    f = tmp_path / "t.csv"
    rows = [(n, t * n) for n in (1e6, 4e6, 1.6e7) for t in (5, 20, 80, 160, 320)]
    f.write_text("N,D,loss\n" + "".join(
        f"{n:g},{d:g},{1.7 + 400 / n**0.34 + 400 / d**0.28:.5f}\n" for n, d in rows))  # fmt: skip
    base = ["predict", "--csv", str(f), "--map", "N=N", "--map", "D=D", "--map", "loss=loss"]
    assert main([*base, "--flops", "1e20", "--holdout", "N > 2e6"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the runs --holdout N > 2e6 leaves: one model size")
    assert "hold out fewer runs" in err and err.count("\n") == 1


def test_runs_in_different_loss_units_are_not_fitted_together(tmp_path, capsys):
    """Byte-level runs (nats/byte) and subword runs (nats/token) in one results.jsonl were fitted
    as one law, labelled with the first run's unit."""
    import numpy as np

    from scaling.cli import main

    recs = []
    for i, n in enumerate(np.geomspace(1e5, 1e8, 12)):
        vocab = 259 if i % 2 else 32000
        recs.append(_rec(i, N_total=n, D=20 * n, final_val_loss=1.7 + 400 / n**0.34,
                         config={"model": {"vocab_size": vocab}}))  # fmt: skip
    d = tmp_path / "sweep"
    d.mkdir()
    _write(d / "results.jsonl", recs)
    argv = ["predict", str(d), "--params", "1e7", "--tokens", "2e8", "--resamples", "10"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "different units (6 run(s) in nats/token, 6 run(s) in nats/byte)" in err
    assert "--where 'loss_unit == \"nats/token\"'" in err and err.count("\n") == 1
    assert main([*argv, "--where", 'loss_unit == "nats/byte"', "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["loss_unit"] == "nats/byte" and out["n_runs"] == 6


@pytest.mark.parametrize("cmd", ["analyze", "plot", "predict"])
def test_a_negative_seed_exits_2_before_the_fit(tmp_path, capsys, monkeypatch, cmd):
    """`--seed -1` was numpy's 'expected non-negative integer' traceback, after the joint fit."""
    from analysis import report
    from scaling.cli import main

    def no_fit(*a, **k):
        raise AssertionError("fitted before --seed was checked")

    monkeypatch.setattr(report, "run_analysis", no_fit)
    f = tmp_path / "t.csv"
    rows = [(n, t * n) for n in (1e6, 4e6, 1.6e7) for t in (5, 20, 80)]
    f.write_text("N,D,loss\n" + "".join(
        f"{n:g},{d:g},{1.7 + 400 / n**0.34 + 400 / d**0.28:.5f}\n" for n, d in rows))  # fmt: skip
    argv = [cmd, "--table", str(f), "--out", str(tmp_path / "o"), "--seed", "-1"]
    assert main(argv + (["--params", "1e8", "--tokens", "2e9"] if cmd == "predict" else [])) == 2
    err = capsys.readouterr().err
    assert err.endswith("error: --seed must be a non-negative integer, got -1\n"), err
