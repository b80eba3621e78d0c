"""The answer-prior baseline of the few-shot tasks: what a model scores that knows only how the
answers of a task are distributed, not how they depend on the query (pure Python + numpy).

The nominal chance of `scaling.evals.tasks.chance` is a uniform guess over the answer alphabet.
Answers are not uniform: every 3-digit sum of two 2-digit numbers starts with 1, so a model that
has only learned "an add2 answer usually starts with 1" gets a third of those characters right
(token accuracy about 0.34 on add2, 0.26 on add3, 0.13 on unscramble's English-like words, against
a nominal 0.1 / 0.1 / 0.04). That is the majority-label rate of these tasks: `scaling emergence`
takes max(chance, majority) as the level an ability must clear (analysis.emergence.stats).

The baseline is scored the way the model is (teacher forced, scaling.evals.score): at each answer
position it predicts the most common next character after the answer prefix among
PRIOR_ITEMS answers of the task's training pool (a fixed draw, with replacement, as the
training mix draws them); token_acc counts the answer characters it gets right, exact_match
needs every character and the final newline.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from functools import cache

import numpy as np

from scaling.evals import tasks as T

PRIOR_ITEMS = 4096


@cache
def answer_prior(task: str) -> dict[str, str]:
    """answer prefix -> its most common next character ("\\n" ends the answer), from a fixed
    draw of PRIOR_ITEMS training-pool answers of `task` (the same in every run)."""
    t = T.get_task(task)
    rng = np.random.default_rng([T._task_id(task), 4])
    counts: defaultdict[str, Counter] = defaultdict(Counter)
    n = 0
    while n < PRIOR_ITEMS:
        item = t.sample(rng)
        if T.pool_of(task, item.key) != T.TRAIN_POOL:
            continue
        n += 1
        answer = item.output + "\n"
        for i, ch in enumerate(answer):
            counts[answer[:i]][ch] += 1
    return {prefix: c.most_common(1)[0][0] for prefix, c in counts.items()}


def majority(task: str, items: list[T.Item]) -> dict[str, float]:
    """Exact match and token accuracy of the answer-prior predictor on `items` (the items
    scored), in the form of `tasks.chance`."""
    prior = answer_prior(task)
    em, acc = [], []
    for item in items:
        answer = item.output + "\n"
        hits = [prior.get(answer[:i]) == ch for i, ch in enumerate(answer)]
        em.append(all(hits))
        acc.append(sum(hits[:-1]) / max(len(item.output), 1))  # answer characters only
    if not items:
        return {"exact_match": 0.0, "token_acc": 0.0}
    return {"exact_match": float(np.mean(em)), "token_acc": float(np.mean(acc))}
