"""The answer-prior baseline of the few-shot tasks (scaling.evals.prior) and its `majority`
block in the evals of a run: the level a token accuracy must clear before it means an ability."""

from __future__ import annotations

import pytest

from scaling.config import from_dict
from scaling.evals import prior
from scaling.evals import tasks as T


def test_majority_by_hand_on_three_items(monkeypatch):
    """Teacher forced, as the model is scored: each answer character is predicted from the
    answer prefix alone; exact match also needs the final newline."""
    table = {"": "1", "1": "0", "10": "0", "100": "\n", "9": "9", "99": "\n"}
    monkeypatch.setattr(prior, "answer_prior", lambda task: table)
    items = [
        T.Item("50+50", "100", "50+50"),
        T.Item("90+9", "99", "9+90"),
        T.Item("10+10", "20", ""),
    ]
    # 100: 1 0 0 \n all right; 99: '1' wrong, 9 and \n right; 20: '1' wrong, '2' unseen
    got = prior.majority("add2", items)
    assert got == {
        "exact_match": pytest.approx(1 / 3),
        "token_acc": pytest.approx((1 + 0.5 + 0) / 3),
    }


def test_the_arithmetic_prior_is_far_above_the_uniform_guess():
    """Every 3-digit sum of two 2-digit numbers starts with 1 (60% of add2 answers): a model that
    learned only that gets about a third of add2's answer characters right, not 1/10."""
    items = T.test_items("add2", 64, 0)
    assert prior.answer_prior("add2")[""] == "1"
    maj = prior.majority("add2", items)
    assert maj["token_acc"] > 0.25 > T.chance("add2", items)["token_acc"] == 0.1
    assert prior.majority("add3", T.test_items("add3", 64, 0))["token_acc"] > 0.2
    assert prior.majority("copy", T.test_items("copy", 64, 0))["token_acc"] < 0.1  # random letters
    prior.answer_prior.cache_clear()  # a fresh draw is the same draw
    assert prior.majority("add2", items) == maj


def test_evaluate_records_the_majority_of_the_items_scored():
    from flax import nnx

    from scaling.evals.score import build_group, evaluate
    from scaling.model import Transformer

    cfg = from_dict(
        {
            "model": {"preset": "cpu-3xs", "seq_len": 64},
            "eval": {"n_items": 16, "shots": [0, 1], "tasks": ["add2", "unscramble"]},
        }
    )
    out = evaluate(Transformer(cfg.model, rngs=nnx.Rngs(0)), cfg)
    assert set(out["majority"]) == set(out["chance"]) == {"add2", "unscramble"}
    for task in ("add2", "unscramble"):
        items = build_group(task, 0, 16, 0, 64, 1).queries
        assert out["majority"][task] == prior.majority(task, items)
        assert out["majority"][task]["token_acc"] > out["chance"][task]["token_acc"]
