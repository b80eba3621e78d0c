"""Read a results table into arrays: our sweep's results.jsonl, or any CSV/JSONL with a mapping.

Conventions: N = total parameters (``n_kind="nonembed"`` for non-embedding), D = training tokens,
C = 6 N D FLOPs (``flops="exact"`` uses the engine's exact count C_exact), loss = final
validation loss. Runs whose status is not "done" are skipped with a note, and so are repeated
run ids; runs DIR/plan.json does not list get a note too (analysis.records). Bad values raise
UserError naming the row and column. A sweep with hyperparameter axes (lr, batch, warmup lists in
its grid) contributes one row per cell, its best variant (analysis.hparams); the per-axis
optima land in `RunTable.hparams`. Every table's rows are sorted by (C, N, D, loss, run id)
(`canonical_order`): the lines of a results.jsonl come in the order runs finished, a CSV in
whatever order it was assembled, and the fits must not depend on either.

Besides the canonical columns every table keeps its other scalar columns in ``RunTable.extra``
(CSV/JSONL columns whose names are identifiers, ``--map NAME=COLUMN`` aliases, and for
results.jsonl every scalar field of a record, nested ones by dotted name such as
``config.model.d_model``), so that ``--where`` and ``--holdout`` filters can name them.
A table file (analysis.table_file) is read as JSON lines when its name ends in .jsonl or .ndjson,
else as CSV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

import numpy as np

from analysis.hparams import analyze_records
from analysis.records import check_records, loss_unit_of
from scaling import results as R
from scaling.errors import UserError

CSV_KEYS = ("N", "D", "C", "loss", "budget", "run")
# The fits evaluate thousands of starts and the bootstrap thousands of resamples over every row;
# past this many rows that is tens of GiB (1e6 rows x 4000 resamples x 8 B = 30 GiB).
MAX_ROWS = 100_000


@dataclass
class RunTable:
    """One row per run: arrays N, D, C, loss, budget (NaN when unknown) and run ids."""

    run_id: list[str]
    N: np.ndarray
    D: np.ndarray
    C: np.ndarray
    loss: np.ndarray
    budget: np.ndarray
    curves: list[str | None]
    loss_unit: str = "nats/token"
    source: str = ""
    notes: list[str] = field(default_factory=list)
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    hparams: dict | None = None  # analysis.hparams.analyze_records of a sweep with axes

    def __len__(self) -> int:
        return int(self.loss.size)

    def subset(self, mask: np.ndarray) -> RunTable:
        """Rows where ``mask`` is true."""
        ix = np.flatnonzero(mask)
        return RunTable(
            [self.run_id[i] for i in ix],
            self.N[ix],
            self.D[ix],
            self.C[ix],
            self.loss[ix],
            self.budget[ix],
            [self.curves[i] for i in ix],
            self.loss_unit,
            self.source,
            list(self.notes),
            {k: v[ix] for k, v in self.extra.items()},
            self.hparams,
        )


def _check_values(table: RunTable) -> None:
    for name in ("N", "D", "C", "loss"):
        arr = getattr(table, name)
        bad = np.flatnonzero(~np.isfinite(arr) | (arr <= 0))
        if bad.size:
            i, value = int(bad[0]), float(arr[bad[0]])  # a float: numpy's repr is np.float64(nan)
            raise UserError(
                f"{table.source}: {name} must be a positive finite number, got {value!r} for run "
                f"{table.run_id[i]!r} ({bad.size} bad row(s)); fix or drop those rows"
            )


def load_results(
    path: str | Path, *, n_kind: str = "total", flops: str = "6nd", loss: str = "nats"
) -> RunTable:
    """Read DIR/results.jsonl (or the file itself). Non-"done" runs are skipped with a note.

    ``loss="bpb"`` reads the validation loss in bits per byte (`final_val_bpb`), which compares
    runs with different tokenizers; the default is the loss per token in nats."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.jsonl"
    if not path.is_file():
        raise UserError(
            f"no results table at {path}; pass a sweep directory containing results.jsonl"
        )
    if n_kind not in ("total", "nonembed"):
        raise UserError(f"--n-kind must be 'total' or 'nonembed', got {n_kind!r}")
    if flops not in ("6nd", "exact"):
        raise UserError(f"--flops-kind must be '6nd' or 'exact', got {flops!r}")
    if loss not in ("nats", "bpb"):
        raise UserError(f"--loss must be 'nats' or 'bpb', got {loss!r}")
    key_l = "final_val_loss" if loss == "nats" else "final_val_bpb"
    rows, unit, extra, done, diverged = [], None, [], [], []
    records = R.read_records(path, required=())  # damaged lines: reported once and skipped
    check_size(path, len(records))
    records, notes, planned = check_records(records, path)  # repeated run ids; runs off plan
    for lineno, rec in enumerate(records, 1):
        rid = str(rec.get("run_id", f"record{lineno}"))
        if rec.get("status", "done") != "done":
            notes.append(f"skipped run {rid}: status {rec.get('status')!r}")
            if rec.get("status") == "diverged" and isinstance(rec.get("cell"), dict):
                # bounds an hparams axis (analysis.hparams); never a point of the fits
                diverged.append(dict(rec, run_id=rid))
            continue
        key_n = R.N_TOTAL if n_kind == "total" else R.N_NONEMBED
        key_c = R.C_6ND if flops == "6nd" else R.C_EXACT
        missing = [k for k in (key_n, R.D, key_l) if rec.get(k) is None]
        if missing:
            hint = "; fix or delete that run's line"
            if loss == "bpb":
                hint = " (recorded before bits per byte existed: use --loss nats)"
            raise UserError(f"{path}: run {rid} lacks field(s) {missing}{hint}")

        def num(key: str, rec: dict = rec, rid: str = rid) -> float:
            return R.number(rec, key, f"{path}: run {rid}")

        N, D = num(key_n), num(R.D)
        C = rec.get(key_c)
        C = 6.0 * N * D if C is None or (flops == "6nd" and n_kind == "nonembed") else num(key_c)
        cell = rec.get("cell") if isinstance(rec.get("cell"), dict) else {}
        budget = cell.get("budget")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int | float)):
            budget = None
        curve = rec.get("curve") or rec.get("curve_path") or rec.get("metrics_path")
        if curve and not Path(curve).is_absolute():
            curve = str(path.parent / curve)
        unit = "bits/byte" if loss == "bpb" else loss_unit_of(rec)  # per run: `check_units`
        if loss == "bpb":
            curve = None  # the metrics curves are in nats per token
        rows.append((rid, N, D, C, num(key_l), budget, str(curve) if curve else None))
        plan = {} if planned is None else {"in_plan": rid in planned}
        extra.append(flatten(rec) | {"loss_unit": unit} | plan)
        done.append(dict(rec, run_id=rid))
    if not rows:
        raise UserError(f"{path}: no finished runs to analyse ({len(notes)} skipped)")
    order = canonical_order(rows)
    rows, extra, done = ([xs[i] for i in order] for xs in (rows, extra, done))
    hp = analyze_records(done + diverged, n_key=key_n, loss_key=key_l)
    if hp is not None:
        dropped = set(hp["dropped"])
        keep = [i for i, r in enumerate(rows) if r[0] not in dropped]
        rows, extra = [rows[i] for i in keep], [extra[i] for i in keep]
        notes.append(
            f"hyperparameter axes: kept the best of each cell's variants for the fits "
            f"({len(hp['kept'])} runs kept, {len(dropped)} variants dropped)"
        )
    table = to_table(rows, unit or "nats/token", str(path), notes, extra)
    table.hparams = hp
    return table


def canonical_order(rows: list[tuple]) -> list[int]:
    """Row indices sorted by (C, N, D, loss, run): one order for one set of runs. The lines of a
    results.jsonl come in the order runs finished, and the fits' sums and the bootstrap's
    resamples follow row order (reordering the demo's lines moved CI bounds by up to 15%)."""
    key = itemgetter(3, 1, 2, 4, 0)  # a row is (run, N, D, C, loss, ...)
    return sorted(range(len(rows)), key=lambda i: key(rows[i]))


def check_size(path: Path, rows: int) -> None:
    """Refuse, with the size, a table too large for the fits' and bootstrap's memory."""
    if rows > MAX_ROWS:
        gib = rows * 4000 * 8 / 2**30
        raise UserError(
            f"{path}: {rows:,} rows is more than the {MAX_ROWS:,} this tool fits (the bootstrap "
            f"alone would hold about {gib:.0f} GiB at 4000 resamples); aggregate or sample the "
            f"table, e.g. one row per run"
        )


def to_table(
    rows: list, unit: str, source: str, notes: list[str], extra: list[dict] | None = None
) -> RunTable:
    rid, N, D, C, L, B, cur = zip(*rows, strict=True)
    budget = np.array([np.nan if b is None else float(b) for b in B], dtype=np.float64)
    t = RunTable(
        list(rid),
        np.array(N, float),
        np.array(D, float),
        np.array(C, float),
        np.array(L, float),
        budget,
        list(cur),
        unit,
        source,
        notes,
        _columns(extra or []),
    )
    _check_values(t)
    return t


def is_column_name(name: str) -> bool:
    """Whether a filter can name ``name``: an identifier, or dotted identifiers (a.b.c)."""
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def flatten(rec: dict, prefix: str = "") -> dict:
    """Scalar fields of a (nested) JSON record by dotted name; lists are left out."""
    out: dict = {}
    for k, v in rec.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif v is None or isinstance(v, (str, int, float, bool)):
            out[key] = v
    return out


def _columns(extra: list[dict]) -> dict[str, np.ndarray]:
    """Per-row dicts -> named arrays: float when every present value is a number (or a numeric
    string, as CSV gives), else an object array of the raw values (None when missing)."""
    names = sorted({k for row in extra for k in row if k not in CSV_KEYS and is_column_name(k)})
    out = {}
    for name in names:
        vals = [row.get(name) for row in extra]
        out[name] = _numeric(vals)
        if out[name] is None:
            out[name] = np.array(vals, dtype=object)
    return out


def _numeric(vals: list) -> np.ndarray | None:
    nums = []
    for v in vals:
        if v is None or v == "":
            nums.append(math.nan)
        elif isinstance(v, (int, float)):
            nums.append(float(v))
        else:
            try:
                nums.append(float(v))
            except ValueError:
                return None
    return np.array(nums, dtype=np.float64)


def drop_highest_loss(table: RunTable, k: int) -> RunTable:
    """Drop the ``k`` highest-loss rows (Besiroglu et al. drop 5 of Hoffmann et al.'s points)."""
    if k < 0 or k >= len(table):
        raise UserError(
            f"--drop-highest {k}: must be between 0 and {len(table) - 1} (the table has "
            f"{len(table)} rows)"
        )
    if k == 0:
        return table
    keep = np.ones(len(table), dtype=bool)
    keep[np.argsort(table.loss)[len(table) - k :]] = False
    out = table.subset(keep)
    out.notes.append(f"dropped the {k} highest-loss row(s)")
    return out


def infer_budgets(table: RunTable, gap_dex: float = 0.1, snap_dex: float = 0.1) -> np.ndarray:
    """IsoFLOP budget per run: the grid cell's budget when known. Otherwise log10 C is split into
    clusters at gaps wider than ``gap_dex`` (budget = cluster geometric mean); if a cluster is
    wider than 2 * ``gap_dex`` (C scattered, e.g. digitised data), C is instead snapped to the
    nearest multiple of ``snap_dex`` in log10. Give a budget column when you have one."""
    if np.all(np.isfinite(table.budget)):
        return table.budget
    lc = np.log10(table.C)
    order = np.argsort(lc)
    cluster = np.zeros(lc.size, dtype=int)
    cluster[order[1:]] = np.cumsum(np.diff(lc[order]) > gap_dex)
    out = np.empty(lc.size)
    for c in np.unique(cluster):
        m = cluster == c
        if np.ptp(lc[m]) > 2 * gap_dex:
            out = 10.0 ** (np.round(lc / snap_dex) * snap_dex)
            break
        out[m] = 10.0 ** lc[m].mean()
    return np.where(np.isfinite(table.budget), table.budget, out)
