"""Pruning-curve bookkeeping (numpy only): fractions, orders, masks, the removable fraction and its
resampling CI, the spec checks and the bad-input exits of `scaling ablate` (no JAX compute)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scaling.cli import main
from scaling.errors import UserError
from scaling.evals import removable as RM
from scaling.evals.ablate import AblateSpec


def test_fractions_are_checked_sorted_and_floored():
    assert RM.check_fractions((0.5, 0.1, 0.5)) == (0.1, 0.5)
    for bad in [(0.0,), (1.0,), (1.5,), (-0.1,), (float("nan"),), ()]:
        with pytest.raises(UserError):
            RM.check_fractions(bad)
    assert [RM.n_removed(f, 22) for f in RM.DEFAULT_FRACTIONS] == [2, 4, 6, 8, 11, 13, 15, 17, 19]
    assert [RM.n_removed(f, 2) for f in RM.DEFAULT_FRACTIONS] == [0] * 4 + [1] * 5
    assert RM.n_removed(0.3, 10) == 3  # 0.3 * 10 = 2.9999999999999996 in floating point


def test_plan_steps_share_masks_and_masks_follow_the_order():
    steps = RM.plan_steps((0.25, 0.5), n_heads=8, n_ffn=2, kinds=RM.KINDS)
    got = [(s["kind"], s["n_heads"], s["n_ffn"], s["actual"]) for s in steps]
    assert got == [("heads", 2, 0, 0.25), ("heads", 4, 0, 0.5), ("ffn", 0, 0, 0.0),
                   ("ffn", 0, 1, 0.5), ("both", 2, 0, 0.2), ("both", 4, 1, 0.5)]  # fmt: skip
    assert len({s["key"] for s in steps}) == 5  # ffn@0.25 removes nothing: it is the baseline
    order = np.array([5, 0, 7, 2, 1, 3, 4, 6])  # least important first (flat l * N + n)
    hm, fm = RM.masks_for(3, 1, order, np.array([1, 0]), (2, 4))
    assert hm.ravel().tolist() == [0, 1, 1, 1, 1, 0, 1, 0]  # heads 5, 0 and 7 removed
    assert fm.tolist() == [1, 0]


def test_both_credits_what_was_removed_and_nothing_removed_is_no_progress():
    """8 heads (2 layers of 4) and 2 FFN blocks at 0.1: nothing is removed, so `both` is at 0
    (it used to be credited 0.1), and a flat curve of such steps is removable 0, not 0.1."""
    steps = RM.plan_steps((0.1, 0.3, 0.5), n_heads=8, n_ffn=2, kinds=("heads", "both"))
    got = [(s["kind"], s["n_heads"], s["n_ffn"], s["actual"]) for s in steps]
    assert got == [("heads", 0, 0, 0.0), ("heads", 2, 0, 0.25), ("heads", 4, 0, 0.5),
                   ("both", 0, 0, 0.0), ("both", 2, 0, 0.2), ("both", 4, 1, 0.5)]  # fmt: skip
    both = [s for s in steps if s["kind"] == "both"]
    fr = np.array([0.0] + [s["actual"] for s in both])
    base = np.r_[np.ones(80), np.zeros(20)]
    dropped = np.r_[np.ones(40), np.zeros(60)]  # the 0.3 step already drops 50%
    out = RM.removable({"t/0": np.stack([base, base, dropped, dropped])}, fr, {"t/0": 0.1})
    assert out["groups"]["t/0"]["estimate"] == 0.0 and out["suite"]["estimate"] == 0.0
    assert RM.removed_fraction("both", 3, 1, n_heads=22, n_ffn=2) == pytest.approx(4 / 24)


def _curve(means, n=200, seed=0):
    """Per-item scores [J, n] whose step means are `means` (0/1 items, like exact match)."""
    rng = np.random.default_rng(seed)
    return np.stack([(rng.random(n) < m).astype(float) for m in means])


def test_removable_fraction_follows_the_first_drop_and_has_a_ci():
    fr = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    # exact per-item values: no resampling noise at the steps that matter
    base = np.r_[np.ones(80), np.zeros(20)]
    items = np.stack([base, base, base, np.r_[np.ones(60), np.zeros(40)], base])
    out = RM.removable({"t/0": items}, fr, {"t/0": 0.1}, tol=0.05, resamples=200)
    g = out["groups"]["t/0"]
    # step 0.3 drops 25% (0.8 -> 0.6): removable stops at 0.2 even though 0.4 recovers
    assert g["estimate"] == pytest.approx(0.2) and g["eligible"]
    assert g["lo"] <= 0.2 <= g["hi"] and g["retained"][3] == pytest.approx(0.75)
    assert out["suite"]["estimate"] == pytest.approx(0.2) and len(out["suite_draws"]) == 200


def test_removable_for_a_negative_metric_and_chance_groups():
    fr = np.array([0.0, 0.5, 0.9])
    lp = np.stack([np.full(50, -2.0), np.full(50, -2.08), np.full(50, -2.5)])  # 4%, 25% worse
    at_chance = _curve([0.02, 0.0, 0.0], n=100)
    out = RM.removable({"a/0": lp, "b/0": at_chance}, fr, {"a/0": None, "b/0": 0.05})
    assert out["groups"]["a/0"]["estimate"] == pytest.approx(0.5)
    assert not out["groups"]["b/0"]["eligible"]  # never above chance: not in the suite
    assert out["suite"]["groups"] == ["a/0"] and out["suite"]["estimate"] == pytest.approx(0.5)
    none = RM.removable({"b/0": at_chance}, fr, {"b/0": 0.05})
    assert none["suite"]["estimate"] is None and none["suite_draws"] == []


def test_removable_ci_narrows_with_more_items():
    fr = np.array([0.0, 0.1, 0.2, 0.3])
    widths = []
    for n in (40, 40_000):
        items = _curve([0.6, 0.59, 0.575, 0.45], n=n, seed=1)  # drops 1.7%, 4.2%, 25%
        g = RM.removable({"t/1": items}, fr, {"t/1": 0.0}, resamples=300)["groups"]["t/1"]
        widths.append(g["hi"] - g["lo"])
    assert widths[1] < widths[0]


def test_spec_check_and_key():
    spec = AblateSpec(tasks=("copy",), fractions=(0.5, 0.2)).check()
    assert spec.fractions == (0.2, 0.5)
    assert spec.key() == AblateSpec(tasks=("copy",), fractions=(0.2, 0.5)).check().key()
    assert spec.key() != AblateSpec(tasks=("add2",), fractions=(0.2, 0.5)).check().key()
    # a repeated task or shot count is the same ablation (it was a new key, recomputed in full)
    twice = AblateSpec(tasks=("copy", "copy"), shots=(0, 1, 0), fractions=(0.2, 0.5)).check()
    assert twice.tasks == ("copy",) and twice.shots == (0, 1)
    assert twice.key() == AblateSpec(tasks=("copy",), shots=(0, 1), fractions=(0.2, 0.5)).key()
    for bad in (dict(tasks=("nope",)), dict(fractions=(1.0,)), dict(kinds=("mlp",)),
                dict(tol=0.0), dict(shots=(-1,))):  # fmt: skip
        with pytest.raises(UserError):
            AblateSpec(**bad).check()


@pytest.fixture
def fake_sweep(tmp_path):
    """A sweep directory with one finished run record whose checkpoints are gone."""
    run = tmp_path / "runs" / "abc123"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"status": "done", "run_id": "abc123"}))
    rec = {"run_id": "abc123", "status": "done", "cell": {"budget": 1e11}, "N_total": 5e3}
    (tmp_path / "results.jsonl").write_text(json.dumps(rec) + "\n")
    return tmp_path


@pytest.mark.parametrize(
    "extra,needle",
    [
        ([], "has no checkpoint"),
        (["--tasks", "copy,nope"], "unknown eval task 'nope'"),
        (["--fractions", "0.1,1.2"], "outside (0, 1)"),
        (["--fractions", "0"], "outside (0, 1)"),
        (["--runs", "zzz"], "no finished run matches 'zzz'"),
        (["--budget", "3e11"], "no such budget"),
        (["--shots", "x"], "--shots"),
        (["--resamples", "5"], "--resamples 5: must be >= 10; use e.g. the default 1000"),
        (["--n-items", "-1"], "--n-items -1: must be >= 0"),
        (["--kinds", ","], "no ablation kinds given; choose from heads, ffn, both"),
    ],
)
def test_bad_input_exits_2_with_one_line_before_compute(
    fake_sweep, capsys, monkeypatch, extra, needle
):
    import sweeps.ablate

    def compute(*a, **k):
        raise AssertionError("the ablation started: bad input must exit before any compute")

    monkeypatch.setattr(sweeps.ablate, "run_ablation", compute)
    assert main(["ablate", str(fake_sweep), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not (fake_sweep / "runs" / "abc123" / "ablation").exists()
    assert not (fake_sweep / "ablation.jsonl").exists()


def test_not_a_sweep_directory(tmp_path, capsys):
    assert main(["ablate", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["ablate", str(tmp_path)]) == 2
    assert "no results.jsonl" in capsys.readouterr().err


def test_select_runs_by_budget_and_sizes(tmp_path):
    from sweeps.ablate import select_runs

    recs = [
        {"run_id": f"r{i}", "status": "done", "cell": {"budget": b}, "N_total": n}
        for i, (b, n) in enumerate(
            [(1e11, 5), (2e11, 4), (2e11, 1), (2e11, 3), (2e11, 2), (2e11, 9)]
        )  # fmt: skip
    ]
    recs.append({"run_id": "bad", "status": "diverged", "cell": {"budget": 2e11}, "N_total": 7})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    names = lambda paths: [p.name for p in paths]  # noqa: E731
    assert names(select_runs(tmp_path, budget="largest")) == ["r2", "r4", "r3", "r1", "r5"]
    assert names(select_runs(tmp_path, budget="largest", sizes=3)) == ["r2", "r3", "r5"]
    assert names(select_runs(tmp_path, budget="1e11")) == ["r0"]
    assert names(select_runs(tmp_path, ids=("r1", "r0"))) == ["r1", "r0"]  # by N
    with pytest.raises(UserError, match="no finished run matches 'bad'"):
        select_runs(tmp_path, ids=("bad",))
    # more sizes than the chosen runs have kept every size silently (finetune refused)
    assert names(select_runs(tmp_path, budget="largest", sizes=5)) == ["r2", "r4", "r3", "r1", "r5"]
    with pytest.raises(
        UserError, match=r"--sizes 6: .* only 5 distinct model sizes; use --sizes 5"
    ):
        select_runs(tmp_path, budget="largest", sizes=6)


def test_select_runs_counts_sizes_not_seeds(tmp_path):
    """Two seeds of three sizes: --sizes 2 picks the smallest and largest size, seed 0 of each
    (whatever order the runs finished in), and --sizes 0 keeps all six runs."""
    from sweeps.ablate import select_runs

    recs = [
        {"run_id": f"n{n}s{s}", "status": "done", "cell": {"budget": 1e11}, "N_total": n, "seed": s}
        for s in (1, 0) for n in (30, 10, 20)
    ]  # fmt: skip
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    names = lambda paths: [p.name for p in paths]  # noqa: E731
    assert names(select_runs(tmp_path, sizes=2)) == ["n10s0", "n30s0"]
    assert names(select_runs(tmp_path, sizes=3)) == ["n10s0", "n20s0", "n30s0"]
    with pytest.raises(UserError, match="only 3 distinct model sizes"):  # seeds are not sizes
        select_runs(tmp_path, sizes=5)
    assert len(select_runs(tmp_path)) == 6


def _ablation_record(n: float, c: float, est: float) -> dict:
    s = {"estimate": est, "lo": est - 0.1, "hi": est + 0.1, "eligible": True}
    return {"N_total": n, "C_6ND": c,
            "removable": {"heads": {"logprob": {"suite": s, "suite_draws": [est]}}}}  # fmt: skip


def test_trend_needs_runs_spanning_a_range_not_one_budget():
    """Three sizes at one budget: a slope vs N is fitted, none vs C (C differs by ~2%), and the
    section says why instead of printing a slope per decade of noise."""
    from analysis import ablation as A

    recs = [_ablation_record(n, 6e11 * (1 + 0.01 * i), 0.1 * i)
            for i, n in enumerate((1.2e4, 3.2e4, 7.4e4))]  # fmt: skip
    t = A.trend(recs, "heads", "logprob", "N")
    assert t is not None and t["slope"] > 0
    assert A.trend(recs, "heads", "logprob", "C") is None
    rows = [{"N": r["N_total"], "C": r["C_6ND"]} for r in recs]
    (line,) = A.narrow_axes(rows)
    assert "vs log10 C: not fitted: the runs span 0.01 decades of C" in line
    wide = [{"N": 1e4, "C": 1e11}, {"N": 2e4, "C": 4e11}, {"N": 4e4, "C": 1.6e12}]
    assert A.narrow_axes(wide) == []


def _row(run_id: str, kinds: tuple[str, ...], est: float | None, n: float = 1e4) -> dict:
    """A run row of `analysis.ablation.summarize` for the kinds that were run."""
    s = None if est is None else {"estimate": est, "lo": est, "hi": est}
    metrics = ("logprob", "exact_match")
    return {"run_id": run_id, "N": n, "C": 1e7 * n, "heads": 8, "ffn": 2,
            "overlap": {"across_tasks": 0.5, "across_shots": 0.5, "random": 0.2},
            "induction_corr": {"prefix": 0.1, "copying": 0.2},
            "removable": {f"{k}/{m}": s for k in kinds for m in metrics}}  # fmt: skip


def test_report_says_not_run_and_what_a_trend_lacks():
    from analysis.ablation import report_md

    md = report_md({"runs": [_row("r1", ("heads",), 0.25)], "trends": [], "tol": 0.05})
    (line,) = [x for x in md.splitlines() if x.startswith("| r1 |")]
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[4] == "0.25 [0.25, 0.25]" and cells[5:7] == ["not run", "not run"]
    assert "- not fitted: 1 run(s) ablated; a trend needs at least 3" in md
    assert "above chance" not in md
    runs = [_row(f"r{i}", ("heads", "ffn", "both"), None, n) for i, n in enumerate((1e4, 1e5, 1e6))]
    md = report_md({"runs": runs, "trends": [], "tol": 0.05})
    assert "| at chance | at chance | at chance |" in md and "not run" not in md
    assert "fewer than 3 runs with a logprob or exact-match suite value" in md


def test_a_new_spec_moves_the_old_table_aside(tmp_path, capsys):
    from sweeps.ablate import keep_other_spec

    table = tmp_path / "ablation.jsonl"
    table.write_text(json.dumps({"run_id": "a", "spec_key": "k1"}) + "\n")
    keep_other_spec(table, "k1")  # same spec: kept in place
    assert table.is_file() and not (tmp_path / "ablation.jsonl.bak").exists()
    keep_other_spec(table, "k2")
    assert not table.exists()
    bak = tmp_path / "ablation.jsonl.bak"
    assert json.loads(bak.read_text())["spec_key"] == "k1"
    assert "moved to" in capsys.readouterr().err


def test_nothing_removable_reads_less_than_the_first_step():
    """A removable fraction of 0 with a zero-width CI (the demo's 2-layer runs: removing one of
    8 heads, or one of 2 MLP blocks, already cost more than 5%) reads "< 0.12" / "< 0.50", the
    share the first step removed, not "0.00 [0.00, 0.00]", which read as nothing removable."""
    from analysis.ablation import report_md, summarize

    def rec(rid: str, est_heads: float) -> dict:
        def rm(est: float, hi: float) -> dict:
            return {"suite": {"estimate": est, "lo": 0.0, "hi": hi, "eligible": True},
                    "suite_draws": [est, hi]}  # fmt: skip

        actual = {"heads": [0.0, 0.125, 0.375], "ffn": [0.0, 0.0, 0.5], "both": [0.0, 0.1, 0.3]}
        return {"run_id": rid, "N_total": 1e4, "C_6ND": 1e11, "n_layers": 2, "n_heads": 4,
                "spec": {"tol": 0.05},
                "curves": {k: {"actual": a} for k, a in actual.items()},
                "removable": {"heads": {"logprob": rm(est_heads, est_heads)},
                              "ffn": {"logprob": rm(0.0, 0.0)},
                              "both": {"logprob": rm(0.0, 0.1)}},
                "importance": {"heads": {"t/0": [[1.0, 2.0, 3.0, 4.0]] * 2},
                               "heads_aggregate": [[1.0, 2.0, 3.0, 4.0]] * 2,
                               "induction": {"prefix": [[0.0] * 4] * 2,
                                             "copying": [[0.0] * 4] * 2}}}  # fmt: skip

    md = report_md(summarize([rec("r1", 0.0), rec("r2", 0.375)]))
    cells = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[5:8]]
        for line in md.splitlines()
        if line.startswith("| r")
    }
    assert cells["r1"] == ["< 0.12", "< 0.50", "< 0.10 [0.00, 0.10]"]
    assert cells["r2"][0] == "0.38 [0.00, 0.38]"  # a real estimate keeps its CI
    assert "`< f`: the first pruning step" in md
    runs = summarize([rec("r1", 0.0), rec("r2", 0.375)])["runs"]
    runs += [dict(runs[1], run_id="r3", N=1e6)]
    for r, n in zip(runs, (1e4, 1e5, 1e6), strict=True):
        r["N"], r["C"] = n, 1e7 * n
    trend = {"kind": "heads", "metric": "logprob", "axis": "N", "slope": 0.1, "slope_lo": 0.0,
             "slope_hi": 0.2, "n_runs": 3}  # fmt: skip
    md = report_md({"runs": runs, "trends": [trend], "tol": 0.05})
    assert "over 3 runs (1 of them at `< f`, counted as 0)" in md
    from sweeps.ablate import _line

    line = _line({**rec("r1", 0.0), "removable": {
        k: {"logprob": v["logprob"], "exact_match": v["logprob"]}
        for k, v in rec("r1", 0.0)["removable"].items()}})  # fmt: skip
    assert "heads: logprob < 0.12, exact < 0.12; ffn: logprob < 0.50" in line


def test_a_trend_of_only_censored_runs_is_not_a_measured_zero_slope(tmp_path):
    """Every run at '< f' (the demo's FFN: one of 2 MLP blocks already costs more than 5%): the
    zeros fitted 'slope +0.000 [+0.000, +0.000]', which read as a precisely measured 'no
    trend'. It now says the trend is not measured, and the figure draws no line for it."""
    from analysis import ablation as A
    from analysis.ablation_plots import removable_figure

    def rec(i: int, n: float) -> dict:
        rm = {"logprob": {"suite": {"estimate": 0.0, "lo": 0.0, "hi": 0.0, "eligible": True},
                          "suite_draws": [0.0, 0.0]}}  # fmt: skip
        return {"run_id": f"r{i}", "N_total": n, "C_6ND": 1e11 * n, "n_layers": 2, "n_heads": 4,
                "spec": {"tol": 0.05}, "curves": {"ffn": {"actual": [0.0, 0.5, 1.0]}},
                "removable": {"ffn": rm},
                "importance": {"heads": {"t/0": [[1.0, 2.0, 3.0, 4.0]] * 2},
                               "heads_aggregate": [[1.0, 2.0, 3.0, 4.0]] * 2,
                               "induction": {"prefix": [[0.0] * 4] * 2,
                                             "copying": [[0.0] * 4] * 2}}}  # fmt: skip

    recs = [rec(i, n) for i, n in enumerate((1e4, 1e5, 1e6))]
    summary = A.summarize(recs)
    md = A.report_md(summary)
    assert "slope +0.000" not in md, md
    assert "ffn (logprob) vs log10 N: not measured: at all 3 runs the first pruning step" in md
    fig = removable_figure(recs, summary)
    assert not [ln for ln in fig.axes[0].get_lines() if "fit" in str(ln.get_label())]


def test_an_empty_ablation_table_is_a_report_line_not_a_crash(tmp_path):
    """A table with no readable record (empty, or only damaged lines) raised a TypeError on its
    tolerance inside `scaling analyze`; now the section says the table is empty, no figures."""
    from analysis import ablation_plots
    from analysis.ablation import analyze

    table = tmp_path / "ablation.jsonl"
    table.write_text("")
    ab = analyze(table, tmp_path / "out")
    assert "holds no readable ablation record; rerun `scaling ablate DIR`" in ab["md"]
    assert ablation_plots.all_figures(ab, tmp_path / "out") == {}


@pytest.mark.parametrize("command", ["ablate", "finetune"])
def test_sizes_help_says_how_sizes_are_picked(command, tmp_path, capsys):
    """--help said 'spread over log N' (finetune) and 'spread evenly over N' (ablate); both pick
    evenly in the sorted list of sizes: of N = 1, 2, 3, 4, 100, --sizes 3 keeps 1, 3 and 100
    (log N would want ~10, so 4; N would want ~50, so 4 too)."""
    from sweeps.ablate import select_runs

    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "evenly spaced in the sorted list of sizes" in help_text
    assert "spread over log N" not in help_text and "spread evenly over N" not in help_text
    recs = [
        {"run_id": f"n{n}", "status": "done", "cell": {}, "N_total": n} for n in (1, 2, 3, 4, 100)
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert [p.name for p in select_runs(tmp_path, sizes=3)] == ["n1", "n3", "n100"]


def test_run_selection_flags_on_one_run_directory_are_an_error(tmp_path):
    """`scaling ablate RUN_DIR --runs zzz` (or --budget, --sizes) ablated the run anyway,
    silently ignoring the flag; a run directory has nothing to choose among."""
    from sweeps.ablate import select_runs

    (tmp_path / "result.json").write_text(json.dumps({"status": "done", "run_id": "r"}))
    assert select_runs(tmp_path) == [tmp_path]
    with pytest.raises(UserError, match=r"--runs choose among a sweep's runs, but .* is one run "):
        select_runs(tmp_path, ids=("zzz",))
    with pytest.raises(UserError, match=r"--budget and --sizes choose .*; drop --budget or pass"):
        select_runs(tmp_path, budget="largest", sizes=2)


def test_a_damaged_result_json_is_one_line_not_a_traceback(fake_sweep, capsys):
    """check_run parsed result.json with json.loads: a damaged one (a crash while it was being
    replaced by an older version, a disk error) ended `scaling ablate` in a JSONDecodeError."""
    (fake_sweep / "runs" / "abc123" / "result.json").write_text('{"status": "do')
    assert main(["ablate", str(fake_sweep), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "result.json is damaged" in err[0]
    assert "rerun the `scaling train` command of this run" in err[0]
