"""Emergence flagger on our own results.jsonl records (evals block in the contract's format)."""

from __future__ import annotations

import json

import numpy as np

from analysis.emergence.report import analyze_results
from scaling.cli import main

N_ITEMS = 400
LOG_C = 10.0 + 0.5 * np.arange(7)  # 7 budgets, half a decade apart


def _evals(rng, i: int) -> dict:
    """copy: smooth per-token accuracy, exact match = p^20 (metric-induced jump);
    add3: stays at chance (exact-match chance 0.001, token chance 0.1)."""
    scores, chance = {}, {}
    p = 1 - 0.6 * 10 ** (-0.5 * (LOG_C[i] - LOG_C[0]))
    for task, em_p, tok_p, ch in (("copy", p**20, p, 0.01), ("add3", 0.001, 0.1, 0.001)):
        scores[task] = {}
        for k in (0, 1, 4):
            scores[task][str(k)] = {
                "exact_match": rng.binomial(N_ITEMS, em_p) / N_ITEMS,
                "token_acc": rng.binomial(N_ITEMS * 20, tok_p) / (N_ITEMS * 20),
                "logprob": float(20 * np.log(tok_p) + rng.normal(0, 0.05)),
                "n_items": N_ITEMS,
            }
        chance[task] = {"exact_match": ch, "token_acc": 0.1}
    return {"scores": scores, "chance": chance, "shots": [0, 1, 4], "seconds": 1.0}


def _record(rng, i: int, seed: int, *, loss_offset: float = 0.0, evals: bool = True) -> dict:
    c = 10 ** LOG_C[i]
    n = 1e3 * 10 ** (0.25 * i)
    return {
        "run_id": f"r{i}-{seed}-{loss_offset}",
        "sweep": "ladder",
        "N_total": n,
        "N_nonembed": 0.8 * n,
        "D": c / (6 * n),
        "C_6ND": c,
        "C_exact": 1.1 * c,
        "final_val_loss": 3.0 - 0.2 * i + loss_offset,
        "best_val_loss": 3.0 - 0.2 * i,
        "status": "done",
        "seed": seed,
        "config": {"train": {"seed": seed}},
        "evals": _evals(rng, i) if evals else None,
    }


def _write(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_results_jsonl_end_to_end(tmp_path):
    rng = np.random.default_rng(3)
    recs = [_record(rng, i, s) for i in range(len(LOG_C)) for s in (0, 1)]
    bad = _record(rng, 3, 0, loss_offset=1.0)  # same budget, worse model (IsoFLOP off-frontier)
    bad["N_total"] *= 3
    bad["evals"]["scores"]["add3"]["4"]["exact_match"] = 0.9  # would fake a jump if kept
    diverged = dict(_record(rng, 5, 2), status="diverged")
    _write(tmp_path / "results.jsonl", recs + [bad, diverged])
    report = analyze_results(tmp_path / "results.jsonl", tmp_path / "out")
    assert report is not None
    saved = json.loads((tmp_path / "out" / "emergence.json").read_text())
    assert saved["n_curves"] == report["n_curves"] == 2 * 3 * 3  # tasks x shots x metrics
    by = {(c["task"], c["shots"], c["metric"]): c for c in saved["curves"]}
    copy_em = by[("copy", 4, "exact_match")]
    assert copy_em["n_seeds"] == [2.0] * len(LOG_C)  # seeds pooled, diverged run skipped
    assert copy_em["n_items"] == [2.0 * N_ITEMS] * len(LOG_C)
    assert copy_em["companions"] == ["token_acc", "logprob"]
    assert copy_em["verdict"] == "emergent_metric_induced", copy_em["reason"]
    assert "single_seed" not in copy_em["warnings"]
    assert copy_em["loss_threshold"] is not None  # loss-threshold view from final_val_loss
    assert copy_em["loss_unit"] == "nats/token"  # no byte-level vocabulary in these records
    assert copy_em["figure"].endswith(".png")
    for k in (0, 1, 4):
        assert by[("add3", k, "exact_match")]["verdict"] == "flat_at_chance"
    assert by[("copy", 4, "logprob")]["bounded"] is False
    assert {m["primary"] for m in saved["mirage_pairs"]} == {"exact_match"}


def test_params_scale_and_no_evals(tmp_path):
    rng = np.random.default_rng(4)
    _write(tmp_path / "results.jsonl", [_record(rng, i, 0) for i in range(len(LOG_C))])
    rep = analyze_results(tmp_path, tmp_path / "p", scale="params", figures=False)
    x = rep["curves"][0]["log10_scale"]
    assert np.allclose(np.diff(x), 0.25)  # N grows 10^0.25 per step
    assert "single_seed" in rep["curves"][0]["warnings"]
    _write(tmp_path / "results.jsonl", [_record(rng, i, 0, evals=False) for i in range(3)])
    assert analyze_results(tmp_path / "results.jsonl", tmp_path / "none") is None


def test_cli_sweep_dir(tmp_path, capsys):
    rng = np.random.default_rng(5)
    _write(tmp_path / "results.jsonl", [_record(rng, i, 0) for i in range(len(LOG_C))])
    assert main(["emergence", str(tmp_path), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "flat_at_chance" in out and (tmp_path / "emergence" / "emergence.json").is_file()
    assert main(["emergence", str(tmp_path / "missing")]) == 2
    assert "no results file" in capsys.readouterr().err
    assert main(["emergence"]) == 2


def test_isoflop_cells_group_by_nominal_budget(tmp_path):
    """Cells of one budget have exact FLOPs a little off the budget; they are one scale, and
    only the lowest-loss shape of each budget stays on the curve."""
    from analysis.emergence.sources import curves_from_results

    rng = np.random.default_rng(0)
    recs = []
    for i in range(len(LOG_C)):
        for j, off in enumerate((0.3, 0.0, 0.2)):  # three shapes; the middle one is best
            r = _record(rng, i, 0, loss_offset=off)
            r["N_total"] *= 2.0**j
            r["C_exact"] *= 1 + 0.003 * j
            r["cell"] = {"kind": "isoflop", "budget": 10 ** LOG_C[i]}
            recs.append(r)
    _write(tmp_path / "results.jsonl", recs)
    curve = next(c for c in curves_from_results(tmp_path) if c.task == "copy")
    np.testing.assert_allclose(np.log10(curve.scale), LOG_C)
    np.testing.assert_allclose(curve.loss, 3.0 - 0.2 * np.arange(len(LOG_C)))  # best shape kept


def test_lr_variants_reduce_to_the_fits_choice(tmp_path):
    """A grid with an lr axis runs each cell at several lrs; the curve keeps one point per
    budget, the lowest-loss variant (as the scaling fits do), not every lr pooled as seeds."""
    from analysis.emergence.sources import curves_from_results

    rng = np.random.default_rng(1)
    recs = []
    for i in range(len(LOG_C)):
        for lr, off in ((1e-3, 0.5), (1e-2, 0.0), (1e-1, 0.8)):  # 1e-2 is best
            r = _record(rng, i, 0, loss_offset=off)
            r["cell"] = {"kind": "isoflop", "budget": 10 ** LOG_C[i], "shape": "d16", "seed": 0}
            r["cell"] |= {"lr": lr, "hp_axes": ["lr"]}
            if lr != 1e-2:  # a worse lr with a fake jump: it must not reach the curve
                r["evals"]["scores"]["add3"]["4"]["exact_match"] = 0.9
            recs.append(r)
    _write(tmp_path / "results.jsonl", recs)
    curves = {(c.task, c.shots, c.metric): c for c in curves_from_results(tmp_path)}
    curve = curves[("add3", 4, "exact_match")]
    np.testing.assert_allclose(np.log10(curve.scale), LOG_C)
    assert list(curve.n_seeds) == [1] * len(LOG_C)
    np.testing.assert_allclose(curve.loss, 3.0 - 0.2 * np.arange(len(LOG_C)))
    assert curve.y.max() < 0.05


def test_csv_mapped_columns_and_families_must_exist(tmp_path):
    """A typo in a mapped column or a family name is an error naming it, not a silent skip."""
    import pytest

    from analysis.emergence.tables import curves_from_table
    from scaling.errors import UserError

    f = tmp_path / "t.csv"
    f.write_text(
        "Model,Fam,FLOPs,acc,bleu\n"
        + "".join(f"m{i},F,{10.0**i},{0.1 * i},{i}\n" for i in range(1, 6))
    )
    spec = {"family": "Fam", "compute": "FLOPs"}
    good = {"acc": {"chance": 0.0, "n_items": 100}, "bleu": {}}
    assert len(curves_from_table([str(f)], {**spec, "metrics": good})) == 2
    typo = {"acc": {"chance": 0.0, "n_items": 100}, "blue": {}}
    with pytest.raises(UserError, match="'blue' not found"):
        curves_from_table([str(f)], {**spec, "metrics": typo})
    with pytest.raises(UserError, match="family='Family' not found"):
        curves_from_table([str(f)], {**spec, "family": "Family", "metrics": good})
    with pytest.raises(UserError, match="no rows for 'G'"):
        curves_from_table([str(f)], {**spec, "metrics": good}, families=["F", "G"])


def test_analyze_where_limits_emergence_to_the_kept_runs(tmp_path, capsys):
    """`scaling analyze DIR --where 'seed == 0'` fits seed 0 alone; its emergence section must
    not pool seed 1's evals (it did: the section read every record of results.jsonl). Without
    --where both seeds are pooled (test_results_jsonl_end_to_end)."""
    rng = np.random.default_rng(6)
    recs = [_record(rng, i, s) for i in range(len(LOG_C)) for s in (0, 1)]
    _write(tmp_path / "results.jsonl", recs)
    out = tmp_path / "report"
    argv = ["analyze", str(tmp_path), "--out", str(out), "--resamples", "20"]
    assert main([*argv, "--where", "seed == 0"]) == 0, capsys.readouterr()
    curves = json.loads((out / "emergence.json").read_text())["curves"]
    assert curves and {s for c in curves for s in c["n_seeds"]} == {1.0}


def test_a_repeated_line_is_one_run_not_two_seeds(tmp_path):
    """results.jsonl concatenated twice: each run still counts once (as in the scaling fits),
    not as two seeds with twice the items."""
    from analysis.emergence.sources import curves_from_results

    rng = np.random.default_rng(2)
    recs = [_record(rng, i, 0) for i in range(len(LOG_C))]
    _write(tmp_path / "results.jsonl", recs + recs)
    curve = next(c for c in curves_from_results(tmp_path) if c.task == "copy")
    assert list(curve.n_seeds) == [1] * len(LOG_C)


def test_runs_with_different_chance_levels_pool_item_weighted_with_a_note(tmp_path, capsys):
    """The larger runs dropped half the copy items (too long for their seq_len) and record
    chance 0.03 on the 200 left; the smaller ones 0.01 on 400. The curve's chance level was the
    last record's (0.03) without a word; it is now the item-weighted mean, with a note."""
    from analysis.emergence.sources import curves_from_results

    rng = np.random.default_rng(5)
    recs = [_record(rng, i, s) for i in range(len(LOG_C)) for s in (0, 1)]
    for r in recs[8:]:  # budgets 4..6
        r["evals"]["chance"]["copy"]["exact_match"] = 0.03
        for block in r["evals"]["scores"]["copy"].values():
            block["n_items"] = 200
    _write(tmp_path / "results.jsonl", recs)
    curves = curves_from_results(tmp_path / "results.jsonl")
    want = (0.01 * 8 * 3 * 400 + 0.03 * 6 * 3 * 200) / (8 * 3 * 400 + 6 * 3 * 200)
    em = [c for c in curves if (c.task, c.metric) == ("copy", "exact_match")]
    assert len(em) == 3 and all(abs(c.chance - want) < 1e-12 for c in em)
    assert [c.chance for c in curves if c.task == "add3" and c.metric == "exact_match"] == [
        0.001
    ] * 3
    err = capsys.readouterr().err
    assert "note: runs record different levels" in err
    assert "chance of copy/exact_match 0.01 to 0.03, using the item-weighted 0.01545" in err
    assert "add3" not in err  # the levels that agree say nothing


def test_seeds_scored_on_the_same_items_count_those_items_once(tmp_path):
    """Every training seed of a sweep is scored on the same test items (eval.seed 0): pooling
    two seeds summed 2 x 64 items, halving the item-sampling variance and narrowing every Wilson
    interval by sqrt(2), which moved onsets and made the demo's unscramble token_acc
    non_monotone. Runs at other eval seeds are other items and still add up."""
    from analysis.emergence.sources import curves_from_results

    rng = np.random.default_rng(6)
    recs = [_record(rng, i, s) for i in range(len(LOG_C)) for s in (0, 1)]
    for r in recs:
        r["config"]["eval"] = {"seed": 0}
    _write(tmp_path / "results.jsonl", recs)
    curve = next(c for c in curves_from_results(tmp_path) if c.metric == "exact_match")
    assert curve.n_items.tolist() == [N_ITEMS] * len(LOG_C)
    assert curve.n_seeds.tolist() == [2] * len(LOG_C)
    for r in recs:
        r["config"]["eval"]["seed"] = r["seed"]  # two eval seeds: two item sets
    _write(tmp_path / "results.jsonl", recs)
    curve = next(c for c in curves_from_results(tmp_path) if c.metric == "exact_match")
    assert curve.n_items.tolist() == [2 * N_ITEMS] * len(LOG_C)


def test_table_flags_with_a_sweep_dir_exit_2(tmp_path, capsys):
    """--families, --map and --metric describe --csv tables; with a sweep DIR they were ignored
    without a word (exit 0, every family and metric flagged)."""
    _write(tmp_path / "results.jsonl", [_record(np.random.default_rng(7), i, 0) for i in range(3)])
    for extra in (["--families", "Foo"], ["--map", "obsscaling"], ["--metric", "em:chance=0:n=9"]):
        assert main(["emergence", str(tmp_path), *extra, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {extra[0]} describe --csv tables") and "drop them" in err
    assert not (tmp_path / "o").exists()


def test_the_recorded_answer_prior_is_the_level_to_clear(tmp_path):
    """The demo's add2 token accuracy rose from 0.10 to 0.33, which is what knowing only that a
    3-digit sum starts with 1 scores (evals.majority, scaling.evals.prior): at chance, not an
    onset, once the run records that level."""
    acc = np.linspace(0.10, 0.33, len(LOG_C))
    recs = []
    for i, a in enumerate(acc):
        r = _record(np.random.default_rng(i), i, 0)
        r["evals"] = {
            "scores": {"add2": {"1": {"token_acc": float(a), "n_items": 64}}},
            "chance": {"add2": {"token_acc": 0.1}},
            "majority": {"add2": {"token_acc": 0.33}},
        }
        recs.append(r)
    _write(tmp_path / "results.jsonl", recs)
    (r,) = analyze_results(tmp_path, tmp_path / "o", figures=False)["curves"]
    assert r["verdict"] == "flat_at_chance" and r["chance_level"] == 0.33, r["reason"]
    for rec in recs:
        del rec["evals"]["majority"]
    _write(tmp_path / "results.jsonl", recs)
    (r,) = analyze_results(tmp_path, tmp_path / "o", figures=False)["curves"]
    assert r["verdict"] != "flat_at_chance" and r["chance_level"] == 0.1
