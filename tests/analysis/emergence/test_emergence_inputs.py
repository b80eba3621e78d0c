"""Emergence on published-style tables: alignment of paired metrics, resolution, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.emergence.curves import Curve
from analysis.emergence.flagger import analyze_curves
from analysis.emergence.tables import curves_from_table, parse_metric_flag
from scaling.cli import main
from scaling.errors import UserError

EM = [0.0, 0.0005, 0.001, 0.0005, 0.001, 0.0015, 0.4, 0.45, 0.5, 0.55]
TOK = [0.3, 0.31, 0.3, 0.32, 0.31, 0.32, 0.8, 0.82, 0.84, 0.86]


def _csv(tmp_path, rows, header="Model,Family,C,em,tok", name="t.csv"):
    p = tmp_path / name
    p.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return str(p)


def _rows(em=EM, tok=TOK):
    return [
        (f"m{i}", "F", 10 ** (20 + i / 3), e, t)
        for i, (e, t) in enumerate(zip(em, tok, strict=True))
    ]


def _spec(*metrics):
    spec = {"model": "Model", "family": "Family", "compute": "C", "metrics": {}}
    for text in metrics:
        col, opts = parse_metric_flag(text)
        spec["metrics"][col] = opts
    return spec


def _run(path, *metrics):
    res = analyze_curves(curves_from_table([path], _spec(*metrics)))
    return {r["metric"]: r for r in res}


def test_gap_in_the_paired_metric_makes_the_check_na(tmp_path):
    full = _run(_csv(tmp_path, _rows()), "em:chance=0:n=2000:pair=tok", "tok")
    assert full["em"]["verdict"] == "emergent"
    assert full["em"]["mirage"]["any_companion_jumps"]
    tok = [*TOK]
    tok[1] = ""  # the companion lacks m1: its points shift against the exact match's
    gap = _run(_csv(tmp_path, _rows(tok=tok)), "em:chance=0:n=2000:pair=tok", "tok")
    assert gap["em"]["verdict"] == "emergent"  # not emergent_metric_induced
    assert not gap["em"]["mirage"]["checked"]
    assert "20.333" in gap["em"]["mirage"]["not_checked"]["tok"]


def test_a_gap_after_the_tested_points_still_checks(tmp_path):
    tok = [*TOK]
    tok[9] = ""
    res = _run(_csv(tmp_path, _rows(tok=tok)), "em:chance=0:n=2000:pair=tok", "tok")
    assert res["em"]["mirage"]["checked"] and res["em"]["mirage"]["any_companion_jumps"]


@pytest.mark.parametrize("onset", [1, 2])
def test_onset_with_fewer_than_3_earlier_points_is_insufficient_resolution(onset):
    y = np.array([0.0, 0.0, 0.0, 0.5, 0.55, 0.6, 0.65])
    y = np.concatenate([y[3 - onset :], [0.7] * (3 - onset)])
    c = Curve("t", "em", "F", 10 ** np.arange(20.0, 27.0), y, n_items=np.full(7, 2000), chance=0)
    (r,) = analyze_curves([c])
    assert r["onset_index"] == onset
    assert r["verdict"] == "insufficient_resolution", r["reason"]
    assert "fewer than 3 earlier points" in r["reason"]


def _fails(capsys, argv: list[str], *needles: str) -> None:
    """The CLI exits 2 (UserError, no traceback) with a message containing every needle."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for s in needles:
        assert s in err, err


def _cli(path, *extra, out="o"):
    m = ["--map", "model=Model", "--map", "family=Family", "--map", "compute=C"]
    return ["emergence", "--csv", path, *m, *extra, "--out", out, "--no-figures"]


def test_table_inputs_that_would_mislead_exit_2(tmp_path, capsys):
    em = ["--metric", "em:chance=0:n=2000"]
    dup = _rows() + [("m9", "F", 1e23, 0.0, 0.3)]
    _fails(capsys, _cli(_csv(tmp_path, dup), *em), "'m9'", "more than one row")
    same = [(m, f, 1e21, e, t) for m, f, _, e, t in _rows()]
    _fails(capsys, _cli(_csv(tmp_path, same), *em), "family 'F'", "1e+21", "one score per scale")
    pct = [(m, f, c, 100 * e, t) for m, f, c, e, t in _rows()]
    _fails(capsys, _cli(_csv(tmp_path, pct), *em), "'em'", "40.0", "scale=100")
    neg = [(m, f, c, -0.2, t) for m, f, c, _, t in _rows()]
    _fails(capsys, _cli(_csv(tmp_path, neg), *em), "'em'", "-0.2", "[0, 1]")
    ok = _csv(tmp_path, _rows())
    _fails(capsys, _cli(ok, "--metric", "em:chance=1:n=2000"), "chance=1", "[0, 1)")
    for bad in ("abc", "-1", "0", "nan"):
        args = _cli(ok, *em, "--map", f"compute_multiplier={bad}")
        _fails(capsys, args, f"compute_multiplier={bad!r}", "positive number")
    head = tmp_path / "head.csv"
    head.write_text("Model,Family,C,em\n")
    _fails(capsys, _cli(str(head), *em), "has no rows")
    args = ["emergence", "--csv", ok, "--map", "model=Model", "--map", "compute=C", *em]
    _fails(capsys, [*args, "--families", "F", "--out", "o"], "--map family=COLUMN")


def test_pair_without_its_own_metric_flag_and_all_nan_note(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok = _csv(tmp_path, _rows())
    assert main(_cli(ok, "--metric", "em:chance=0:n=2000:pair=tok")) == 0
    assert "companion jumps at onset: True" in capsys.readouterr().out
    nan = _csv(tmp_path, _rows(em=["nan"] * 10))
    assert main(_cli(nan, "--metric", "em:chance=0:n=2000", "--metric", "tok")) == 0
    assert "column 'em' has fewer than 2 numeric scores" in capsys.readouterr().err


def test_bounded_error_rate_is_scored_as_one_minus_error(tmp_path, capsys):
    err = tmp_path / "err.csv"
    err.write_text(
        "Model,Family,C,err\n"
        + "".join(f"m{i},F,{c},{1 - e}\n" for i, (_, _, c, e, _) in enumerate(_rows()))
    )
    metric = {"chance": 1.0, "n_items": 2000, "higher_is_better": False}
    spec = {"model": "Model", "family": "Family", "compute": "C", "metrics": {"err": metric}}
    (r,) = analyze_curves(curves_from_table([str(err)], spec))
    assert r["verdict"] == "emergent", r["reason"]
    assert np.allclose(r["score"], EM)
    assert "1 - err" in capsys.readouterr().err
    spec["metrics"]["err"]["chance"] = 0.0  # guessing error 0: chance accuracy 1, no room
    with pytest.raises(UserError, match="accuracy is 1"):
        curves_from_table([str(err)], spec)


def _rec(i: int, em, n=2000) -> dict:
    ev = {"scores": {"copy": {"1": {"exact_match": em, "n_items": n}}}}
    ev["chance"] = {"copy": {"exact_match": 0.0}}
    c = 10.0 ** (20 + i / 3)
    return {
        "run_id": f"r{i}",
        "status": "done",
        "N_total": 1e6 * (i + 1),
        "D": 1e9,
        "C_exact": c,
        "final_val_loss": 3.0 - 0.1 * i,
        "evals": ev,
    }


def _sweep(tmp_path, recs):
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return str(tmp_path)


def test_sweep_inputs(tmp_path, capsys):
    recs = [_rec(i, e) for i, e in enumerate(EM)]
    recs[3]["evals"]["scores"]["copy"]["1"]["exact_match"] = float("nan")
    d = _sweep(tmp_path, recs)
    assert main(["emergence", d, "--no-figures"]) == 0
    assert "1 non-finite eval score(s) dropped (r3 copy/exact_match)" in capsys.readouterr().err
    _fails(capsys, ["emergence", _sweep(tmp_path, [_rec(0, 0.1, n=0)])], "r0", "n_items=0")
    no_n = _rec(0, 0.1)  # a block without n_items was scored as 1 item, not refused
    del no_n["evals"]["scores"]["copy"]["1"]["n_items"]
    _fails(capsys, ["emergence", _sweep(tmp_path, [no_n])], "r0", "n_items=None")
    _fails(capsys, ["emergence", _sweep(tmp_path, [_rec(0, 40.0)])], "r0", "40.0", "[0, 1]")


@pytest.mark.parametrize(
    ("evals", "names"),
    [
        ("oops", ["evals is 'oops'"]),
        ({"scores": [1, 2]}, ["evals.scores is [1, 2]"]),
        ({"scores": {"copy": {"1": [0.2]}}}, ["evals.scores['copy']['1'] is [0.2]"]),
        ({"scores": {"copy": {"zero": {"exact_match": 0.2}}}}, ["'zero'"]),
        ({"scores": {"copy": {"1": {"exact_match": "0.2"}}}}, ["['exact_match'] is '0.2'"]),
        ({"scores": {"copy": {"1": {"exact_match": True}}}}, ["['exact_match'] is True"]),
        (
            {"scores": {"copy": {"1": {"exact_match": 0.2, "n_items": 9}}}, "chance": "x"},
            ["evals.chance is"],
        ),
        (
            {
                "scores": {"copy": {"1": {"exact_match": 0.2, "n_items": 9}}},
                "chance": {"copy": {"exact_match": "?"}},
            },
            ["evals.chance['copy']['exact_match'] is '?'"],
        ),  # fmt: skip
    ],
)
def test_malformed_evals_block_is_one_error_line(tmp_path, capsys, evals, names):
    """An evals block off the contract's shape: exit 2 naming the run and the part, no traceback
    (a string, a list, a non-numeric shot count or score, a non-object chance block)."""
    rec = _rec(0, 0.1)
    rec["evals"] = evals
    _fails(capsys, ["emergence", _sweep(tmp_path, [rec]), "--no-figures"], "run r0", *names)


def test_unreadable_scale_or_score_cells_are_noted(tmp_path, capsys):
    """A typo in the compute column ('1OO'), a negative or blank compute, or a typo in a score
    ('0.9o') left those models out of every curve without a word; each column now gets one note.
    A blank or NA score is a model not scored: no note."""
    rows = [list(r) for r in _rows()]
    rows[1] = ["m1", "F", "1OO", EM[1], TOK[1]]
    rows[2] = ["m2", "F", -5, EM[2], TOK[2]]
    rows[3] = ["m3", "F", 1e21, "0.9o", TOK[3]]
    rows[4] = ["m4", "F", 10 ** (20 + 4 / 3), "NA", ""]
    spec = {"model": "Model", "family": "Family", "compute": "C",
            "metrics": {"em": {"chance": 0.0, "n_items": 500}, "tok": {}}}  # fmt: skip
    (em, tok) = curves_from_table([_csv(tmp_path, rows)], spec)
    err = capsys.readouterr().err
    assert "note: 2 row(s) have no positive number in column 'C' ('1OO', '-5')" in err, err
    assert "note: 1 row(s) have no number in column 'em' ('0.9o')" in err, err
    assert "column 'tok'" not in err and "'NA'" not in err
    assert len(em.scale) == len(EM) - 4 and len(tok.scale) == len(TOK) - 3


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        ("n = 100", "unknown key 'n'; valid keys: chance, majority, n_items"),
        ("n_items = 0", "n_items = 0: give the positive whole number"),
        ('n_items = "abc"', "n_items = 'abc'"),
        ("n_items = 2.5", "n_items = 2.5"),
        ("scale = 0", "scale = 0: give a positive number"),
        ("scale = -100", "scale = -100: give a positive number"),
        ('scale = "x"', "scale = 'x'"),
        ('companions = "tok"', "companions = 'tok': give a list of column names"),
        ('higher_is_better = "no"', "higher_is_better = 'no': use true or false"),
        ('shots = "x"', "shots = 'x'"),
    ],
)
def test_toml_metric_options_are_checked(tmp_path, capsys, option, needle):
    """A [metrics.COL] table skips the --metric flag's checks: `n = 100` (the flag's name) made
    the metric silently continuous, n_items 0 gave NaN intervals, a string n_items or scale and
    scale 0 were tracebacks, 'no' read as true, and a string companions as one per character."""
    em = "chance = 0.0\n" + ("" if option.startswith("n") else "n_items = 500\n") + option
    _fails(capsys, _toml_map_argv(tmp_path, "", em), '[metrics."em"]', needle)


def _toml_map_argv(tmp_path, top: str, em: str) -> list[str]:
    """`scaling emergence` on the test CSV with a TOML map: `top` lines, then [metrics.em]."""
    spec = tmp_path / "spec.toml"
    spec.write_text(f'model = "Model"\nfamily = "Family"\ncompute = "C"\n{top}[metrics.em]\n{em}\n')
    csv_path = _csv(tmp_path, _rows())
    return [
        "emergence",
        "--csv",
        csv_path,
        "--map",
        str(spec),
        "--no-figures",
        "--out",
        str(tmp_path / "o"),
    ]


def test_a_boolean_rate_in_a_toml_map_exits_2(tmp_path, capsys):
    """`majority = true` was read as the rate 1 (and false as 0): bools are not rates."""
    argv = _toml_map_argv(tmp_path, "", "chance = 0.0\nn_items = 500\nmajority = true")
    _fails(capsys, argv, "metric 'em'", "majority=True")


def test_families_in_a_toml_map_must_be_names(tmp_path, capsys):
    """`families = 3` in a TOML map was a TypeError traceback ('can only join an iterable')."""
    argv = _toml_map_argv(tmp_path, "families = 3\n", "chance = 0.0\nn_items = 500")
    _fails(capsys, argv, "families = 3: give family names")


def test_runs_without_a_compute_value_are_noted(tmp_path, capsys):
    """Runs with evals but no compute were left out without a word, and when none had one the
    command said 'no run ... has an evals block', which they had."""
    recs = [_rec(i, e) for i, e in enumerate(EM)]
    recs[2].pop("C_exact")
    assert main(["emergence", _sweep(tmp_path, recs), "--no-figures"]) == 0
    assert "note: 1 run(s) with evals have no positive compute value" in capsys.readouterr().err
    for r in recs:
        r.pop("C_exact", None)
    assert main(["emergence", _sweep(tmp_path, recs), "--no-figures"]) == 0
    out = capsys.readouterr()
    assert f"note: {len(EM)} run(s) with evals have no positive compute value" in out.err
    assert "--scale params may have it" in out.err and "has an evals block and a compute" in out.out


def test_an_unknown_map_key_is_refused(tmp_path, capsys):
    """`--map compute_multipler=1e21` (a typo) was ignored: the onsets came out 21 decades off
    with exit 0. An unknown key of the column map now exits 2 naming it and the valid keys."""
    argv = ["emergence", "--csv", _csv(tmp_path, _rows()), "--map", "model=Model",
            "--map", "compute=C", "--map", "compute_multipler=1e21", "--metric", "em:chance=0:n=9",
            "--out", str(tmp_path / "o"), "--no-figures"]  # fmt: skip
    _fails(capsys, argv, "--map: unknown key 'compute_multipler'", "compute_multiplier")


def test_families_with_one_slug_keep_both_figures(tmp_path):
    """Families 'F x' and 'F_x' share a file-name slug: the second figure overwrote the first,
    and both curves named the same PNG."""
    rows = [(f"m{i}{k}", fam, 10 ** (20 + i / 3), e, t) for k, fam in enumerate(("F x", "F_x"))
            for i, (e, t) in enumerate(zip(EM, TOK, strict=True))]  # fmt: skip
    spec = {"model": "Model", "family": "Family", "compute": "C",
            "metrics": {"em": {"chance": 0.0, "n_items": 2000}}}  # fmt: skip
    results = analyze_curves(curves_from_table([_csv(tmp_path, rows)], spec))
    from analysis.emergence.report import write_report

    report = write_report(results, tmp_path / "o", scale="compute", source="t")
    figs = [c["figure"] for c in report["curves"] if c.get("figure")]
    assert len(figs) == 2 and len(set(figs)) == 2, figs
    assert all(Path(f).is_file() for f in figs)


@pytest.mark.parametrize(
    ("metric", "needles"),
    [
        ("em:chance=0.25", ("'em': chance=0.25 without n", "add :n=N")),
        ("em:n=2000", ("'em': n=2000 without chance", "add :chance=C")),
        ("em:majority=0.6", ("'em': majority=0.6 without chance and n", ":chance=C:n=N")),
    ],
)
def test_a_rate_given_only_half_its_options_exits_2(tmp_path, capsys, metric, needles):
    """A chance level without an item count (or the reverse, or a majority rate without both)
    made the metric silently continuous: not_tested, its chance level never used."""
    _fails(
        capsys, _cli(_csv(tmp_path, _rows()), "--metric", metric, out=str(tmp_path / "o")), *needles
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["--map", "toml", "toml-column"])
def test_a_metrics_entry_that_is_not_a_table_exits_2(tmp_path, capsys, where):
    """`--map metrics=em` (or `metrics = 5` in a TOML map) was a ValueError traceback, and a TOML
    `[metrics] em = 5` beside `--metric em:...` a TypeError."""
    args = _cli(_csv(tmp_path, _rows()), "--metric", "em:chance=0:n=9", out=str(tmp_path / "o"))
    if where == "--map":
        _fails(capsys, [*args, "--map", "metrics=em"], "metrics = 'em' is not a table")
        return
    spec = tmp_path / "spec.toml"
    table = "metrics = 5\n" if where == "toml" else "[metrics]\nem = 5\n"
    spec.write_text(f'model = "Model"\nfamily = "Family"\ncompute = "C"\n{table}')
    argv = ["emergence", "--csv", _csv(tmp_path, _rows()), "--map", str(spec),
            "--metric", "em:chance=0:n=9", "--out", str(tmp_path / "o")]  # fmt: skip
    _fails(
        capsys, argv, "metrics = 5 is not a table" if where == "toml" else "= 5: expected a table"
    )


def test_a_metric_without_a_shot_count_prints_a_dash(tmp_path, capsys):
    """The verdict table printed the Python value None in the shots column."""
    argv = _cli(_csv(tmp_path, _rows()), "--metric", "em:chance=0:n=2000", out=str(tmp_path / "o"))
    assert main(argv) == 0
    (row,) = [ln.split() for ln in capsys.readouterr().out.splitlines() if ln.startswith("F ")]
    assert row[:5] == ["F", "em", "em", "-", "emergent"]
