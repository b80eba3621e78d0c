"""Build emergence curves from our results.jsonl or from published CSV tables (column mapping).

Our records: the `evals` block of each results.jsonl record (contract format)
``{"scores": {task: {shots: {metric: value, "n_items": int}}}, "chance": {task: {metric: f}}}``.
exact_match is the primary metric; token_acc and logprob are its continuous companions.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tomllib
from collections import defaultdict
from collections.abc import Collection
from pathlib import Path

import numpy as np

from analysis.emergence.curves import Curve
from analysis.emergence.published import BUILTIN_SPECS
from analysis.hparams import best_variants
from analysis.records import dedupe, loss_unit_of
from scaling import results as R
from scaling.errors import UserError
from scaling.fileio import read_text

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


def _seed(rec: dict) -> int:
    if "seed" in rec:
        return int(rec["seed"])
    return int(((rec.get("config") or {}).get("train") or {}).get("seed", 0))


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
    recs = [
        r
        for r in read_records(path)
        if r.get("evals") and r.get("status", "done") == "done" and _scale_of(r, keys)
        if run_ids is None or r.get("run_id") in run_ids
    ]
    if not recs:
        return []
    fams: dict[str, list[dict]] = defaultdict(list)
    for r in recs:
        fams[str(r.get("family") or r.get("sweep") or "ours")].append(r)
    curves = []
    for fam, rs in sorted(fams.items()):
        rs = _frontier(best_variants(rs)[0], keys)  # lr/batch variants: the fits' choice
        cells: dict[tuple, dict] = defaultdict(lambda: defaultdict(list))
        chance: dict[tuple, float] = {}
        majority: dict[tuple, float] = {}
        for r in rs:
            ev = r["evals"]
            sc = _scale_of(r, keys)
            for task, by_shot in (ev.get("scores") or {}).items():
                for shot, m in by_shot.items():
                    n = int(m.get("n_items", 0))
                    for metric, val in m.items():
                        if metric == "n_items" or not isinstance(val, int | float):
                            continue
                        cells[(task, metric, int(shot))][sc].append(
                            (float(val), n, _first(r, LOSS_KEYS), _seed(r))
                        )
                        ch = (ev.get("chance") or {}).get(task, {}).get(metric)
                        if ch is not None:
                            chance[(task, metric)] = float(ch)
                        mj = (ev.get("majority") or {}).get(task, {}).get(metric)
                        if mj is not None:
                            majority[(task, metric)] = float(mj)
        units = {loss_unit_of(r) for r in rs}  # mixed units: the loss axis says none
        unit = units.pop() if len(units) == 1 else None
        for (task, metric, shot), pts in sorted(cells.items()):
            c = _pool(task, metric, shot, fam, pts, chance.get((task, metric)))
            c.loss_unit = unit
            c.majority = majority.get((task, metric)) if c.bounded else None
            curves.append(c)
    return curves


def _pool(task, metric, shot, fam, pts: dict, chance: float | None) -> Curve:
    """Pool seeds at each scale: items add up; seed_var = var(seed means) / n_seeds."""
    scales = sorted(pts)
    y, n, sv, ns, loss = [], [], [], [], []
    bounded = chance is not None and metric != "logprob"
    for sc in scales:
        vals = np.array([p[0] for p in pts[sc]])
        items = np.array([max(p[1], 1) for p in pts[sc]], float)
        y.append(float(np.sum(vals * items) / items.sum()) if bounded else float(vals.mean()))
        n.append(float(items.sum()))
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


# --------------------------------------------------------------------------- published tables
def load_spec(arg: str | None, inline: list[str]) -> dict:
    """A column-mapping spec: built-in name, TOML file, and/or KEY=VALUE overrides."""
    spec: dict = {}
    if arg:
        if arg in BUILTIN_SPECS:
            spec = json.loads(json.dumps(BUILTIN_SPECS[arg]))
        elif Path(arg).is_file():
            try:
                spec = tomllib.loads(read_text(arg, "save the spec as UTF-8 TOML"))
            except tomllib.TOMLDecodeError as e:
                raise UserError(f"--map {arg}: invalid TOML ({e})") from e
        else:
            raise UserError(
                f"--map {arg!r} is neither a TOML file nor a built-in spec "
                f"({', '.join(BUILTIN_SPECS)})"
            )
    for kv in inline:
        if "=" not in kv:
            raise UserError(f"--set-map {kv!r}: expected KEY=VALUE, e.g. family='Model Family'")
        k, v = kv.split("=", 1)
        spec[k.strip()] = v.strip()
    return spec


def parse_metric_flag(text: str) -> tuple[str, dict]:
    """'COLUMN[:chance=0.25][:majority=0.6][:n=14042][:pair=OTHER][:scale=100]' -> (column,
    options). majority = the majority-label rate of a multiple-choice task (see chance_floor)."""
    col, *opts = text.split(":")
    out: dict = {}
    if not col:
        raise UserError(f"--metric {text!r}: give a column name, e.g. --metric MMLU:chance=0.25")
    for o in opts:
        k, _, v = o.partition("=")
        if k in ("chance", "scale", "majority", "n"):
            try:
                num = float(v)
            except ValueError:
                raise UserError(f"--metric {text!r}: {k}={v!r} is not a number") from None
            if not math.isfinite(num) or (k == "n" and (num < 1 or num != int(num))):
                what = "a positive whole number" if k == "n" else "a finite number"
                raise UserError(f"--metric {text!r}: {k}={v!r} must be {what}")
            if k in ("chance", "majority") and not 0 <= num <= 1:
                raise UserError(f"--metric {text!r}: {k}={v} must be a rate between 0 and 1")
            if k == "scale" and num == 0:
                raise UserError(f"--metric {text!r}: scale must not be 0")
            if k == "n":
                out["n_items"] = int(num)
            else:
                out[k] = num
        elif k == "pair":
            out.setdefault("companions", []).append(v)
        else:
            raise UserError(
                f"--metric {text!r}: unknown option {k!r} (chance, majority, n, pair, scale)"
            )
    return col, out


def _read_join(paths: list[str], on: str) -> list[dict]:
    tables = []
    for p in paths:
        if not Path(p).is_file():
            raise UserError(f"--csv {p}: file not found")
        text = read_text(p, "save the table as UTF-8 CSV")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        cols = reader.fieldnames or []
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise UserError(f"--csv {p}: column {dup[0]!r} appears twice; rename one")
        tables.append({r[on]: r for r in reader if on in r})
        if not tables[-1]:
            raise UserError(f"--csv {p}: no column {on!r} to join on; set join=COLUMN")
    keys = [k for k in tables[0] if all(k in t for t in tables[1:])]
    return [{k2: v for t in tables for k2, v in t[k].items()} for k in keys]


def _check_columns(rows: list[dict], mapped: dict) -> None:
    """UserError naming every mapped column that the joined tables do not have."""
    cols = set().union(*(r.keys() for r in rows)) if rows else set()
    if not rows:
        raise UserError("--csv: the tables share no model to join on; check join=COLUMN")
    missing = [f"{k}={c!r}" for k, c in mapped.items() if c and c not in cols]
    if missing:
        raise UserError(
            f"--csv: mapped column(s) {', '.join(missing)} not found; columns are {sorted(cols)}"
        )


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def curves_from_table(
    paths: list[str], spec: dict, *, scale: str = "compute", families: list[str] | None = None
) -> list[Curve]:
    """Curves from CSV rows joined on spec['join'] (default spec['model'])."""
    model = spec.get("model", "Model")
    rows = _read_join(paths, spec.get("join", model))
    col = spec.get(scale)
    if not col:
        raise UserError(f"the column map has no {scale!r} column; add {scale}='COLUMN'")
    mult = float(spec.get(f"{scale}_multiplier", 1.0))
    fam_col = spec.get("family")
    fams = families or spec.get("families")
    metrics: dict = spec.get("metrics") or {}
    if not metrics:
        raise UserError("no metrics mapped: add --metric COLUMN:chance=C:n=N or [metrics] in TOML")
    for mcol, m in metrics.items():  # a companion column belongs to its primary's task
        for c in m.get("companions", []):
            metrics.setdefault(c, {}).setdefault("task", m.get("task", mcol))
    mapped = {scale: col, "family": fam_col} | {f"metric {m}": m for m in metrics}
    _check_columns(rows, mapped)
    if fams and fam_col:
        present = {r.get(fam_col) for r in rows}
        absent = [f for f in fams if f not in present]
        if absent:
            raise UserError(
                f"--families: no rows for {', '.join(map(repr, absent))} in column {fam_col!r}; "
                f"families present: {sorted(map(str, present))}"
            )
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        fam = r.get(fam_col, "all") if fam_col else "all"
        if (not fams or fam in fams) and _num(r.get(col)) > 0:
            groups[fam].append(r)
    curves = []
    for fam, rs in sorted(groups.items()):
        for mcol, m in metrics.items():
            vals = [
                (
                    _num(r.get(col)) * mult,
                    _num(r.get(mcol)) / float(m.get("scale", 1.0)),
                    r.get(model, ""),
                )
                for r in rs
            ]
            vals = [v for v in vals if math.isfinite(v[1])]
            if len(vals) < 2:
                continue
            bounded = m.get("chance") is not None and m.get("n_items") is not None
            n = len(vals)
            curves.append(
                Curve(
                    task=m.get("task", mcol),
                    metric=m.get("metric", mcol),
                    family=fam,
                    shots=m.get("shots"),
                    scale=np.array([v[0] for v in vals]),
                    y=np.array([v[1] for v in vals]),
                    n_items=np.full(n, float(m["n_items"])) if bounded else None,
                    chance=float(m["chance"]) if bounded else None,
                    majority=float(m["majority"]) if bounded and "majority" in m else None,
                    companions=[
                        metrics.get(c, {}).get("metric", c) for c in m.get("companions", [])
                    ],
                    labels=[v[2] for v in vals],
                    higher_is_better=bool(m.get("higher_is_better", True)),
                )
            )
    if not curves:
        raise UserError(f"no curve with >= 2 points; families present: {sorted(groups)}")
    return curves
