"""`scaling predict --at POINTS`: many (N, D) or compute-budget points from one fit.

A points file is a CSV, or JSON lines when its name ends in .jsonl/.ndjson. Columns (any order,
other columns ignored except ``name``, which labels the rows):

- ``N`` and ``D`` (or ``params`` and ``tokens``): loss of that model trained on that many tokens;
- ``N`` and ``C`` (or ``flops``) without D: the same, with D = C / (6 N) (with both columns, a
  row's D is used and its C only where D is blank);
- ``C`` alone: the loss at the compute-optimal (N, D) for that budget, with N_opt and D_opt.

A file with N but neither D nor C, or with neither N nor C, is refused before any fitting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.table_file import read_rows
from scaling.errors import UserError
from scaling.fmt import with_ci

ALIASES = {"N": ("N", "params"), "D": ("D", "tokens"), "C": ("C", "flops")}


@dataclass(frozen=True)
class Points:
    """Points to predict at: ``kind`` is 'nd' (arrays N, D) or 'flops' (array C)."""

    kind: str
    names: list[str]
    N: np.ndarray
    D: np.ndarray
    C: np.ndarray
    source: str


def read_points(path: str | Path) -> Points:
    """Parse and validate a points file (UserError, one line, on anything wrong)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--at {path}: points file does not exist")
    cols, rows = read_rows(path)
    have = {k: next((a for a in names if a in cols), None) for k, names in ALIASES.items()}
    if have["N"] is None and have["C"] is None:
        raise UserError(f"--at {path}: needs a column N (with D or C) or C; columns are {cols}")
    if have["N"] is not None and have["D"] is None and have["C"] is None:
        raise UserError(f"--at {path}: has N but no D or C column; add tokens D (or FLOPs C)")
    if not rows:
        raise UserError(f"--at {path}: no points (the file has a header only)")
    kind = "nd" if have["N"] is not None else "flops"
    if kind == "flops":
        C = _column(rows, have["C"], path)
        N = D = np.full(len(rows), np.nan)
    else:
        N = _column(rows, have["N"], path)
        D = _tokens(rows, have["D"], have["C"], N, path)
        C = 6.0 * N * D
    names = [str(r.get("name") or where.rsplit(":", 1)[1]) for where, r in rows]
    return Points(kind, names, N, D, C, str(path))


def _tokens(rows: list, d_col: str | None, c_col: str | None, N: np.ndarray, path: Path):
    """Each row's D: its D cell, else (blank or no D column) C / (6 N) from its C cell."""
    if d_col is None:
        return _column(rows, c_col, path) / (6.0 * N)
    blank = [_blank(r.get(d_col)) for _, r in rows]
    if c_col is None or not any(blank):
        return _column(rows, d_col, path)
    for (where, r), b in zip(rows, blank, strict=True):
        if b and _blank(r.get(c_col)):
            raise UserError(f"--at {where}: no {d_col!r} or {c_col!r} value; give tokens or FLOPs")
    pick = [c_col if b else d_col for b in blank]
    D = np.array([_column([row], c, path)[0] for row, c in zip(rows, pick, strict=True)])
    return np.where(blank, D / (6.0 * N), D)


def _blank(raw) -> bool:
    return raw is None or str(raw).strip() == ""


def _column(rows: list, col: str, path: Path) -> np.ndarray:
    out = []
    for where, r in rows:
        raw = r.get(col)
        try:
            v = float(raw)
        except (TypeError, ValueError):
            v = float("nan")
        if not np.isfinite(v) or v <= 0:
            raise UserError(f"--at {where}: column {col!r} value {raw!r} is not a positive number")
        out.append(v)
    return np.array(out, dtype=np.float64)


def predict_points(fit, boot, pts: Points, level: float, pred=None) -> list[dict]:
    """One prediction dict per point (the same dicts as `predict --flops` / `--params`); with a
    predictor (analysis.laws.predictive) the loss carries its predictive interval."""
    from analysis.laws.predict import predict_flops, predict_nd

    out = []
    for i, name in enumerate(pts.names):
        if pts.kind == "flops":
            r = predict_flops(fit, boot, float(pts.C[i]), level, pred)
        else:
            r = predict_nd(fit, boot, float(pts.N[i]), float(pts.D[i]), level, pred)
        out.append({"name": name, **r})
    return out


def points_lines(
    preds: list[dict], kind: str, loss_unit: str, level: float, reach: float | None = None
) -> list[str]:
    """A plain-text table of ``predict_points`` output: the loss with its predictive interval
    (as `predict` prints it), how far it extrapolates, N_opt with its bootstrap CI; a point the
    data cannot support is marked and explained below the table (``reach``: the decades the
    user's back-tests reach)."""
    lvl = int(round(level * 100))
    loss = f"loss [{lvl}% predictive]"
    dist = [_distance(p) for p in preds]
    if kind == "flops":
        head = f"{'point':<10} {'C':>10}  {loss:<28} {'decades':>8}  N_opt [{lvl}% bootstrap CI]"
        body = [
            f"{p['name']:<10} {p['flops']:>10.3g}  {with_ci(p['loss']):<28} {d:>8}  "
            f"{with_ci(p['N_opt'])}"
            for p, d in zip(preds, dist, strict=True)
        ]
    else:
        head = f"{'point':<10} {'N':>10} {'D':>10} {'C':>10}  {loss:<28} {'decades':>8}"
        body = [
            f"{p['name']:<10} {p['params']:>10.3g} {p['tokens']:>10.3g} {p['flops']:>10.3g}  "
            f"{with_ci(p['loss']):<28} {d:>8}"
            for p, d in zip(preds, dist, strict=True)
        ]
    notes = []
    if any(d.endswith("*") for d in dist):
        far = "" if reach is None else f" (your back-tests reach {reach:.2f} decades)"
        notes.append(
            f"* the data cannot support this distance{far}: the interval rests on the "
            "published-sweep prior and is a rough guess, not a calibrated one"
        )
    if any(d.endswith("!") for d in dist):
        notes.append(
            "! this point repeats its data past the epochs where the fitted runs overfit: no law "
            "form describes that; the interval is a rough guess from the published-sweep prior"
        )
    return [
        f"loss in {loss_unit}; decades: extrapolation beyond the fitted runs",
        head,
        *body,
    ] + notes


def _distance(p: dict) -> str:
    """The point's extrapolation distance, marked * (too far) or ! (overfitting) when the data
    cannot support it; empty without a predictive interval."""
    t = p.get("interval_terms")
    if not t:
        return ""
    mark = "" if t["supported"] else ("!" if t.get("why_unsupported") == "overfitting" else "*")
    return f"{t['distance_decades']:.2f}{mark}"
