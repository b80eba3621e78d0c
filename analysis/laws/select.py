"""Which rows to fit and which to hold out: a safe filter language and hold-out masks.

Used by `--where` (keep only the matching rows, before anything is fitted) and `--holdout`
(among the kept rows, the ones the back-test predicts instead of fitting).

Filter expressions are parsed with :mod:`ast` and walked over a whitelist, never evaluated:
comparisons ``== != < <= > >= in, not in`` (chains like ``1e8 < N <= 1e9`` work), ``and``,
``or``, ``not``, parentheses, numbers, quoted strings, ``True``/``False``, tuples or lists of
constants after ``in``, and column names. A column name is one of the canonical ``N D C loss
budget run`` or any extra column of the table (CSV/JSONL columns whose names are identifiers,
``--map NAME=COLUMN`` aliases, dotted names such as ``config.model.d_model`` for nested JSON).
Anything else (calls, attributes of values, arithmetic, subscripts) is refused with one line.

Hold-out specs: ``largest`` (the largest IsoFLOP budget; the largest model size when the table
is not an IsoFLOP sweep or holds one budget, the largest token count when it has one model
size, see analysis.design), a bare number (runs with C above it),
``@FILE`` or the path of an existing file (run names, one per line, ``#`` comments), or a filter
expression (``N > 4e8``, ``data == "c4"``).
"""

from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.tables import RunTable, infer_budgets
from scaling.errors import UserError

_CMP = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_SYMBOL = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}


def table_columns(table: RunTable) -> dict[str, np.ndarray]:
    """Every column a filter can name: the canonical ones, then the table's extra columns."""
    cols = dict(table.extra)
    cols.update(
        N=table.N,
        D=table.D,
        C=table.C,
        loss=table.loss,
        budget=table.budget,
        run=np.array(table.run_id, dtype=object),
    )
    return cols


@dataclass(frozen=True)
class Filter:
    """A parsed, validated filter expression; ``mask(table)`` gives the matching rows."""

    text: str
    flag: str
    tree: ast.Expression

    def mask(self, table: RunTable) -> np.ndarray:
        ev = _Eval(self, table_columns(table), len(table))
        out = ev.boolean(self.tree.body)
        return np.broadcast_to(out, (len(table),)).copy()


def parse_filter(text: str, flag: str = "--where") -> Filter:
    """Parse ``text``; UserError (one line, naming ``flag``) on syntax outside the whitelist."""
    src = text.strip()
    if not src:
        raise UserError(f"{flag}: empty expression; write e.g. {flag} 'N > 4e8'")
    try:
        tree = ast.parse(src, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        why = getattr(e, "msg", None) or type(e).__name__
        raise UserError(
            f"{flag} {_short(text)}: not a valid expression ({why}); write comparisons like "
            'N > 4e8 and data == "c4"'
        ) from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise UserError(
                f"{flag} {_short(text)}: {type(node).__name__} is not allowed; use comparisons of "
                "columns with numbers or quoted strings, joined by and/or/not"
            )
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str)):
            raise UserError(f"{flag} {_short(text)}: constant {node.value!r} is not allowed")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            if not (isinstance(node.operand, ast.Constant) and _is_num(node.operand.value)):
                raise UserError(f"{flag} {_short(text)}: a sign applies to numbers only")
    return Filter(text, flag, tree)


_ALLOWED = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.Compare,
    ast.In,
    ast.NotIn,
    *_CMP,
    ast.Name,
    ast.Attribute,
    ast.Load,
    ast.Constant,
    ast.Tuple,
    ast.List,
)


def _short(text: str, limit: int = 80) -> str:
    """repr of an expression for an error line, cut to ``limit`` characters."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, str)


def _kind(arr: np.ndarray) -> str:
    if arr.dtype.kind in "fiub":
        return "number"
    vals = [v for v in arr if v is not None]
    if all(isinstance(v, str) for v in vals):
        return "text"
    return "mixed"


class _Eval:
    """Walks a whitelisted tree over the table's columns (vectorised per comparison)."""

    def __init__(self, f: Filter, cols: dict[str, np.ndarray], n: int):
        self.f, self.cols, self.n = f, cols, n

    def fail(self, msg: str) -> UserError:
        return UserError(f"{self.f.flag} {_short(self.f.text)}: {msg}")

    def boolean(self, node: ast.AST) -> np.ndarray:
        if isinstance(node, ast.BoolOp):
            parts = [self.boolean(v) for v in node.values]
            fn = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            return fn.reduce(np.broadcast_arrays(*parts))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return ~self.boolean(node.operand)
        if isinstance(node, ast.Compare):
            out = np.ones(self.n, dtype=bool)
            left = node.left
            for op, right in zip(node.ops, node.comparators, strict=True):
                out &= self.compare(op, left, right)
                left = right
            return out
        raise self.fail(f"{ast.unparse(node)!r} is not a condition; compare it, e.g. N > 4e8")

    def name(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            base = self.name(node.value)
            return None if base is None else f"{base}.{node.attr}"
        return None

    def operand(self, node: ast.AST) -> tuple[str, object]:
        """('column', (name, array)) | ('const', value) | ('set', tuple)."""
        name = self.name(node)
        if name is not None:
            if name not in self.cols:
                shown = sorted(self.cols)
                more = f" (+{len(shown) - 25} more)" if len(shown) > 25 else ""
                raise self.fail(
                    f'unknown column {name!r} (quote text: "{name}"); columns are '
                    f"{', '.join(shown[:25])}{more}; add one with --map {name}=COLUMN"
                )
            return "column", (name, self.cols[name])
        if isinstance(node, ast.Constant):
            return "const", node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = node.operand.value  # parse_filter checked it is a number
            return "const", -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, (ast.Tuple, ast.List)):
            vals = [self.operand(e) for e in node.elts]
            if any(k != "const" for k, _ in vals):
                raise self.fail("a list after 'in' may hold numbers and quoted strings only")
            return "set", tuple(v for _, v in vals)
        raise self.fail(f"{ast.unparse(node)!r} cannot be compared; use a column or a constant")

    def check_types(self, col: tuple[str, np.ndarray], consts: tuple) -> None:
        name, arr = col
        kind = _kind(arr)
        if kind == "number" and any(isinstance(c, str) for c in consts):
            raise self.fail(f"column {name!r} holds numbers; compare it with a number")
        if kind == "text" and any(not isinstance(c, str) for c in consts):
            raise self.fail(f"column {name!r} holds text; compare it with a quoted string")

    def compare(self, op: ast.cmpop, ln: ast.AST, rn: ast.AST) -> np.ndarray:
        lk, lv = self.operand(ln)
        rk, rv = self.operand(rn)
        if isinstance(op, (ast.In, ast.NotIn)):
            if lk != "column" or rk != "set":
                raise self.fail("write 'COLUMN in (VALUE, ...)'")
            self.check_types(lv, rv)
            m = np.array([v in rv for v in lv[1]], dtype=bool)
            return ~m if isinstance(op, ast.NotIn) else m
        if "set" in (lk, rk):
            raise self.fail(f"a list goes only after 'in', not after {_SYMBOL[type(op)]}")
        if lk == "const" and rk == "const":
            raise self.fail("a comparison needs at least one column")
        for k, v, other in ((lk, lv, rv), (rk, rv, lv)):
            if k == "column" and not isinstance(other, tuple):
                self.check_types(v, (other,))
        a = lv[1] if lk == "column" else lv
        b = rv[1] if rk == "column" else rv
        fn = _CMP[type(op)]
        return np.array([_safe(fn, x, y) for x, y in _pairs(a, b, self.n)], dtype=bool)


REL_TOL = 1e-9  # numbers this close compare equal in filters and hold-outs (float rounding)


def _close(x, y) -> bool:
    num = (int, float, np.integer, np.floating)
    if (
        isinstance(x, bool)
        or isinstance(y, bool)
        or not (isinstance(x, num) and isinstance(y, num))
    ):
        return False
    return x != y and math.isclose(float(x), float(y), rel_tol=REL_TOL, abs_tol=0.0)


def _pairs(a, b, n: int):
    a = a if isinstance(a, np.ndarray) else [a] * n
    b = b if isinstance(b, np.ndarray) else [b] * n
    return zip(a, b, strict=True)


def _safe(fn, x, y) -> bool:
    """Missing values (None, NaN) and mismatched types never match (except via !=). Numbers
    equal to 1e-9 relative count as equal: a C computed as 6ND lands a rounding error off its
    budget, and `C <= 1.6e18` must keep the runs at 1.6e18."""
    if x is None or y is None:
        return fn is operator.ne
    if _close(x, y):
        x = y
    try:
        return bool(fn(x, y))
    except TypeError:
        return fn is operator.ne


def where(table: RunTable, text: str | None, flag: str = "--where") -> RunTable:
    """Rows of ``table`` matching the filter ``text`` (all rows when None); notes what it kept."""
    if text is None:
        return table
    mask = parse_filter(text, flag).mask(table)
    if not mask.any():
        raise UserError(
            f"{flag} {_short(text)}: no row matches (of {len(table)}); loosen the filter"
        )
    out = table.subset(mask)
    out.notes.append(f"{flag} {text}: kept {int(mask.sum())} of {len(table)} rows")
    return out


def read_run_names(path: str | Path, flag: str = "--holdout") -> list[str]:
    """Run names from a text file, one per line; blank lines and '#' comments ignored."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise UserError(f"{flag} @{path}: cannot read the run-name file ({e.strerror})") from None
    names = [ln.split("#", 1)[0].strip() for ln in lines]
    names = [n for n in names if n]
    if not names:
        raise UserError(f"{flag} @{path}: the file lists no run names (one per line)")
    return names


def holdout_rows(table: RunTable, spec: str, n_params: int = 5) -> tuple[np.ndarray, str]:
    """(mask of held-out rows, description) for a hold-out spec (see the module docstring).

    UserError when nothing is held out, or fewer than ``n_params`` rows are left to fit."""
    flag = f"--holdout {spec}"
    spec = spec.strip()
    if spec == "largest":
        mask, desc = _largest(table)
    elif _number(spec) is not None:
        thr = _number(spec)
        mask = (table.C > thr) & ~np.isclose(table.C, thr, rtol=REL_TOL, atol=0.0)
        desc = f"runs with C > {thr:.3g} FLOPs"
    elif spec.startswith("@") or Path(spec).is_file():
        path = spec[1:] if spec.startswith("@") else spec
        names = read_run_names(path)
        ids = set(table.run_id)
        unknown = [n for n in names if n not in ids]
        if unknown:
            raise UserError(
                f"{flag}: {len(unknown)} run name(s) not in the table, e.g. {unknown[0]!r}; "
                "names must match the run column (--map run=COLUMN for a CSV)"
            )
        wanted = set(names)
        mask = np.array([r in wanted for r in table.run_id], dtype=bool)
        desc = f"the {int(mask.sum())} run(s) listed in {path}"
    else:
        mask = parse_filter(spec, "--holdout").mask(table)
        desc = f"runs where {spec}"
    if not mask.any():
        raise UserError(f"{flag}: no run is held out (of {len(table)}); loosen the selection")
    left = int((~mask).sum())
    if left < n_params:
        raise UserError(
            f"{flag}: only {left} run(s) left to fit a law with {n_params} parameters; "
            "hold out fewer runs"
        )
    return mask, desc


def _largest(table: RunTable) -> tuple[np.ndarray, str]:
    """The largest IsoFLOP budget with >= 3 model sizes (as the design requires: a top budget
    of one or two runs would back-test just those); in a design without budgets or with one
    (`one_budget`), the largest model size (the largest token count when every run has one
    model size)."""
    from analysis.design import detect_design, largest_size_mask, levels

    kind = detect_design(table).kind
    if kind == "one_size":
        lengths = levels(table.D)
        mask = lengths == lengths.max()
        return mask, f"runs of the largest token count (D = {np.median(table.D[mask]):.3g})"
    if kind == "isoflop":
        b, sizes = infer_budgets(table), levels(table.N)
        top = max(c for c in np.unique(b) if np.unique(sizes[b == c]).size >= 3)
        m = b == top
        what = "largest budget" if top == b.max() else "largest budget with >= 3 model sizes"
        c_max = float(table.C[m].max())
        if abs(c_max / top - 1.0) <= 0.01:
            return m, f"runs at the {what} ({top:.3g} FLOPs)"
        if not np.all(np.isfinite(table.budget)):  # budgets clustered from C itself
            return m, f"runs at the {what} (C {float(table.C[m].min()):.3g} to {c_max:.3g})"
        # a grid's budget counts FLOPs its own way (exact FLOPs); the table's C may not (6ND)
        return m, f"runs at the {what} ({top:.3g} FLOPs as planned, C up to {c_max:.3g})"
    mask = largest_size_mask(table)
    return mask, f"runs of the largest model size (N = {np.median(table.N[mask]):.3g})"


def _number(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None
