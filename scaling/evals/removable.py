"""How much can be removed? Pruning-curve bookkeeping and the removable fraction with a CI.

Pure numpy (no JAX): `scaling.evals.ablate` calls it on the per-item scores it records, and tests
call it on synthetic curves.

Definitions (for one task, shot count and metric; per-item scores m[j, i] at pruning step j,
step 0 = nothing removed, steps sorted by the fraction removed):
- retained_j = 1 - (mean_i m[0, i] - mean_i m[j, i]) / |mean_i m[0, i]|: 1 = no change, and
  0.95 = a 5% relative drop (for the log-probability, which is negative, a drop is a decrease).
- removable = the largest fraction f_j such that every step up to j keeps retained >= 1 - tol;
  0 when the first step already drops more.
- CI: resample the eval items with replacement (the same draw for every step, since each step
  scores the same items), recompute the removable fraction, take percentiles.
- eligible: exact match and token accuracy count only where the unpruned model beats chance
  (the lower end of the baseline's resampling interval is above chance); a curve at chance has
  nothing to lose. The log-probability is always eligible.
- suite: the mean over eligible (task, K) groups of `retained`, then the same rule.
"""

from __future__ import annotations

import math

import numpy as np

from scaling.errors import UserError

METRICS = ("exact_match", "token_acc", "logprob")
KINDS = ("heads", "ffn", "both")
DEFAULT_FRACTIONS = tuple(round(0.1 * i, 1) for i in range(1, 10))


def check_fractions(fractions: tuple[float, ...]) -> tuple[float, ...]:
    """Sorted distinct fractions; UserError for any outside the open interval (0, 1)."""
    if not fractions:
        raise UserError("no pruning fractions given; pass e.g. --fractions 0.1,0.2,0.5")
    for f in fractions:
        if not (isinstance(f, int | float) and math.isfinite(f) and 0 < f < 1):
            raise UserError(
                f"pruning fraction {f!r} is outside (0, 1); pass fractions like 0.1,0.5"
            )
    return tuple(sorted(set(float(f) for f in fractions)))


def n_removed(fraction: float, total: int) -> int:
    """Components removed at `fraction` of `total`: floor (never rounds up to remove more)."""
    return int(math.floor(fraction * total + 1e-9))


def plan_steps(
    fractions: tuple[float, ...], n_heads: int, n_ffn: int, kinds: tuple[str, ...]
) -> list[dict]:
    """The pruning steps: one per (kind, fraction), each naming how many heads and FFN blocks
    it removes and the key of its mask (steps with equal masks share one evaluation)."""
    steps = []
    for kind in kinds:
        for f in fractions:
            nh = n_removed(f, n_heads) if kind in ("heads", "both") else 0
            nf = n_removed(f, n_ffn) if kind in ("ffn", "both") else 0
            actual = removed_fraction(kind, nh, nf, n_heads, n_ffn)
            steps.append(
                {"kind": kind, "fraction": f, "actual": actual, "n_heads": nh, "n_ffn": nf,
                 "key": mask_key(nh, nf)}
            )  # fmt: skip
    return steps


def removed_fraction(kind: str, nh: int, nf: int, n_heads: int, n_ffn: int) -> float:
    """The fraction of `kind`'s components a step actually removes (floor of the requested
    one): heads nh / H, FFN nf / L, both (nh + nf) / (H + L). A step that removes nothing is at
    0, so it never counts as removable progress."""
    if kind == "heads":
        return nh / max(n_heads, 1)
    if kind == "ffn":
        return nf / max(n_ffn, 1)
    return (nh + nf) / max(n_heads + n_ffn, 1)


def mask_key(n_heads: int, n_ffn: int) -> str:
    return f"h{n_heads}-f{n_ffn}"


def masks_for(
    n_heads_removed: int, n_ffn_removed: int, head_order: np.ndarray, ffn_order: np.ndarray,
    shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Head mask [L, N] and FFN mask [L] with the first `n` components of each order zeroed
    (orders are flat head indices l * N + n and layer indices, least important first)."""
    hm = np.ones(shape[0] * shape[1], np.float32)
    hm[np.asarray(head_order[:n_heads_removed], int)] = 0.0
    fm = np.ones(shape[0], np.float32)
    fm[np.asarray(ffn_order[:n_ffn_removed], int)] = 0.0
    return hm.reshape(shape), fm


def _finite(x: np.ndarray) -> list[float | None]:
    """JSON-safe list: None where undefined (a baseline of 0 has no relative drop)."""
    return [float(v) if np.isfinite(v) else None for v in x]


def _retained(means_JB: np.ndarray) -> np.ndarray:
    base = means_JB[:1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - (base - means_JB) / np.abs(base)


def _largest_within(retained_JB: np.ndarray, fractions_J: np.ndarray, tol: float) -> np.ndarray:
    """Per column: the largest fractions_J[j] (j >= 1) with retained >= 1 - tol at all steps
    1..j; 0 if none. Row 0 is the unpruned baseline."""
    ok_JB = np.nan_to_num(retained_JB[1:], nan=-np.inf) >= 1.0 - tol - 1e-12
    prefix_ok = np.cumprod(ok_JB, axis=0).astype(bool)
    f = np.where(prefix_ok, fractions_J[1:, None], 0.0)
    return f.max(axis=0) if f.size else np.zeros(retained_JB.shape[1])


def resample_means(items_JI: np.ndarray, idx_BI: np.ndarray) -> np.ndarray:
    """Mean over items at every step, one column per resample of the item indices: [J, B]."""
    return items_JI[:, idx_BI].mean(axis=-1)


def removable(
    items_by_group: dict[str, np.ndarray],
    fractions_J: np.ndarray,
    chance: dict[str, float | None],
    *,
    tol: float = 0.05,
    resamples: int = 1000,
    level: float = 0.9,
    seed: int = 0,
) -> dict:
    """Removable fraction for every group of one (kind, metric) curve and for the suite.

    `items_by_group[g]`: per-item scores [J, I_g] along the curve (row 0 = nothing removed,
    fractions_J ascending with fractions_J[0] = 0). `chance[g]`: chance level of the metric
    (None: always eligible). Returns {"groups": {g: summary}, "suite": summary, "suite_draws":
    [B]} where summary = {estimate, lo, hi, eligible, retained: [J]}."""
    rng = np.random.default_rng(seed)
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    out: dict = {"groups": {}}
    point_ret, draw_ret, eligible = [], [], []
    for g, items in items_by_group.items():
        items = np.asarray(items, np.float64)
        n = items.shape[1]
        idx = rng.integers(0, n, (resamples, n))
        m_point = items.mean(axis=1)[:, None]  # [J, 1]
        m_draw = resample_means(items, idx)  # [J, B]
        c = chance.get(g)
        ok = c is None or bool(np.quantile(m_draw[0], lo_q) > c)
        r_point, r_draw = _retained(m_point), _retained(m_draw)
        est = float(_largest_within(r_point, fractions_J, tol)[0])
        draws = _largest_within(r_draw, fractions_J, tol)
        out["groups"][g] = {
            "estimate": est,
            "lo": float(np.quantile(draws, lo_q)),
            "hi": float(np.quantile(draws, hi_q)),
            "eligible": ok,
            "retained": _finite(r_point[:, 0]),
        }
        if ok:
            point_ret.append(r_point)
            draw_ret.append(r_draw)
            eligible.append(g)
    if eligible:
        rp, rd = np.mean(point_ret, axis=0), np.mean(draw_ret, axis=0)
        draws = _largest_within(rd, fractions_J, tol)
        out["suite"] = {
            "estimate": float(_largest_within(rp, fractions_J, tol)[0]),
            "lo": float(np.quantile(draws, lo_q)),
            "hi": float(np.quantile(draws, hi_q)),
            "eligible": True,
            "groups": eligible,
            "retained": _finite(rp[:, 0]),
        }
        out["suite_draws"] = [float(x) for x in draws]
    else:
        out["suite"] = {"estimate": None, "lo": None, "hi": None, "eligible": False, "groups": []}
        out["suite_draws"] = []
    return out
