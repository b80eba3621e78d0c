"""Hindsight bounds for `make validate`: what its point-accuracy and half-width targets ask,
measured with the held-out losses in hand. No method using the same law forms and point
predictions can beat them, so a target below its bound is out of reach on these data."""

from __future__ import annotations

import numpy as np

OLD = "old chinchilla fit"  # the single-form 4,500-start grid fit, scored beside the forms


def _best_stack(E: np.ndarray) -> np.ndarray:
    """Log errors of the stacked average (weights on the simplex over E's columns, in log space
    as the predictor averages) with the least total |log error| over E's rows: a linear program."""
    from scipy.optimize import linprog

    n, k = E.shape
    eye = np.eye(n)
    r = linprog(
        np.r_[np.zeros(k), np.ones(n)],
        A_ub=np.block([[E, -eye], [-E, -eye]]),
        b_ub=np.zeros(2 * n),
        A_eq=np.r_[np.ones(k), np.zeros(n)][None],
        b_eq=[1.0],
        bounds=[(0, None)] * (k + n),
        method="highs",
    )
    return E @ r.x[:k]


def hindsight_bounds(res: dict, level: float = 0.9) -> dict:
    """What the targets ask, measured with the held-out truth in hand, so no method does better
    with these law forms: the 4-20x error of the best single form per data set, of the best form
    per run and of the best stacked average per data set (weights fitted to its 4-20x runs); and
    the median half-width if each data set's intervals had one width, the smallest covering
    ``level`` of its held-out runs around the shipped point predictions."""
    single, per_run, stack, widths = [], [], [], []
    for r in res["studies"]:
        far = r["far"]
        if not far.any():
            continue
        E = np.column_stack([v for k, v in r["log_errors"].items() if k not in ("chosen", OLD)])
        A = np.abs(np.expm1(E[far]))
        single.append(A[:, np.argmin(A.mean(axis=0))])
        per_run.append(A.min(axis=1))
        stack.append(np.abs(np.expm1(_best_stack(E[far]))))
    for r in res["studies"]:
        widths.append(np.full(r["abs_rel"].size, np.quantile(r["abs_rel"], level)))
    mean = lambda x: float(np.mean(np.concatenate(x)))  # noqa: E731
    return {
        "best_form_per_set_4_20x": mean(single),
        "best_form_per_run_4_20x": mean(per_run),
        "best_stack_per_set_4_20x": mean(stack),
        "median_hindsight_width": float(np.median(np.concatenate(widths))),
    }


def print_bounds(res: dict) -> None:
    b = hindsight_bounds(res, res["level"])
    print(
        f"\nhindsight bounds (held-out truth in hand): at 4-20x, the best single form per data "
        f"set errs {b['best_form_per_set_4_20x']:.2%}, the best form per run "
        f"{b['best_form_per_run_4_20x']:.2%}, the best stacked average per data set "
        f"{b['best_stack_per_set_4_20x']:.2%} (target <= 1.5%); one width per data set just "
        f"covering {res['level']:.0%} of its held-out runs around these predictions: median "
        f"{b['median_hindsight_width']:.2%} (target <= 3%)"
    )
