"""Emergence flagger on published data: ObsScaling (Ruan et al. 2024), Pythia and OPT families.

Reads ../shared/data (never copied into the repo); skips when it is absent.
"""

from __future__ import annotations

import functools
import json

import pytest

from analysis.emergence import cli as emergence_cli
from analysis.emergence.flagger import analyze_curves
from analysis.emergence.published import ITEM_COUNTS, OBSSCALING
from analysis.emergence.tables import curves_from_table

FILES = ("obsscaling_emergent_capability_eval.csv", "obsscaling_base_llm_benchmark_eval.csv")


@functools.cache
def _analyse(data_dir: str) -> dict:
    curves = curves_from_table(
        [f"{data_dir}/{f}" for f in FILES], OBSSCALING, families=["Pythia", "OPT"]
    )
    return {(r["family"], r["task"], r["metric"]): r for r in analyze_curves(curves)}


@pytest.fixture
def verdicts(shared_data) -> dict:
    return _analyse(str(shared_data))


def _get(verdicts, fam, task, metric="acc"):
    return verdicts[(fam, task, metric)]


@pytest.mark.parametrize(
    "task", ["arithmetic_2da", "arithmetic_2dm", "arithmetic_3da", "arithmetic_3ds"]
)
def test_pythia_arithmetic_emergent(verdicts, task):
    r = _get(verdicts, "Pythia", task)
    assert r["verdict"] == "emergent", r["reason"]
    assert r["n_scales"] == 8


def test_pythia_non_monotone_warning(verdicts):
    # 2da, 3da, 3ds peak at 2.8B and fall back (e.g. 0.795 -> 0.486 -> 0.446); 2dm keeps rising
    for task in ("arithmetic_2da", "arithmetic_3da", "arithmetic_3ds"):
        assert "non_monotone" in _get(verdicts, "Pythia", task)["warnings"], task


@pytest.mark.parametrize("task", ["arithmetic_2da", "arithmetic_2dm"])
def test_opt_two_digit_emergent(verdicts, task):
    assert _get(verdicts, "OPT", task)["verdict"] == "emergent"


@pytest.mark.parametrize("task", ["arithmetic_3da", "arithmetic_3ds"])
def test_opt_three_digit_never_smooth(verdicts, task):
    assert _get(verdicts, "OPT", task)["verdict"] in ("emergent", "insufficient_resolution")


@pytest.mark.parametrize("fam", ["Pythia", "OPT"])
def test_smooth_and_flat_benchmarks(verdicts, fam):
    hs = _get(verdicts, fam, "HellaSwag", "acc_norm")
    # Pythia leaves chance at its 2nd model: too few earlier points to test a jump against
    want = "insufficient_resolution" if fam == "Pythia" else "smooth"
    assert hs["verdict"] == want, hs["reason"]
    arc = _get(verdicts, fam, "ARC-C", "acc_norm")
    assert arc["verdict"] not in ("emergent", "emergent_metric_induced"), arc["reason"]
    mmlu = _get(verdicts, fam, "MMLU")
    assert mmlu["verdict"] == "flat_at_chance"
    assert max(mmlu["score"]) > 0.265  # statistically above 0.25 at 14k items, yet flat


@pytest.mark.parametrize("fam", ["Pythia", "OPT"])
def test_ipa_is_a_mirage_pair(verdicts, fam):
    # what the README says: BLEU jumps between adjacent models; the check is n/a (no onset)
    bleu = _get(verdicts, fam, "ipa_transliterate", "bleu")
    assert "jump_between_adjacent_scales" in bleu["warnings"]
    em = _get(verdicts, fam, "ipa_transliterate", "exact_match")
    assert em["companions"] == ["bleu"]
    assert set(em["mirage"]["companion_verdicts"]) == {"bleu"}
    assert (fam, "ipa_transliterate", "bleu") in verdicts


def test_item_counts_documented():
    for key, info in ITEM_COUNTS.items():
        assert info["n"] > 0 and info["source"], key
    assert ITEM_COUNTS["MMLU"]["n"] == 14042 and ITEM_COUNTS["ARC-C"]["n"] == 1172
    assert ITEM_COUNTS["HellaSwag"]["n"] == 10042


def test_cli_csv_with_flag_mapping(shared_data, tmp_path, capsys):
    """The same table through `scaling emergence --csv` with an inline column map."""
    from scaling.cli import build_parser

    out = tmp_path / "em"
    argv = [
        "emergence",
        "--csv",
        str(shared_data / FILES[0]),
        "--csv",
        str(shared_data / FILES[1]),
        "--map",
        "family=Model Family",
        "--map",
        "compute=FLOPs (1E21)",
        "--map",
        "compute_multiplier=1e21",
        "--families",
        "Pythia",
        "--metric",
        "arithmetic_2da_2_acc:chance=0:n=2000",
        "--metric",
        "MMLU:chance=0.25:n=14042",
        "--metric",
        "ipa_transliterate_2_exact_match:chance=0:n=1003:pair=ipa_transliterate_2_bleu:scale=1",
        "--metric",
        "ipa_transliterate_2_bleu:scale=100",
        "--out",
        str(out),
    ]
    args = build_parser().parse_args(argv)
    assert args.handler is emergence_cli.run
    assert args.handler(args) == 0
    text = capsys.readouterr().out
    assert "emergent" in text and "mirage pair" in text
    report = json.loads((out / "emergence.json").read_text())
    by = {c["task"]: c["verdict"] for c in report["curves"]}
    assert by["arithmetic_2da_2_acc"] == "emergent" and by["MMLU"] == "flat_at_chance"
    assert list(out.glob("*.png")), "a figure per flagged curve"
    assert report["mirage_pairs"][0]["primary"] == "ipa_transliterate_2_exact_match"
