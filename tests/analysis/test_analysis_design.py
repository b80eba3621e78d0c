"""Design detection: IsoFLOP sweeps, size ladders and N x D grids get only the analyses they
support; checks that a design cannot answer say "not applicable" instead of [ok]."""

import json
from pathlib import Path

import numpy as np

from analysis.checks import main as checks_main
from analysis.checks import study_checks
from analysis.design import detect_design
from analysis.laws.core import joint_loss
from analysis.laws.select import holdout_rows, where
from analysis.laws.simulate import CHINCHILLA_TRUTH, isoflop_sweep
from analysis.report import fits_json, run_analysis
from analysis.table_file import load_table
from analysis.tables import RunTable
from scaling.cli import main


def _table(N, D, budget=None, seed=0):
    N, D = np.asarray(N, float), np.asarray(D, float)
    rng = np.random.default_rng(seed)
    loss = joint_loss(CHINCHILLA_TRUTH, N, D) * np.exp(0.005 * rng.standard_normal(N.size))
    b = np.full(N.size, np.nan) if budget is None else np.asarray(budget, float)
    ids = [f"r{i}" for i in range(N.size)]
    return RunTable(ids, N, D, 6 * N * D, loss, b, [None] * N.size, source="synthetic")


def _grid():
    N, M = np.meshgrid(np.geomspace(2e7, 1e9, 5), [5, 10, 20, 50, 100])
    return _table(N.ravel(), (N * M).ravel())


def test_synthetic_designs_are_told_apart():
    sw = isoflop_sweep(budgets=(1e18, 1e19, 1e20), n_sizes=5)
    assert detect_design(_table(sw["N"], sw["D"], sw["budget"])).kind == "isoflop"
    assert detect_design(_table(sw["N"], sw["D"])).kind == "isoflop"  # budgets from C alone
    N = np.geomspace(1e7, 1e9, 6)
    ladder = detect_design(_table(N, 20 * N))
    assert ladder.kind == "ladder" and not ladder.supports("approach2")
    assert not ladder.supports("allocation") and "~20 tok/param" in ladder.description
    grid = detect_design(_grid())
    assert grid.kind == "grid" and grid.supports("joint") and not grid.supports("approach2")
    assert "5 model sizes x 5 tokens-per-parameter" in grid.description
    rng = np.random.default_rng(3)
    scattered = _table(10 ** rng.uniform(7, 9, 30), 10 ** rng.uniform(9, 11, 30))
    assert detect_design(scattered).kind == "scattered"


def test_published_designs(shared_data):
    olmo = load_table(
        shared_data / "bhagia2024_olmo_ladder_final.csv",
        {"N": "N", "D": "D", "loss": "loss_c4", "run": "run"},
    )
    d = detect_design(where(olmo, 'role == "ladder"'))
    assert d.kind == "grid" and "5 model sizes x 5" in d.description
    porian = load_table(
        shared_data / "porian2024_isoflop.csv", {"N": "N", "D": "D", "loss": "loss"}
    )
    sub = where(porian, 'config_id == "rw_base_short_chinchilla_standard_val"')
    assert detect_design(sub).kind == "isoflop"
    epoch = load_table(
        shared_data / "epoch_chinchilla_svg_extracted_data.csv",
        {"N": "Model Size", "C": "Training FLOP", "loss": "loss"},
    )
    assert detect_design(epoch).kind == "isoflop"


def test_grid_runs_no_approach2_and_checks_say_not_applicable(tmp_path, capsys):
    t = _grid()
    mask, desc = holdout_rows(t, "largest")  # the largest model size, not an invented budget
    assert mask.sum() == 5 and np.all(t.N[mask] == t.N.max()) and "largest model size" in desc
    res = run_analysis(t, n_resamples=40, need_approach2=True)  # no exit: the grid has no budgets
    assert "approach2" not in res and res["design"]["kind"] == "grid"
    assert any(n.startswith("Approach 2 skipped: not applicable") for n in res["notes"])
    assert res["backtest"]["n_test"] == 5
    fits = json.loads(json.dumps(fits_json(res)))
    checks = {name: (ok, detail) for name, ok, detail in study_checks(fits)}
    assert checks["IsoFLOP minima inside the grid"][0] is None
    assert checks["frontier falls with compute"][1].startswith("not applicable: N x D grid")
    path = tmp_path / "fits.json"
    path.write_text(json.dumps(fits))
    checks_main([str(path), "--max-backtest-error", "0.5"])
    out = capsys.readouterr().out
    assert "[n/a] IsoFLOP minima inside the grid: not applicable" in out and "[ok]" in out


def test_ladder_notes_that_allocation_is_not_identified():
    N = np.geomspace(1e7, 1e9, 8)
    res = run_analysis(_table(N, 20 * N), n_resamples=40, holdout=None)
    assert res["design"]["kind"] == "ladder"
    assert any("not identified" in n for n in res["notes"])
    checks = {name: ok for name, ok, _ in study_checks(json.loads(json.dumps(fits_json(res))))}
    assert checks["allocation exponents identified"] is None
    # no compute-optimal point is claimed (they printed "nan [nan, nan]" and an N_opt ~ C^a)
    assert res["compute_optimal"] == []
    from analysis.markdown import report_md
    from analysis.summary import summary_lines

    text = "\n".join(summary_lines(res))
    assert "allocation not identified" in text and "N_opt ~ C^" not in text and "nan" not in text
    assert "Allocation: not identified by this design" in report_md(res, {}, Path("."))


def test_predict_at_a_budget_on_a_ladder_exits_2_before_fitting(tmp_path, capsys):
    from scaling.cli import main

    N = np.geomspace(1e7, 1e9, 8)
    t = _table(N, 20 * N)
    f = tmp_path / "ladder.csv"
    rows = zip(t.N, t.D, t.loss, strict=True)
    f.write_text("N,D,loss\n" + "".join(f"{n},{d},{y}\n" for n, d, y in rows))
    base = ["predict", "--csv", str(f), "--map", "N=N", "--map", "D=D", "--map", "loss=loss"]
    assert main([*base, "--flops", "1e21"]) == 2
    err = capsys.readouterr().err
    assert "size ladder" in err and "--params N --tokens D" in err


def test_analyze_olmo_ladder_csv_end_to_end(shared_data, tmp_path, capsys):
    """Without --no-approach2: a grid is not asked for IsoFLOP budgets it does not have."""
    argv = [
        "analyze",
        "--csv",
        str(shared_data / "bhagia2024_olmo_ladder_final.csv"),
        "--map",
        "N=N",
        "--map",
        "D=D",
        "--map",
        "loss=loss_c4",
        "--map",
        "run=run",
        "--where",
        'role == "ladder"',
        "--resamples",
        "40",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("Design: N x D grid: 5 model sizes x 5")
    fits = json.loads((tmp_path / "fits.json").read_text())
    assert "approach2" not in fits and fits["design"]["kind"] == "grid"
    assert {r["run_id"].split("-")[0] for r in fits["backtest"]["runs"]} == {"3B"}
    assert not (tmp_path / "isoflop.png").exists()


def test_approach2_on_two_budgets_gives_no_ci():
    """A line through 2 minima: the bootstrap gave a zero-width CI (a = 0.774 [0.774, 0.774])."""
    from analysis.summary import summary_lines

    s = isoflop_sweep(budgets=(1e18, 1e19), n_sizes=5, rng=np.random.default_rng(0))
    n = s["N"].size
    t = RunTable([f"r{i}" for i in range(n)], s["N"], s["D"], s["C"], s["loss"], s["budget"],
                 [None] * n)  # fmt: skip
    res = run_analysis(t, n_resamples=40, holdout=None, intervals=False)
    assert res["approach2_ci"]["a"]["lo"] is None
    assert any("Approach 2 on 2 budgets" in x for x in res["notes"])
    line = next(x for x in summary_lines(res) if "Approach 2" in x)
    assert line.endswith("(no CI: 2 budgets)")


def test_one_size_or_one_token_count_identifies_no_allocation():
    """One model size (only D varies) or one token count (only N varies) was "scattered" and got
    a compute-optimal allocation: N_opt 1.16 parameters, 1.2e18 tokens per parameter."""
    from analysis.summary import summary_lines

    one_size = _table(np.full(6, 1e8), 1e8 * np.array([5, 10, 20, 40, 80, 160]))
    one_length = _table(np.geomspace(1e6, 3e8, 6), np.full(6, 1e9))
    for t, kind, why in (
        (one_size, "one_size", "every run has the same model size"),
        (one_length, "one_length", "every run has the same token count"),
    ):
        d = detect_design(t)
        assert d.kind == kind and not d.supports("allocation") and d.no_allocation == why
        res = run_analysis(t, n_resamples=20, intervals=False)
        assert res["compute_optimal"] == [] and "N_opt" not in "\n".join(summary_lines(res))
        checks = {n: (ok, s) for n, ok, s in study_checks(json.loads(json.dumps(fits_json(res))))}
        na = f"not applicable: {d.description} ({why})"
        assert checks["allocation exponents identified"] == (None, na)
    mask, desc = holdout_rows(one_size, "largest")  # not every run: the largest token count
    assert mask.sum() == 1 and one_size.D[mask][0] == one_size.D.max() and "token count" in desc


def test_parameters_a_design_cannot_identify_get_no_ci():
    """A ladder's joint law printed beta = 2.368 [2.368, 2.368]: a zero-width CI on a parameter
    the design cannot identify (the bootstrap's spread there is the optimiser's, not the data's);
    then "B = 1e-300 (not identified)" (varpro's floor): such a parameter now prints no value."""
    from analysis.markdown import report_md
    from analysis.summary import summary_lines

    N = np.geomspace(1e7, 1e9, 8)
    res = run_analysis(_table(N, 20 * N), n_resamples=20, holdout=None, intervals=False)
    assert res["design"]["unidentified"] == ["A", "B", "alpha", "beta"]
    import re

    text = "\n".join(summary_lines(res))
    for k in ("A", "B", "alpha", "beta"):
        assert re.search(rf"\b{k} = not identified\b", text), k
    assert re.search(r"\bE = [-+.e\d]+ \[", text)  # E (the asymptote) keeps its CI
    md = report_md(res, {}, Path("."))
    assert "| beta | – | not identified by this design |" in md
    assert sum("not identified by this design |" in line for line in md.splitlines()) == 4
    assert detect_design(_grid()).to_json()["unidentified"] == []


def test_report_header_names_only_the_analyses_that_ran():
    """A ladder's report.md said "... 20 for Approach 2" and an IsoFLOP sweep whose Approach 2
    was skipped listed approach2 under "analyses run"."""
    from analysis.markdown import report_md

    N = np.geomspace(1e7, 1e9, 8)
    res = run_analysis(_table(N, 20 * N), n_resamples=20, holdout=None, intervals=False)
    head = report_md(res, {}, Path(".")).split("## Joint law")[0]
    assert "Approach 2" not in head and "per law form" not in head
    assert "analyses run: joint, approach1, frontier." in head
    sw = isoflop_sweep(budgets=(1e18, 1e19), n_sizes=5)  # one usable budget: no line through
    t = _table(sw["N"], sw["D"], sw["budget"])  # minima (1e18 keeps one model size)
    t = t.subset((t.budget == 1e19) | (t.N == t.N[t.budget == 1e18].min()))
    res = run_analysis(t, n_resamples=20, holdout=None, intervals=False)
    assert "approach2" not in res and res["design"]["kind"] == "isoflop"
    head = report_md(res, {}, Path(".")).split("## Joint law")[0]
    assert "approach2" not in head.split("analyses run:")[1] and "Approach 2" not in head


def test_checks_say_why_when_approach2_was_skipped():
    """An IsoFLOP sweep with one usable budget (the other has one model size) skips Approach 2:
    its two checks were left out silently instead of printed [n/a] with the reason."""
    sw = isoflop_sweep(budgets=(1e18, 1e19), n_sizes=5)
    t = _table(sw["N"], sw["D"], sw["budget"])
    t = t.subset((t.budget == 1e19) | (t.N == t.N[t.budget == 1e18].min()))  # 1e18: one size
    res = run_analysis(t, n_resamples=20, holdout=None, intervals=False)
    checks = {n: (ok, s) for n, ok, s in study_checks(json.loads(json.dumps(fits_json(res))))}
    ok, detail = checks["IsoFLOP minima inside the grid"]
    assert ok is None and detail.startswith("not answered: Approach 2 skipped")
    assert checks["frontier falls with compute"][0] is None


def test_varpro_on_one_size_or_a_ladder_prints_no_floor_value():
    """varpro left the term NNLS switched off at 1e-300 and analyze printed "E = 1e-300 (not
    identified)" (one model size) or "B = 1e-300 (not identified)" (a ladder), in the summary and
    as report.md's estimate."""
    from analysis.markdown import report_md
    from analysis.summary import summary_lines

    N = np.geomspace(1e7, 1e9, 8)
    for t in (_table(np.full(8, 1e8), np.geomspace(1e9, 1e11, 8)), _table(N, 20 * N)):
        res = run_analysis(t, n_resamples=20, holdout=None, intervals=False, method="varpro")
        gone = res["design"]["unidentified"]
        assert res["unidentified"] == dict.fromkeys(gone, "design")
        text = "\n".join(summary_lines(res)) + report_md(res, {}, Path("."))
        assert "e-300" not in text and "e+2" not in text.split("## Convergence")[0], text
        assert all(f"{k} = not identified" in text and f"| {k} | – |" in text for k in gone)
        fits = json.loads(json.dumps(fits_json(res)))
        assert fits["joint_unidentified"] == dict.fromkeys(gone, "design")


def test_a_term_at_its_bound_is_not_identified_and_leaves_no_allocation(tmp_path, capsys):
    """An N x D grid whose losses do not depend on N (L = 1.7 + 410/D^0.28, 0.5% noise): the fit
    sends A/N^alpha to 0 (below 1e-6 of every loss) and printed its alpha (116 by the grid
    method, 1e-300 for A by varpro) as fitted, with an allocation a = beta/(alpha + beta) = 0.002
    built on it. A and alpha are now not identified, and no allocation is given."""
    from analysis.markdown import report_md
    from analysis.summary import summary_lines

    N, D = (x.ravel() for x in np.meshgrid(np.geomspace(1e7, 1e9, 5), np.geomspace(1e9, 1e11, 4)))
    loss = (1.7 + 410 / D**0.28) * np.exp(np.random.default_rng(8).normal(0, 0.005, N.size))
    ids = [f"r{i}" for i in range(N.size)]
    t = RunTable(ids, N, D, 6 * N * D, loss, np.full(N.size, np.nan), [None] * N.size)
    assert detect_design(t).kind == "grid"
    for method in ("grid", "varpro"):
        res = run_analysis(t, n_resamples=20, holdout=None, intervals=False, method=method)
        assert res["fit"].diagnostics["lost_terms"] == {"A": "bound"}
        assert res["unidentified"] == {"A": "A", "alpha": "A"}
        assert (
            res["compute_optimal"] == [] and "A term(s) sit at the bound 0" in res["no_allocation"]
        )
        text = "\n".join(summary_lines(res))
        assert "A = 0 (at its bound)" in text and "alpha = not identified (A = 0)" in text
        assert "allocation not identified (the fitted A term(s) sit at the bound 0)" in text
        md = report_md(res, {}, Path("."))
        assert "| alpha | – | not identified: A sits at its bound 0 |" in md
        assert "Allocation: not identified by this fit" in md
        assert any("the fitted A term(s) sit at the bound 0" in n for n in res["notes"])
        checks = {n: ok for n, ok, _ in study_checks(json.loads(json.dumps(fits_json(res))))}
        assert checks["allocation exponents identified"] is None
    f = tmp_path / "grid.csv"
    rows = zip(N, D, loss, strict=True)
    f.write_text("N,D,loss\n" + "".join(f"{a},{b},{y}\n" for a, b, y in rows))
    argv = ["predict", "--csv", str(f), "--map", "N=N", "--map", "D=D", "--map", "loss=loss"]
    assert main([*argv, "--flops", "1e21", "--resamples", "20"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the fitted A term sits at its bound 0") and err.count("\n") == 1


def test_a_flat_term_leaves_e_its_parameters_and_the_allocation_not_identified(tmp_path, capsys):
    """The same grid with seed 0: the fit gave alpha = 0.00016, A/N^alpha a constant 1.17 next
    to E = 0.53, and reported a = 0.9994 as the compute-optimal allocation. E, A and alpha are
    now not identified and no allocation is given (analyze, checks, predict --flops)."""
    from analysis.markdown import report_md
    from analysis.summary import summary_lines

    N, D = (x.ravel() for x in np.meshgrid(np.geomspace(1e7, 1e9, 5), np.geomspace(1e9, 1e11, 4)))
    loss = (1.7 + 410 / D**0.28) * np.exp(np.random.default_rng(0).normal(0, 0.005, N.size))
    ids = [f"r{i}" for i in range(N.size)]
    t = RunTable(ids, N, D, 6 * N * D, loss, np.full(N.size, np.nan), [None] * N.size)
    res = run_analysis(t, n_resamples=20, holdout=None, intervals=False)
    assert res["unidentified"] == {"E": "A", "A": "A", "alpha": "A"}
    assert res["compute_optimal"] == [] and "A term is flat" in res["no_allocation"]
    text = "\n".join(summary_lines(res))
    assert "E = not identified (A term flat)" in text and "alpha = not identified (A term" in text
    assert "allocation not identified (the fitted A term is flat across the runs" in text
    assert "| E | – | not identified: the fitted A term is flat" in report_md(res, {}, Path("."))
    fits = json.loads(json.dumps(fits_json(res)))
    assert fits["joint_lost_terms"] == {"A": "flat"}
    checks = {n: ok for n, ok, _ in study_checks(fits)}
    assert checks["allocation exponents identified"] is None
    f = tmp_path / "grid.csv"
    f.write_text(
        "N,D,loss\n" + "".join(f"{a},{b},{y}\n" for a, b, y in zip(N, D, loss, strict=True))
    )
    argv = ["predict", "--csv", str(f), "--map", "N=N", "--map", "D=D", "--map", "loss=loss"]
    assert main([*argv, "--flops", "1e21", "--resamples", "20"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the fitted A term is flat across") and err.count("\n") == 1


def test_the_forms_rows_on_a_ladder_give_no_unidentified_values():
    """report.md's law-forms table printed a ladder's chinchilla form as "A 7.04e+212, alpha
    30.65", and its kaplan, overtrain and power_sum rows still print raw values of parameters
    that split the loss between N and D (N and D move together there)."""
    from analysis.markdown import report_md

    N = np.geomspace(1e7, 1e9, 8)
    res = run_analysis(_table(N, 20 * N), n_resamples=20, holdout=None)
    rows = {
        x.split(" | ")[0][2:]: x for x in report_md(res, {}, Path(".")).splitlines() if "| " in x
    }
    assert (
        rows["chinchilla"].startswith("| chinchilla | E ") and "E not id" not in rows["chinchilla"]
    )
    assert "| overtrain | E " in rows["overtrain"] and "eta not id" not in rows["overtrain"]
    gone = {
        "chinchilla": ("A", "B", "alpha", "beta"),
        "kaplan": ("N_c", "D_c", "alpha_N", "alpha_D"),
        "overtrain": ("a", "b"),
        "power_sum": ("A", "B", "alpha", "beta"),
    }
    for form, ks in gone.items():
        assert all(f"{k} not identified" in rows[form] for k in ks), rows[form]
