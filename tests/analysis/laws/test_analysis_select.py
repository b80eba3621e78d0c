"""The researcher's controls: --where / --holdout filters, --map extra columns, JSONL tables,
`predict --at`, and `predict --flops` honouring --holdout. Bad input exits 2 with one line."""

import csv
import json

import numpy as np
import pytest

from analysis.laws.select import holdout_rows, parse_filter, where
from analysis.laws.simulate import isoflop_sweep
from analysis.table_file import load_table, parse_map
from scaling.cli import main
from scaling.errors import UserError

MAP = ["--map", "N=Model Size", "--map", "D=tokens", "--map", "loss=loss", "--map", "run=name"]


def _rows():
    """Two data sets (c4, pile) of a 4-budget IsoFLOP sweep; pile is 3% worse."""
    sw = isoflop_sweep(budgets=(1e17, 1e18, 1e19, 1e20), n_sizes=5, rng=np.random.default_rng(1))
    rows = []
    for data, factor in (("c4", 1.0), ("pile", 1.03)):
        for i in range(sw["N"].size):
            rows.append(
                {
                    "name": f"{data}-{i:02d}",
                    "Model Size": float(sw["N"][i]),
                    "tokens": float(sw["D"][i]),
                    "loss": float(sw["loss"][i] * factor),
                    "data": data,
                    "lr": 1e-3 if i % 2 else 3e-3,
                }
            )
    return rows


@pytest.fixture
def table_csv(tmp_path):
    path = tmp_path / "runs.csv"
    rows = _rows()
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _table(path):
    return load_table(path, parse_map(MAP[1::2]))


def test_filter_language_selects_rows_by_any_column(table_csv):
    t = _table(table_csv)
    assert len(t) == 40 and set(t.extra) >= {"data", "lr"}
    assert t.extra["lr"].dtype == np.float64  # numeric CSV text became numbers
    c4 = where(t, 'data == "c4"')
    assert len(c4) == 20 and set(c4.extra["data"]) == {"c4"}
    assert c4.notes[-1] == '--where data == "c4": kept 20 of 40 rows'
    both = parse_filter('data in ("c4", "pile") and not lr > 2e-3').mask(t)
    assert both.sum() == 20 and np.all(t.extra["lr"][both] == 1e-3)
    lo, hi = np.sort(t.N)[[10, 30]]
    chain = parse_filter(f"{lo} < N <= {hi}").mask(t)
    assert np.array_equal(chain, (t.N > lo) & (t.N <= hi))
    assert parse_filter('run == "pile-03" or C >= 1e20').mask(t).sum() == 1 + 10
    assert parse_filter("loss > -1").mask(t).all()


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("dataset == 'c4'", "unknown column 'dataset'"),
        ("data == c4", "unknown column 'c4' (quote text"),
        ("N >", "not a valid expression"),
        ("__import__('os').system('true')", "Call is not allowed"),
        ("N * 2 > 4e8", "BinOp is not allowed"),
        ("data > 3", "column 'data' holds text"),
        ("N == 'big'", "column 'N' holds numbers"),
        ("N", "'N' is not a condition"),
        ("N < [1, 2]", "a list goes only after 'in'"),
        ("", "empty expression"),
    ],
)
def test_bad_filters_exit_2_with_one_line(table_csv, capsys, expr, message):
    argv = ["predict", "--csv", str(table_csv), *MAP, "--where", expr, "--flops", "1e21"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --where") and message in err and err.count("\n") == 1


def test_holdout_specs_and_their_errors(table_csv, tmp_path):
    t = _table(table_csv)
    mask, desc = holdout_rows(t, "N > 4e8")
    assert np.array_equal(mask, t.N > 4e8) and desc == "runs where N > 4e8"
    names = tmp_path / "held.txt"
    names.write_text("# the two largest c4 runs\nc4-18\n\nc4-19\n")
    mask, desc = holdout_rows(t, f"@{names}")
    assert sorted(np.array(t.run_id)[mask]) == ["c4-18", "c4-19"] and "listed in" in desc
    assert holdout_rows(t, str(names))[0].sum() == 2  # a plain existing path works too
    assert np.array_equal(holdout_rows(t, "1e19")[0], t.C > 1e19)
    c4 = where(t, 'data == "c4"')
    with pytest.raises(UserError, match="only 4 run\\(s\\) left to fit a law with 5 parameters"):
        holdout_rows(c4, f"N > {float(np.sort(c4.N)[3])!r}")
    with pytest.raises(UserError, match="no run is held out"):
        holdout_rows(t, "N > 1e15")
    names.write_text("c4-18\nnot-a-run\n")
    with pytest.raises(UserError, match="'not-a-run'"):
        holdout_rows(t, f"@{names}")


@pytest.mark.parametrize("command", ["predict", "analyze"])
def test_holdout_leaving_too_few_runs_exits_2(table_csv, capsys, command):
    argv = [command, "--csv", str(table_csv), *MAP, "--holdout", "loss > 0", "--flops", "1e21"]
    assert main(argv if command == "predict" else argv[:-2]) == 2
    err = capsys.readouterr().err
    assert "only 0 run(s) left to fit a law with 5 parameters" in err and err.count("\n") == 1
    assert main([command, "--csv", str(table_csv), *MAP, "--holdout", "size > 1"]) == 2
    assert "unknown column 'size'" in capsys.readouterr().err


def _json(capsys, argv):
    assert main([*argv, "--json", "--resamples", "60"]) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_flops_honours_holdout_and_where(table_csv, capsys):
    base = ["predict", "--csv", str(table_csv), *MAP, "--flops", "1e21"]
    held = _json(capsys, [*base, "--where", 'data == "c4"', "--holdout", "C > 3e19"])
    kept = _json(capsys, [*base, "--where", 'data == "c4" and C < 3e19'])
    assert held["n_fit"] == kept["n_fit"] == 15 and held["backtest"]["n_test"] == 5
    assert held["params"] == kept["params"]  # the prediction is fitted without the held-out runs
    assert held["prediction"] == kept["prediction"]
    full = _json(capsys, [*base, "--where", 'data == "c4"'])
    assert full["n_fit"] == 20 and full["params"] != held["params"]
    pile = _json(capsys, [*base, "--where", 'data == "pile"'])
    ratio = pile["prediction"]["loss"]["estimate"] / full["prediction"]["loss"]["estimate"]
    assert 1.01 < ratio < 1.05  # the pile runs are 3% worse, and the filter fits only them


def test_jsonl_table_and_map_alias_match_csv(table_csv, tmp_path, capsys):
    rows = _rows()
    jl = tmp_path / "runs.jsonl"
    jl.write_text(
        "\n".join(
            json.dumps(
                {
                    "name": r["name"],
                    "model": {"N": r["Model Size"]},
                    "tokens": r["tokens"],
                    "loss": r["loss"],
                    "cfg": {"data": r["data"], "lr": r["lr"]},
                }
            )
            for r in rows
        )
        + "\n"
    )
    jmap = ["--map", "N=model.N", "--map", "D=tokens", "--map", "loss=loss", "--map", "run=name"]
    a = _json(
        capsys,
        ["predict", "--table", str(jl), *jmap, "--where", 'cfg.data == "c4"', "--flops", "1e21"],
    )
    b = _json(
        capsys,
        [
            "predict",
            "--csv",
            str(table_csv),
            *MAP,
            "--map",
            "corpus=data",
            "--where",
            'corpus == "c4"',
            "--flops",
            "1e21",
        ],
    )
    assert a["n_fit"] == b["n_fit"] == 20
    assert a["params"] == pytest.approx(b["params"], rel=1e-12)


def test_predict_at_many_points_from_one_fit(table_csv, tmp_path, capsys):
    base = ["predict", "--csv", str(table_csv), *MAP, "--where", 'data == "c4"']
    pts = tmp_path / "pts.csv"
    pts.write_text("name,N,D\nsmall,1e8,2e9\nbig,7e10,1.4e12\n")
    many = _json(capsys, [*base, "--at", str(pts)])
    one = _json(capsys, [*base, "--params", "7e10", "--tokens", "1.4e12"])
    assert [p["name"] for p in many["predictions"]] == ["small", "big"]
    assert many["predictions"][1]["loss"] == one["prediction"]["loss"]
    assert many["predictions"][0]["loss"]["estimate"] > many["predictions"][1]["loss"]["estimate"]
    flops = tmp_path / "budgets.jsonl"
    flops.write_text('{"C": 1e21}\n{"C": 1e23}\n')
    opt = _json(capsys, [*base, "--at", str(flops)])
    assert [round(p["flops"]) for p in opt["predictions"]] == [1e21, 1e23]
    assert opt["predictions"][1]["N_opt"]["estimate"] > opt["predictions"][0]["N_opt"]["estimate"]
    assert main([*base, "--at", str(pts), "--resamples", "60"]) == 0
    text = capsys.readouterr().out
    assert "fit on 20 runs" in text and "big" in text and "loss [90% predictive]" in text


def test_points_table_marks_the_points_the_data_cannot_support():
    from analysis.laws.points import points_lines

    def point(name, d, ok, why=""):
        loss = {"estimate": 1.0, "lo": 0.9, "hi": 1.1}
        terms = {"distance_decades": d, "supported": ok, "why_unsupported": why}
        return dict(name=name, params=1e6, tokens=1e7, flops=6e13, loss=loss, interval_terms=terms)

    preds = [point("near", 0.5, True), point("far", 2.03, False, "distance")]
    preds.append(point("epochs", 0.4, False, "overfitting"))
    lines = points_lines(preds, "nd", "nats/token", 0.9, reach=0.61)
    assert [x.split()[-1] for x in lines[2:5]] == ["0.50", "2.03*", "0.40!"]
    assert lines[5].startswith(
        "* the data cannot support this distance (your back-tests reach 0.61"
    )
    assert lines[6].startswith("! this point repeats its data past the epochs where the fitted")
    assert len(points_lines(preds[:1], "nd", "nats/token", 0.9)) == 3  # no notes when all hold


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("D,loss\n1e9,3\n", "needs a column N (with D or C) or C"),
        ("N\n1e9\n", "has N but no D or C column"),
        ("N,D\n1e9,-5\n", "'D' value '-5' is not a positive number"),
        ("N,D\n", "no points"),
    ],
)
def test_bad_points_files_exit_2(table_csv, tmp_path, capsys, content, message):
    pts = tmp_path / "pts.csv"
    pts.write_text(content)
    assert main(["predict", "--csv", str(table_csv), *MAP, "--at", str(pts)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_map_and_conflicting_targets_exit_2(table_csv, capsys):
    base = ["predict", "--csv", str(table_csv), *MAP]
    assert main([*base, "--map", "my col=data", "--flops", "1e21"]) == 2
    assert "'my col' is not a usable name" in capsys.readouterr().err
    assert main([*base, "--map", "N=D", "--flops", "1e21"]) == 2  # the last one silently won
    assert "--map N= given twice" in capsys.readouterr().err
    for flag in (["--loss", "bpb"], ["--flops-kind", "exact"], ["--n-kind", "nonembed"]):
        assert main([*base, *flag, "--flops", "1e21"]) == 2  # they were ignored on a table
        assert "applies to a sweep directory's results.jsonl only" in capsys.readouterr().err
    assert main([*base, "--flops", "1e21", "--at", "x.csv"]) == 2
    assert "not --flops and --at" in capsys.readouterr().err
    assert main([*base, "--where", 'data == "wiki"', "--flops", "1e21"]) == 2
    assert "no row matches (of 40)" in capsys.readouterr().err


def test_results_jsonl_fields_are_filterable(tmp_path, capsys):
    sw = isoflop_sweep(budgets=(1e15, 1e16, 1e17), n_sizes=5, rng=np.random.default_rng(0))
    recs = [
        {
            "run_id": f"r{i:03d}",
            "cell": {"budget": float(sw["budget"][i])},
            "N_total": float(sw["N"][i]),
            "D": float(sw["D"][i]),
            "C_6ND": float(sw["C"][i]),
            "final_val_loss": float(sw["loss"][i]),
            "status": "done",
        }
        for i in range(sw["N"].size)
    ]
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    out = _json(
        capsys,
        [
            "predict",
            str(tmp_path),
            "--where",
            "cell.budget < 1e17",
            "--holdout",
            'run in ("r009", "r008")',
            "--flops",
            "1e18",
        ],
    )
    assert out["n_runs"] == 10 and out["n_fit"] == 8
    assert sorted(r["run_id"] for r in out["backtest"]["runs"]) == ["r008", "r009"]


def test_a_computed_c_equal_to_its_budget_up_to_rounding_compares_equal():
    """C = 6ND lands a rounding error off the budget (1.6e18 * (1 + 1e-16)): `C <= 1.6e18` and
    `--holdout 1.6e18` must treat those runs as at the budget (5 of Porian's runs at 1.6e18 were
    held out with the larger budgets)."""
    from analysis.tables import RunTable

    N = np.array([1e7, 2e7, 4e7, 1e8, 2e8, 4e8])
    C = np.array([1.6e18, 1.6e18, 1.6e18, 6.4e18, 6.4e18, 6.4e18])
    D = np.round(C / (6 * N))  # whole tokens, as tables list them
    C6 = 6 * N * D
    assert np.any(C6[:3] != 1.6e18)  # the rounding the filter must forgive
    t = RunTable([f"r{i}" for i in range(6)], N, D, C6, np.full(6, 3.0), np.full(6, np.nan),
                 [None] * 6)  # fmt: skip
    assert len(where(t, "C <= 1.6e18")) == 3 and len(where(t, "C > 1.6e18")) == 3
    assert len(where(t, "C == 1.6e18")) == 3 and len(where(t, "C != 1.6e18")) == 3
    mask, _ = holdout_rows(t, "1.6e18", n_params=2)
    assert mask.tolist() == [False] * 3 + [True] * 3
    with pytest.raises(UserError, match="no row matches"):
        where(t, "C < 1.6e18")  # the runs at 1.6e18 are not below it


def test_holdout_largest_skips_a_top_budget_of_one_run():
    """Epoch's Chinchilla table tops out at a budget of one run: `--holdout largest` back-tested
    that one run (1/1 inside, [ok]); it now holds out the largest budget with >= 3 sizes."""
    from analysis.tables import RunTable

    s = isoflop_sweep(budgets=(1e18, 1e19, 1e20), n_sizes=5, rng=np.random.default_rng(0))
    N, D, C, L = (np.append(s[k], v) for k, v in (("N", 3e9), ("D", 3e10), ("C", 5.4e20),
                                                    ("loss", 2.0)))  # fmt: skip
    n = N.size
    t = RunTable([f"r{i}" for i in range(n)], N, D, C, L, np.full(n, np.nan), [None] * n)
    mask, desc = holdout_rows(t, "largest")
    assert mask.sum() == 5 and not mask[-1]
    assert desc.startswith("runs at the largest budget with >= 3 model sizes (1e+20")


def test_a_mapped_c_that_is_not_6nd_is_said(tmp_path, capsys):
    f = tmp_path / "t.csv"
    rows = [(n, 20 * n, 1.4 * 6 * n * 20 * n, 3.0 - 0.1 * i) for i, n in enumerate([1e8, 2e8, 4e8])]
    f.write_text("N,D,C,loss\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    from analysis.cli_source import note_flop_convention
    from analysis.table_file import load_table

    mapping = {"N": "N", "D": "D", "C": "C", "loss": "loss"}
    t = load_table(str(f), mapping)
    note_flop_convention(t, "the mapped C")
    assert any(n.startswith("the mapped C is 1.4x 6ND (median)") for n in t.notes)
    t2 = load_table(str(f), {"N": "N", "D": "D", "loss": "loss"})
    note_flop_convention(t2, "the mapped C")
    assert not any("mapped C" in n for n in t2.notes)
