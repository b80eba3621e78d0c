"""Build emergence curves from our results.jsonl or from published CSV tables (column mapping).

Our records: the `evals` block of each results.jsonl record (contract format)
``{"scores": {task: {shots: {metric: value, "n_items": int}}}, "chance": {task: {metric: f}}}``.
exact_match is the primary metric; token_acc and logprob are its continuous companions.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from collections.abc import Collection
from pathlib import Path

import numpy as np

from analysis.emergence.curves import Curve
from analysis.hparams import best_variants
from analysis.records import dedupe, loss_unit_of
from scaling import results as R
from scaling.errors import UserError

COMPUTE_KEYS = (R.C_EXACT, R.C_6ND)  # older names are renamed on read (R.upgrade_result)
PARAMS_KEYS = (R.N_TOTAL,)
LOSS_KEYS = ("final_val_loss", "best_val_loss")
TOKENS_KEYS = (R.D,)
COMPANIONS = {"exact_match": ["token_acc", "logprob"]}


def _first(rec: dict, keys: tuple[str, ...]) -> float | None:
    for k in keys:
        v = rec.get(k)
        if isinstance(v, int | float) and math.isfinite(v) and v > 0:
            return float(v)
    return None


def _item_set(rec: dict) -> object:
    """Which test items the run was scored on: its eval seed (`scaling.evals.tasks.test_items`
    draws the same queries for one seed, n items being a prefix of more), so the seeds of a
    training-seed sweep, all at eval.seed 0, share one set. A record whose config does not name
    its eval seed counts as its own set."""
    ev = (rec.get("config") or {}).get("eval")
    seed = ev.get("seed", 0) if isinstance(ev, dict) else None
    if isinstance(seed, int) and not isinstance(seed, bool):
        return ("eval.seed", seed)
    return ("run", rec.get("run_id"), id(rec))


def read_records(path: str | Path) -> list[dict]:
    """Parse results.jsonl; skip blank lines; UserError names the bad line. A run id on several
    lines counts once, its last line (analysis.records: the law table notes the repeats)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.jsonl"
    if not p.is_file():
        raise UserError(f"no results file at {p}: pass a sweep directory containing results.jsonl")
    # damaged lines: reported once and skipped, intact records kept
    return [R.upgrade_result(r) for r in dedupe(R.read_records(p, required=()), p.name)[0]]


def _scale_of(rec: dict, scale_keys: tuple[str, ...]) -> float | None:
    """The run's scale. On compute, an IsoFLOP cell's nominal budget wins over its exact FLOPs,
    which differ from the budget by rounding (< 1%) and would split one budget into many scales."""
    if scale_keys is COMPUTE_KEYS:
        budget = (rec.get("cell") or {}).get("budget")
        if isinstance(budget, int | float) and math.isfinite(budget) and budget > 0:
            return float(budget)
    return _first(rec, scale_keys)


def _frontier(recs: list[dict], scale_keys: tuple[str, ...]) -> list[dict]:
    """At each scale value keep the (N, D) configuration with the lowest mean val loss.

    An IsoFLOP grid has several models per compute budget; the emergence curve follows the
    compute-optimal frontier. Seeds of the kept configuration are all returned (pooled later).
    Runs of a grid with [hparams] axes arrive already reduced to each cell's lowest-loss
    variant (analysis.hparams.best_variants, as in the scaling fits), so lr variants are
    neither separate points nor pooled as if they were seeds.
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in recs:
        sig = (_first(r, PARAMS_KEYS), _first(r, TOKENS_KEYS))
        groups[(float(f"{_scale_of(r, scale_keys):.4g}"), sig)].append(r)
    best: dict[float, tuple[float, list[dict]]] = {}
    for (sc, _), rs in groups.items():
        losses = [_first(r, LOSS_KEYS) for r in rs]
        loss = float(np.mean([v for v in losses if v is not None] or [math.inf]))
        if sc not in best or loss < best[sc][0]:
            best[sc] = (loss, rs)
    return [r for _, rs in best.values() for r in rs]


def curves_from_results(
    path: str | Path, *, scale: str = "compute", run_ids: Collection[str] | None = None
) -> list[Curve]:
    """One Curve per (task, metric, shots, family) from results.jsonl records with evals (only
    the runs in `run_ids` when given: `scaling analyze --where`)."""
    keys = {"compute": COMPUTE_KEYS, "params": PARAMS_KEYS}.get(scale)
    if keys is None:
        raise UserError(f"--scale {scale!r} is not one of compute, params")
    scored = [
        r
        for r in read_records(path)
        if r.get("evals") and r.get("status", "done") == "done"
        if run_ids is None or r.get("run_id") in run_ids
    ]
    recs = [r for r in scored if _scale_of(r, keys)]
    if len(recs) < len(scored):  # they were left out without a word
        other = "params" if scale == "compute" else "compute"
        print(
            f"  note: {len(scored) - len(recs)} run(s) with evals have no positive {scale} value "
            f"({', '.join(keys)}): left out of the curves (--scale {other} may have it)",
            file=sys.stderr,
        )
    if not recs:
        return []
    fams: dict[str, list[dict]] = defaultdict(list)
    for r in recs:
        fams[str(r.get("family") or r.get("sweep") or "ours")].append(r)
    curves: list[Curve] = []
    dropped: list[str] = []
    differ: list[str] = []
    for fam, rs in sorted(fams.items()):
        rs = _frontier(best_variants(rs)[0], keys)  # lr/batch variants: the fits' choice
        cells: dict[tuple, dict] = defaultdict(lambda: defaultdict(list))
        chance: dict[tuple, list] = defaultdict(list)  # (rate, items) per eval block
        majority: dict[tuple, list] = defaultdict(list)
        for r in rs:
            sc = _scale_of(r, keys)
            for task, shot, m in _eval_blocks(r):
                n = _n_items(m.get("n_items"), r, task)  # missing: an error, not n = 1
                for metric, val in m.items():
                    if metric == "n_items":
                        continue
                    if val is None or not math.isfinite(val):
                        dropped.append(f"{r.get('run_id', '?')} {task}/{metric}")
                        continue
                    cells[(task, metric, shot)][sc].append(
                        (float(val), n, _first(r, LOSS_KEYS), _item_set(r), r.get("run_id"))
                    )
                    for key, into in (("chance", chance), ("majority", majority)):
                        if (v := _rate(r, key, task, metric)) is not None:
                            into[(task, metric)].append((v, n))
        units = {loss_unit_of(r) for r in rs}  # mixed units: the loss axis says none
        unit = units.pop() if len(units) == 1 else None
        ch = {k: _level(v, f"{fam} chance of {k[0]}/{k[1]}", differ) for k, v in chance.items()}
        mj = {k: _level(v, f"{fam} majority of {k[0]}/{k[1]}", differ) for k, v in majority.items()}
        for (task, metric, shot), pts in sorted(cells.items()):
            c = _pool(task, metric, shot, fam, pts, ch.get((task, metric)))
            c.loss_unit = unit
            c.majority = mj.get((task, metric)) if c.bounded else None
            curves.append(c)
    if differ:
        print(
            f"  note: runs record different levels for the same task and metric (items dropped "
            f"for seq_len?): {'; '.join(differ[:3])}{'; ...' if len(differ) > 3 else ''}",
            file=sys.stderr,
        )
    if dropped:
        print(
            f"  note: {len(dropped)} non-finite eval score(s) dropped ({', '.join(dropped[:3])}"
            f"{', ...' if len(dropped) > 3 else ''})",
            file=sys.stderr,
        )
    return curves


def _level(pairs: list[tuple[float, int]], what: str, differ: list[str]) -> float:
    """One chance (or majority) level from the runs' (rate, n_items): the item-weighted mean, as
    the pooled score is item-weighted. Runs that dropped items (too long for seq_len) record
    their own level; when the levels differ, `differ` gets a line naming the range."""
    v, w = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs], float)
    if np.ptp(v) <= 1e-12:
        return float(v[0])  # one level: kept exactly (a weighted mean would round it)
    mean = float(np.sum(v * w) / w.sum())
    differ.append(f"{what} {v.min():.4g} to {v.max():.4g}, using the item-weighted {mean:.4g}")
    return mean


EVALS_FORMAT = (
    '{"scores": {TASK: {SHOTS: {METRIC: number, "n_items": N}}}, "chance": {TASK: {METRIC: rate}}}'
)


def _bad_evals(rec: dict, where: str, v) -> UserError:
    text = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
    return UserError(
        f"run {rec.get('run_id', '?')}: {where} is {text}; the evals block must read "
        f"{EVALS_FORMAT} (fix or drop the record in results.jsonl)"
    )


def _eval_blocks(rec: dict) -> list[tuple[str, int, dict]]:
    """(task, shots, {metric: value}) of a record's evals block; UserError naming the part that
    does not follow the contract (a traceback otherwise). A null or NaN score is kept here (the
    caller drops it with a note); a string or boolean score is an error."""
    ev = rec["evals"]
    if not isinstance(ev, dict):
        raise _bad_evals(rec, "evals", ev)
    scores = ev.get("scores") or {}
    if not isinstance(scores, dict):
        raise _bad_evals(rec, "evals.scores", scores)
    out = []
    for task, by_shot in scores.items():
        if not isinstance(by_shot, dict):
            raise _bad_evals(rec, f"evals.scores[{task!r}]", by_shot)
        for shot, m in by_shot.items():
            try:
                k = int(shot)
            except (TypeError, ValueError):
                raise _bad_evals(rec, f"a shot count of evals.scores[{task!r}]", shot) from None
            if not isinstance(m, dict):
                raise _bad_evals(rec, f"evals.scores[{task!r}][{shot!r}]", m)
            for metric, val in m.items():
                if val is not None and (isinstance(val, bool) or not isinstance(val, int | float)):
                    raise _bad_evals(rec, f"evals.scores[{task!r}][{shot!r}][{metric!r}]", val)
            out.append((str(task), k, m))
    return out


def _rate(rec: dict, key: str, task: str, metric: str) -> float | None:
    """evals[key][task][metric] (key: chance or majority) as a float, None when absent."""
    block = rec["evals"].get(key) or {}
    if not isinstance(block, dict):
        raise _bad_evals(rec, f"evals.{key}", block)
    by_metric = block.get(task) or {}
    if not isinstance(by_metric, dict):
        raise _bad_evals(rec, f"evals.{key}[{task!r}]", by_metric)
    v = by_metric.get(metric)
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        raise _bad_evals(rec, f"evals.{key}[{task!r}][{metric!r}]", v) from None


def _n_items(v, rec: dict, task: str) -> int:
    """The item count of one eval block: a positive whole number (it weighs the pooled seeds)."""
    if isinstance(v, int | float) and math.isfinite(v) and v >= 1 and v == int(v):
        return int(v)
    raise UserError(
        f"run {rec.get('run_id', '?')}: evals {task} has n_items={v!r}; it must be the positive "
        "number of test items scored (fix or drop the record in results.jsonl)"
    )


def _check_bounded(task, metric, pts: dict, chance: float) -> None:
    if not 0 <= chance < 1:
        raise UserError(
            f"evals chance[{task}][{metric}] = {chance!r}: a chance level is a rate in [0, 1)"
        )
    for sc, ps in pts.items():
        for p in ps:
            if not 0 <= p[0] <= 1:
                raise UserError(
                    f"run {p[4]}: evals {task}/{metric} = {p[0]!r} at scale {sc:g}: a metric with "
                    "a chance level is a rate in [0, 1] (a percentage? store it divided by 100)"
                )


def _distinct_items(points: list[tuple]) -> float:
    """Items scored at one scale, each item set counted once (its largest count: the n items
    of one eval seed are a prefix of any larger draw)."""
    largest: dict[object, float] = {}
    for p in points:
        largest[p[3]] = max(largest.get(p[3], 0.0), float(p[1]))
    return float(sum(largest.values()))


def _pool(task, metric, shot, fam, pts: dict, chance: float | None) -> Curve:
    """Pool seeds at each scale: the score is the item-weighted mean of the runs; the item count
    adds up over distinct item sets only (runs scored on the same items are not independent
    samples of the task: two seeds on one set of 64 items have 64 items, not 128, of item
    sampling noise; their model-to-model scatter is seed_var = var(seed means) / n_seeds)."""
    scales = sorted(pts)
    y, n, sv, ns, loss = [], [], [], [], []
    bounded = chance is not None and metric != "logprob"
    if bounded:
        _check_bounded(task, metric, pts, chance)
    for sc in scales:
        vals = np.array([p[0] for p in pts[sc]])
        items = np.array([p[1] for p in pts[sc]], float)
        y.append(float(np.sum(vals * items) / items.sum()) if bounded else float(vals.mean()))
        n.append(_distinct_items(pts[sc]))
        sv.append(float(vals.var(ddof=1) / len(vals)) if len(vals) > 1 else 0.0)
        ns.append(len(vals))
        ls = [p[2] for p in pts[sc] if p[2] is not None]
        loss.append(float(np.mean(ls)) if ls else math.nan)
    return Curve(
        task=task,
        metric=metric,
        family=fam,
        shots=shot,
        scale=np.array(scales),
        y=np.array(y),
        n_items=np.array(n) if bounded else None,
        chance=chance if bounded else None,
        n_seeds=np.array(ns),
        seed_var=np.array(sv),
        loss=None if all(math.isnan(v) for v in loss) else np.array(loss),
        companions=list(COMPANIONS.get(metric, [])),
    )


# published tables: analysis.emergence.tables
