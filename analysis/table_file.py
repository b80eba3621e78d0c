"""Reading a user's table: a CSV or JSON-lines file whose columns ``--map`` names (`parse_map`),
completed from columns named exactly N, loss and D or C (`load_table`)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from analysis.tables import (
    CSV_KEYS,
    RunTable,
    canonical_order,
    check_size,
    flatten,
    is_column_name,
    to_table,
)
from scaling.errors import UserError
from scaling.fileio import read_text

JSONL_SUFFIXES = (".jsonl", ".ndjson")


def parse_map(items: list[str]) -> dict:
    """['N=Model Size', 'C=Training FLOP', 'data=dataset'] -> {"N": "Model Size", ...}.

    Keys N, D, C, loss, budget, run name the quantities the fit uses; any other key (an
    identifier) adds that column to the table under the new name, for --where/--holdout."""
    out = {}
    for it in items or []:
        key, sep, col = it.partition("=")
        key = key.strip()
        if not sep or not col.strip():
            raise UserError(f"--map {it!r}: expected KEY=COLUMN, e.g. --map N='Model Size'")
        if not is_column_name(key):
            raise UserError(
                f"--map {it!r}: {key!r} is not a usable name; use letters, digits and _ "
                f"(the quantities are {', '.join(CSV_KEYS)}; any other name adds a column)"
            )
        if out.setdefault(key, col.strip()) != col.strip():
            raise UserError(f"--map {key}= given twice ({out[key]!r}, {col.strip()!r}); keep one")
    return out


def read_rows(path: Path) -> tuple[list[str], list[tuple[str, dict]]]:
    """(column names, [(where, row dict)]) of a CSV or, by suffix, a JSON-lines file. Not UTF-8,
    a repeated CSV column or more than MAX_ROWS rows: a UserError naming the file."""
    text = read_text(path, "save the table as UTF-8")
    check_size(path, text.count("\n"))
    if path.suffix.lower() not in JSONL_SUFFIXES:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        cols = list(reader.fieldnames or [])
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise UserError(
                f"{path}: column {dup[0]!r} appears {cols.count(dup[0])} times in the header; "
                f"rename the duplicates so that --map can name one column"
            )
        return cols, [(f"{path}:{i}", r) for i, r in enumerate(reader, 2)]
    rows, cols = [], {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg}); fix the line") from e
        if not isinstance(rec, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object per line")
        flat = flatten(rec)
        cols.update(dict.fromkeys(flat))
        rows.append((f"{path}:{lineno}", flat))
    return list(cols), rows


def load_table(path: str | Path, mapping: dict, *, loss_unit: str = "nats/token") -> RunTable:
    """Read a CSV or JSONL table whose columns are named by ``mapping`` (keys N, loss and one of
    D or C are required; budget, run and any extra names optional). D = C/(6N) when D is absent,
    C = 6ND when C is absent. Unmapped columns are kept as extra columns under their own name."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"table file {path} does not exist")
    cols, raw = read_rows(path)
    mapping, notes = _by_name(mapping, cols)
    absent = [f"{k}={c!r}" for k, c in mapping.items() if c not in cols]
    if absent:
        raise UserError(
            f"{path}: mapped column(s) {', '.join(absent)} not found; columns are {cols}"
        )
    rows, extra = [], []
    for where, r in raw:

        def num(key: str, r: dict = r, where: str = where) -> float:
            raw = r.get(mapping[key])
            try:
                return float(raw)
            except (TypeError, ValueError):
                raise UserError(
                    f"{where}: column {mapping[key]!r} value {raw!r} is not a number"
                ) from None

        N, L = num("N"), num("loss")
        C = num("C") if "C" in mapping else math.nan
        D = num("D") if "D" in mapping else C / (6.0 * N) if N > 0 else math.nan
        if "C" not in mapping:
            C = 6.0 * N * D
        budget = num("budget") if "budget" in mapping else None
        line = where.rsplit(":", 1)[1]
        rid = str(r.get(mapping["run"])) if "run" in mapping else f"row{line}"
        rows.append((rid, N, D, C, L, budget, None))
        ex = dict(r)
        ex.update({k: r.get(c) for k, c in mapping.items() if k not in CSV_KEYS})
        extra.append(ex)
    if not rows:
        raise UserError(f"{path}: no data rows")
    order = canonical_order(rows)
    rows, extra = [rows[i] for i in order], [extra[i] for i in order]
    return to_table(rows, loss_unit, str(path), notes, extra)


def _by_name(mapping: dict, cols: list[str]) -> tuple[dict, list[str]]:
    """``mapping`` completed from the columns named exactly N, loss and, when neither D nor C is
    mapped, D (else C), with a note; a UserError listing the columns when one is absent."""
    out = dict(mapping)
    want = ["N", "loss"] + ([] if {"D", "C"} & out.keys() else ["D" if "D" in cols else "C"])
    named = [k for k in want if k not in out and k in cols]
    out.update({k: k for k in named})
    for need, flag in (("N", "--map N=COLUMN"), ("loss", "--map loss=COLUMN")) + (
        () if "C" in out else (("D", "--map D=COLUMN (tokens) or --map C=COLUMN (FLOPs)"),)
    ):
        if need not in out:
            raise UserError(
                f"{flag} is required: no column is named {need}; the columns are {cols}"
            )
    note = f"column(s) {', '.join(named)} used by name (--map KEY=COLUMN picks others)"
    return out, [note] if named else []
