"""Item counts and column maps for published evaluation tables (no data is stored here).

ITEM_COUNTS: number of items a published score was computed on, so Wilson intervals are honest.
Each entry records the source. Where a table scored a subsample, the count is the subsample and
the note says how it was established.
"""

from __future__ import annotations

ITEM_COUNTS: dict[str, dict] = {
    "arithmetic_2da": {
        "n": 2000,
        "chance": 0.0,
        "source": "GPT-3 arithmetic (Brown et al. 2020, '2,000 random instances' per task); "
        "EleutherAI/arithmetic on the HF hub: arithmetic_2da validation 2k rows",
    },
    "arithmetic_2dm": {"n": 2000, "chance": 0.0, "source": "as arithmetic_2da (2k rows)"},
    "arithmetic_3da": {"n": 2000, "chance": 0.0, "source": "as arithmetic_2da (2k rows)"},
    "arithmetic_3ds": {"n": 2000, "chance": 0.0, "source": "as arithmetic_2da (2k rows)"},
    "word_unscrambling": {
        "n": 2000,
        "chance": 0.0,
        "source": "BIG-bench word_unscrambling has 8,917 examples (google/bigbench dataset "
        "card), but every ObsScaling score is a multiple of 1/2000 (e.g. 0.0005), so "
        "2,000 items were scored",
    },
    "ipa_transliterate": {
        "n": 1003,
        "chance": 0.0,
        "source": "BIG-bench international_phonetic_alphabet_transliterate: 1,003 examples "
        "(google/bigbench dataset card); ObsScaling's 0.001994 = 2/1003 agrees",
    },
    "parsinlu_qa": {
        "n": 1050,
        "chance": 0.25,
        "source": "BIG-bench parsinlu_qa: 1,050 examples (google/bigbench dataset card), "
        "4-way multiple choice; scores are multiples of 1/1050",
    },
    "MMLU": {
        "n": 14042,
        "chance": 0.25,
        "source": "Hendrycks et al. 2021 test split, 14,042 questions, 4-way; Open LLM "
        "Leaderboard 5-shot (a subject-average, so n is approximate)",
    },
    "ARC-C": {
        "n": 1172,
        "chance": 0.25,
        "source": "Clark et al. 2018 ARC-Challenge test split, 1,172 questions (4-way; a few "
        "have 3 or 5 options); Open LLM Leaderboard 25-shot",
    },
    "HellaSwag": {
        "n": 10042,
        "chance": 0.25,
        "source": "Zellers et al. 2019 validation split, 10,042 contexts, 4 endings; Open LLM "
        "Leaderboard 10-shot",
    },
}


def _m(key: str, task: str, metric: str, **kw) -> dict:
    info = ITEM_COUNTS[key]
    return {"task": task, "metric": metric, "chance": info["chance"], "n_items": info["n"], **kw}


# Ruan et al. 2024 (ryoungj/ObsScaling): emergent-capability CSV joined with the benchmark CSV.
OBSSCALING = {
    "model": "Model",
    "join": "Model",
    "family": "Model Family",
    "compute": "FLOPs (1E21)",
    "compute_multiplier": 1e21,
    "params": "Model Size (B)",
    "params_multiplier": 1e9,
    "metrics": {
        "arithmetic_2da_2_acc": _m("arithmetic_2da", "arithmetic_2da", "acc", shots=2),
        "arithmetic_2dm_2_acc": _m("arithmetic_2dm", "arithmetic_2dm", "acc", shots=2),
        "arithmetic_3da_2_acc": _m("arithmetic_3da", "arithmetic_3da", "acc", shots=2),
        "arithmetic_3ds_2_acc": _m("arithmetic_3ds", "arithmetic_3ds", "acc", shots=2),
        "word_unscrambling_2_exact_match": _m(
            "word_unscrambling", "word_unscrambling", "exact_match", shots=2
        ),
        "ipa_transliterate_2_exact_match": _m(
            "ipa_transliterate",
            "ipa_transliterate",
            "exact_match",
            shots=2,
            companions=["ipa_transliterate_2_bleu"],
        ),
        "ipa_transliterate_2_bleu": {"task": "ipa_transliterate", "metric": "bleu", "shots": 2},
        "parsinlu_qa_2_acc": _m("parsinlu_qa", "parsinlu_qa", "acc", shots=2),
        "MMLU": _m("MMLU", "MMLU", "acc", shots=5),
        "ARC-C": _m("ARC-C", "ARC-C", "acc_norm", shots=25),
        "HellaSwag": _m("HellaSwag", "HellaSwag", "acc_norm", shots=10),
    },
}

BUILTIN_SPECS: dict[str, dict] = {"obsscaling": OBSSCALING}
