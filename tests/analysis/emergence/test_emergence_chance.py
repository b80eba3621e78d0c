"""Emergence verdicts that respect chance: majority-label rates, item counts, non-monotone
curves, and curves already above chance at the smallest scale."""

import json

import numpy as np
import pytest

from analysis.emergence.curves import Curve
from analysis.emergence.flagger import analyze_curves
from analysis.emergence.report import write_report
from analysis.emergence.stats import chance_level
from analysis.emergence.tables import parse_metric_flag
from scaling.cli import main
from scaling.errors import UserError

X = np.arange(8) * 0.5 + 20  # log10 compute, half a decade apart


def _curve(y, n, chance, majority=None, **kw):
    return Curve(
        task=kw.pop("task", "t"),
        metric=kw.pop("metric", "acc"),
        family="f",
        scale=10**X,
        y=np.asarray(y, float),
        n_items=np.full(8, float(n)),
        chance=chance,
        majority=majority,
        **kw,
    )


def _one(c):
    return analyze_curves([c])[0]


# a two-way task with 104 items (38 of one label, 66 of the other): small models always give the
# minority label (36.5%), larger ones always give the majority label (63.5%)
LABEL_SWITCH = [38 / 104] * 4 + [66 / 104] * 4


def test_switching_between_always_one_label_rates_is_not_emergent():
    known = _one(_curve(LABEL_SWITCH, 104, 0.5, majority=66 / 104))
    assert known["verdict"] == "flat_at_chance", known["reason"]
    assert known["chance_level"] == pytest.approx(0.635, abs=1e-3)
    assert "majority-label rate" in known["reason"]
    inferred = _one(_curve(LABEL_SWITCH, 104, 0.5))  # no label counts: inferred from the 36.5%
    assert inferred["verdict"] == "flat_at_chance", inferred["reason"]
    assert "chance_level_inferred_from_a_below_chance_score" in inferred["warnings"]
    assert chance_level(0.5, None, np.array([0.49, 0.51]), np.array([104, 104]))[2] is False


def test_a_real_jump_above_the_majority_rate_is_still_emergent():
    y = [0.635, 0.625, 0.645, 0.635, 0.64, 0.92, 0.95, 0.96]
    r = _one(_curve(y, 2000, 0.5, majority=0.635))
    assert r["verdict"] == "emergent", r["reason"]
    # with only the nominal 0.5, the flat phase at 63.5% already counts as "above chance"
    nominal = _one(_curve(y, 2000, 0.5))
    assert nominal["verdict"] == "smooth"
    assert nominal["reason"].startswith("above chance from the smallest scale")


def test_a_jump_must_clear_the_binomial_noise_of_its_item_count():
    y = [0.0, 0.0, 0.0, 0.0, 0.15, 0.2, 0.25, 0.3]
    big = _one(_curve(y, 2000, 0.0))
    assert big["verdict"] == "emergent", big["reason"]
    small = _one(_curve(y, 20, 0.0))  # 3 of 20 right: the 95% CIs overlap those of 0 of 20
    assert small["verdict"] not in ("emergent", "emergent_metric_induced"), small["reason"]
    assert all(not r["ci_separated"] for r in small["lfo"])


def test_a_jump_that_falls_back_to_chance_is_non_monotone_not_emergent():
    spike = _one(_curve([0, 0, 0, 0, 0.5, 0.0, 0.01, 0.0], 1000, 0.0))
    assert spike["verdict"] == "non_monotone", spike["reason"]
    assert "falls back to chance at index 5" in spike["reason"]
    # an overshoot that settles well above chance (Pythia's 3-digit subtraction) stays emergent
    settle = _one(_curve([0.001, 0.003, 0.002, 0.002, 0.004, 0.236, 0.092, 0.124], 2000, 0.0))
    assert settle["verdict"] == "emergent", settle["reason"]
    assert "non_monotone" in settle["warnings"]


def test_above_chance_from_the_smallest_scale_is_said_in_words(tmp_path):
    rising = _curve(np.linspace(0.3, 0.6, 8), 500, 0.0, metric="exact_match", companions=["bleu"])
    bleu = Curve(task="t", metric="bleu", family="f", scale=10**X, y=np.linspace(10, 30, 8))
    res = analyze_curves([rising, bleu])
    em = next(r for r in res if r["metric"] == "exact_match")
    assert em["verdict"] == "smooth" and em["onset_index"] == 0
    assert em["reason"] == "above chance from the smallest scale: no flat phase to jump from"
    b = next(r for r in res if r["metric"] == "bleu")  # continuous: no onset, no test of its own
    assert b["verdict"] == "not_tested" and not b["testable"] and b["p_holm"] is None
    report = write_report(res, tmp_path, scale="compute", source="test", figures=False)
    assert report["mirage_pairs"][0]["onset"] == "above chance from the smallest scale"
    assert json.loads((tmp_path / "emergence.json").read_text())["curves"][0]["chance_level"] == 0


def test_majority_option_of_the_metric_flag(tmp_path, capsys):
    assert parse_metric_flag("acc:chance=0.5:majority=0.635:n=104") == (
        "acc",
        {"chance": 0.5, "majority": 0.635, "n_items": 104},
    )
    with pytest.raises(UserError, match=r"majority=1.5 must be a rate in \[0, 1\)"):
        parse_metric_flag("acc:chance=0.5:majority=1.5")
    rows = ["Model,Model Family,FLOPs,acc"] + [
        f"m{i},fam,{10 ** X[i]:.6g},{y:.6f}" for i, y in enumerate(LABEL_SWITCH)
    ]
    table = tmp_path / "scores.csv"
    table.write_text("\n".join(rows) + "\n")
    base = ["emergence", "--csv", str(table), "--map", "family=Model Family", "--map"]
    argv = [*base, "compute=FLOPs", "--no-figures", "--out", str(tmp_path / "em")]
    assert main([*argv, "--metric", "acc:chance=0.5:majority=0.635:n=104"]) == 0
    assert "flat_at_chance" in capsys.readouterr().out
    assert main([*argv, "--metric", "acc:chance=0.5:majority=abc:n=104"]) == 2
    err = capsys.readouterr().err
    assert "majority='abc' is not a number" in err and err.count("\n") == 1
