"""Emergence curves from published CSV tables: a column map (built-in, TOML or KEY=VALUE) and
--metric flags say which columns hold the model, family, scale and scores.

Inputs are checked before any flagging (scaling.errors.UserError, exit 2): a model named on two
rows, two models of a family at one scale, a bounded score outside [0, 1], a chance level of 1.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import numpy as np

from analysis.emergence.curves import Curve
from analysis.emergence.published import BUILTIN_SPECS
from scaling.errors import UserError
from scaling.fileio import read_text

# --------------------------------------------------------------------------- published tables
MAP_KEYS = ("model", "join", "family", "compute", "compute_multiplier", "params",
            "params_multiplier", "families", "metrics")  # fmt: skip
MISSING = ("", "nan", "na", "n/a", "-", "none", "null")  # a score cell that says "not scored"


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
    if bad := sorted(set(spec) - set(MAP_KEYS)):  # a typo ('familiy') was silently ignored
        raise UserError(
            f"--map: unknown key {bad[0]!r}; keys are {', '.join(MAP_KEYS)} (a metric column "
            "is mapped with --metric or a [metrics.COLUMN] table)"
        )
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
            if k in ("chance", "majority") and not 0 <= num < 1:
                raise UserError(
                    f"--metric {text!r}: {k}={v} must be a rate in [0, 1), e.g. 0.25 for four "
                    "options (at 1 no score could rise above it)"
                )
            if k == "scale" and num <= 0:  # a negative one turned the metric over silently
                raise UserError(f"--metric {text!r}: scale={v} must be > 0, e.g. 100 (percent)")
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


def _read_table(p: str, on: str) -> dict[str, dict]:
    """One CSV as {join value: row}; UserError for a missing file, no rows, a repeated model."""
    if not Path(p).is_file():
        raise UserError(f"--csv {p}: file not found")
    text = read_text(p, "save the table as UTF-8 CSV")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    cols = reader.fieldnames or []
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise UserError(f"--csv {p}: column {dup[0]!r} appears twice; rename one")
    rows = list(reader)
    if not rows:
        raise UserError(f"--csv {p}: the CSV has no rows (only a header, or empty); add the scores")
    if on not in cols:
        raise UserError(f"--csv {p}: no column {on!r} to join on; set join=COLUMN")
    table: dict[str, dict] = {}
    for r in rows:
        if r[on] in table:
            raise UserError(
                f"--csv {p}: model {r[on]!r} (column {on!r}) is on more than one row; keep one "
                "row per model (or give each variant its own name)"
            )
        table[r[on]] = r
    return table


def _read_join(paths: list[str], on: str) -> list[dict]:
    tables = [_read_table(p, on) for p in paths]
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


def _multiplier(spec: dict, scale: str) -> float:
    key = f"{scale}_multiplier"
    v = _num(spec.get(key, 1.0))
    if not (math.isfinite(v) and v > 0):
        raise UserError(
            f"--map {key}={spec.get(key)!r} must be a positive number (the factor that turns "
            f"the {scale} column into {scale}), e.g. {key}=1e21"
        )
    return v


def _check_metric(mcol: str, m: dict) -> dict:
    """Validate a metric's options (TOML metrics skip parse_metric_flag); an error-rate metric
    with a chance level becomes an accuracy: y -> 1 - y, chance/majority -> 1 - them."""
    m = dict(m)
    for k in ("chance", "majority"):
        if k in m and not (_finite(m[k]) and 0 <= m[k] <= 1):  # true/false are no rates
            raise UserError(f"metric {mcol!r}: {k}={m[k]!r} must be a rate in [0, 1)")
    _check_rate_options(mcol, m)
    if not m.get("higher_is_better", True) and m.get("chance") is not None:
        m["flip"] = True  # a bounded error rate: scored as accuracy 1 - error
        m["higher_is_better"] = True
        for k in ("chance", "majority"):
            if k in m:
                m[k] = 1.0 - float(m[k])
        print(
            f"  note: metric {mcol!r} is an error rate with a chance level: scored as the "
            f"accuracy 1 - {mcol} against chance accuracy 1 - {1 - m['chance']:g}",
            file=sys.stderr,
        )
    for k in ("chance", "majority"):
        if m.get(k) is not None and not m[k] < 1:
            err = " (an error rate's is 1 - its guessing error, so give that error > 0)"
            raise UserError(
                f"metric {mcol!r}: the {k} accuracy is 1{err if m.get('flip') else ''}: no score "
                "could rise above it; give a rate in [0, 1), e.g. chance=0.25 for four options"
            )
    return m


def _check_rate_options(mcol: str, m: dict) -> None:
    """A rate needs both its chance level and its item count: given one alone, the metric was
    silently read as continuous (verdict not_tested, the chance or majority level ignored)."""
    has_chance, has_n = m.get("chance") is not None, m.get("n_items") is not None
    if has_chance != has_n:
        given = f"chance={m['chance']:g}" if has_chance else f"n={m['n_items']}"
        need = (
            "n=N (n_items = N in TOML), the number of items scored"
            if has_chance
            else ("chance=C (0 for an open-ended answer)")
        )
        raise UserError(
            f"metric {mcol!r}: {given} without {'n' if has_chance else 'chance'}: a rate needs "
            f"both (its Wilson interval and chance level); add :{need}, or give neither for a "
            "continuous metric"
        )
    if m.get("majority") is not None and not has_chance:
        raise UserError(
            f"metric {mcol!r}: majority={m['majority']:g} without chance and n: the majority-label "
            "rate raises a rate's chance level; add :chance=C:n=N (e.g. chance=0.5 for two options)"
        )


def _points(rs, col, mult, model, mcol, m, fam) -> list[tuple]:
    """(scale, score, model) of one metric column; a bounded score must lie in [0, 1]."""
    bounded = m.get("chance") is not None and m.get("n_items") is not None
    vals = []
    for r in rs:
        y = _num(r.get(mcol)) / float(m.get("scale", 1.0))
        if not math.isfinite(y):
            continue
        if bounded and not 0 <= y <= 1:
            hint = " (a percentage? add :scale=100)" if 1 < y <= 100 else ""
            raise UserError(
                f"--csv: column {mcol!r} has {r.get(mcol)!r} for model {r.get(model)!r}: a "
                f"bounded score (chance and n given) must lie in [0, 1]{hint}"
            )
        vals.append((_num(r.get(col)) * mult, 1.0 - y if m.get("flip") else y, r.get(model, "")))
    seen: dict[float, str] = {}
    for sc, _, name in vals:
        if sc in seen:
            raise UserError(
                f"--csv: family {fam!r} has two models at {col} = {sc:g} ({seen[sc]!r} and "
                f"{name!r}) for {mcol!r}: a curve needs one score per scale; keep one model "
                "or split the family with --map family=COLUMN"
            )
        seen[sc] = name
    return vals


METRIC_KEYS = ("chance", "majority", "n_items", "scale", "companions", "higher_is_better",
               "task", "metric", "shots")  # fmt: skip


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_options(mcol: str, m) -> dict:
    """The types of one metric's options (a TOML [metrics.COL] table skips parse_metric_flag):
    a typo'd key (`n = 100`: the flag's name) silently made the metric continuous, a string
    n_items or scale was a traceback, scale 0 a ZeroDivisionError, `higher_is_better = "no"`
    read as true and a string `companions` as one companion per character."""
    where = f"[metrics.{json.dumps(mcol)}]"
    if not isinstance(m, dict):
        raise UserError(
            f"{where} = {m!r}: expected a table, e.g. {{chance = 0.25, n_items = 1000}}"
        )
    if bad := sorted(set(m) - set(METRIC_KEYS)):
        raise UserError(f"{where}: unknown key {bad[0]!r}; valid keys: {', '.join(METRIC_KEYS)}")
    n = m.get("n_items")
    if n is not None and not (_finite(n) and n >= 1 and n == int(n)):
        raise UserError(f"{where} n_items = {n!r}: give the positive whole number of items scored")
    if "scale" in m and not (_finite(m["scale"]) and m["scale"] > 0):
        raise UserError(
            f"{where} scale = {m['scale']!r}: give a positive number, e.g. 100 for percentages "
            "(lower-is-better metrics: higher_is_better = false)"
        )
    comps = m.get("companions", [])
    if not (isinstance(comps, list) and all(isinstance(c, str) and c for c in comps)):
        raise UserError(
            f'{where} companions = {comps!r}: give a list of column names, e.g. ["bleu"]'
        )
    if not isinstance(m.get("higher_is_better", True), bool):
        raise UserError(f"{where} higher_is_better = {m['higher_is_better']!r}: use true or false")
    if m.get("shots") is not None and not (
        _finite(m["shots"]) and m["shots"] == int(m["shots"]) >= 0
    ):
        raise UserError(f"{where} shots = {m['shots']!r}: give a whole number of shots, e.g. 5")
    return dict(m)


def _metrics(spec: dict) -> dict:
    raw = spec.get("metrics") or {}
    if not isinstance(raw, dict):
        raise UserError(f"metrics = {raw!r}: expected a [metrics.COLUMN] table per score column")
    metrics = {k: _check_options(k, v) for k, v in raw.items()}
    if not metrics:
        raise UserError("no metrics mapped: add --metric COLUMN:chance=C:n=N or [metrics] in TOML")
    for mcol, m in list(metrics.items()):  # a companion column belongs to its primary's task
        for c in m.get("companions", []):
            metrics.setdefault(c, {}).setdefault("task", m.get("task", mcol))
    return {k: _check_metric(k, m) for k, m in metrics.items()}


def _groups(rows, col, fam_col, fams) -> dict[str, list[dict]]:
    if fams and not fam_col:
        raise UserError(
            f"--families {','.join(fams)}: no family column is mapped; add --map family=COLUMN"
        )
    if fams:
        present = {r.get(fam_col) for r in rows}
        absent = [f for f in fams if f not in present]
        if absent:
            raise UserError(
                f"--families: no rows for {', '.join(map(repr, absent))} in column {fam_col!r}; "
                f"families present: {sorted(map(str, present))}"
            )
    groups: dict[str, list[dict]] = defaultdict(list)
    left_out = []
    for r in rows:
        fam = r.get(fam_col, "all") if fam_col else "all"
        if fams and fam not in fams:
            continue
        if _num(r.get(col)) > 0:  # NaN too: a model without a scale is on no curve
            groups[fam].append(r)
        else:
            left_out.append(r)
    _note_unread(left_out, col, "positive number", "the model is on no curve")
    return groups


def _note_unread(rows: list[dict], col: str, what: str, effect: str) -> None:
    """One stderr note for the rows whose `col` is not `what` (a typo, 0, a negative value, a
    blank): they were left out without a word."""
    if rows:
        eg = ", ".join(repr(r.get(col)) for r in rows[:3]) + (", ..." if len(rows) > 3 else "")
        print(
            f"  note: {len(rows)} row(s) have no {what} in column {col!r} ({eg}): {effect}",
            file=sys.stderr,
        )


def _curve(vals, mcol, m, fam, metrics) -> Curve:
    bounded = m.get("chance") is not None and m.get("n_items") is not None
    n = len(vals)
    return Curve(
        task=m.get("task", mcol),
        metric=m.get("metric", mcol),
        family=fam,
        shots=m.get("shots"),
        scale=np.array([v[0] for v in vals]),
        y=np.array([v[1] for v in vals]),
        n_items=np.full(n, float(m["n_items"])) if bounded else None,
        chance=float(m["chance"]) if bounded else None,
        majority=float(m["majority"]) if bounded and "majority" in m else None,
        companions=[metrics.get(c, {}).get("metric", c) for c in m.get("companions", [])],
        labels=[v[2] for v in vals],
        higher_is_better=bool(m.get("higher_is_better", True)),
    )


def curves_from_table(
    paths: list[str], spec: dict, *, scale: str = "compute", families: list[str] | None = None
) -> list[Curve]:
    """Curves from CSV rows joined on spec['join'] (default spec['model'])."""
    model = spec.get("model", "Model")
    rows = _read_join(paths, spec.get("join", model))
    col = spec.get(scale)
    if not col:
        raise UserError(f"the column map has no {scale!r} column; add {scale}='COLUMN'")
    mult = _multiplier(spec, scale)
    fam_col = spec.get("family")
    metrics = _metrics(spec)
    mapped = {scale: col, "family": fam_col} | {f"metric {m}": m for m in metrics}
    _check_columns(rows, mapped)
    groups = _groups(rows, col, fam_col, families or spec.get("families"))
    for mcol in metrics:  # a blank or NA cell is a model not scored; other unreadable ones: noted
        cells = [r for rs in groups.values() for r in rs if not math.isfinite(_num(r.get(mcol)))]
        bad = [r for r in cells if str(r.get(mcol) or "").strip().lower() not in MISSING]
        _note_unread(bad, mcol, "number", "those scores are left out")
    curves, skipped = [], defaultdict(list)
    for fam, rs in sorted(groups.items()):
        for mcol, m in metrics.items():
            vals = _points(rs, col, mult, model, mcol, m, fam)
            if len(vals) < 2:
                skipped[mcol].append(fam)
                continue
            curves.append(_curve(vals, mcol, m, fam, metrics))
    _note_skipped(skipped, len(groups))
    if not curves:
        raise UserError(f"no curve with >= 2 points; families present: {sorted(groups)}")
    return curves


def _note_skipped(skipped: dict[str, list[str]], n_fams: int) -> None:
    """One note per score column that gave no curve at all, one line for the partial gaps."""
    for mcol, fams in skipped.items():
        if len(fams) == n_fams:
            print(
                f"  note: column {mcol!r} has fewer than 2 numeric scores in every family "
                "(empty or NaN): no curve for it",
                file=sys.stderr,
            )
    part = sum(len(f) for c, f in skipped.items() if len(f) < n_fams)
    if part:
        print(
            f"  note: {part} (family, column) pairs have fewer than 2 numeric scores: no curve",
            file=sys.stderr,
        )
