"""A sweep's results.jsonl records, checked before they are fitted, and their loss unit.

- A run id that appears on several lines (results.jsonl concatenated twice, lines pasted in
  again) is fitted once: the last line of each run id is kept, as `scaling sweep status` reads
  the file (`sweep run` itself never appends a run id twice).
- When plan.json lies beside results.jsonl, records whose run id it does not list (left from an
  earlier plan after `sweep run --replan`, or copied from another sweep) are kept, since a
  researcher may want them, and counted in a note that says how to leave them out: the table's
  column `in_plan` (1 for the planned runs, 0 for the others) is there for
  ``--where 'in_plan == 1'``.
- Each run's loss unit (`loss_unit_of`) is the column `loss_unit`: runs in different units
  (a byte-level and a subword tokenizer) are refused together (`check_units`, after --where,
  which can keep one unit; ``--loss bpb`` puts every run in bits per byte).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from scaling.errors import UserError
from scaling.fileio import read_json

PLAN = "plan.json"  # sweeps.registry.PLAN (analysis reads the sweep directory, never imports it)


def check_records(records: list[dict], path: Path) -> tuple[list[dict], list[str], set | None]:
    """(records, one per run id; notes; the run ids of the plan beside `path`, or None)."""
    records, notes = dedupe(records, Path(path).name)
    name, planned = read_plan_ids(path)
    if planned is not None:
        notes += off_plan(records, planned, name, Path(path).name)
    return records, notes, planned


def loss_unit_of(rec: dict) -> str:
    """A record's loss unit: its `loss_unit`, else nats/byte for the byte tokenizer's vocabulary
    (259), else nats/token."""
    if rec.get("loss_unit"):
        return str(rec["loss_unit"])
    vocab = ((rec.get("config") or {}).get("model") or {}).get("vocab_size")
    return "nats/byte" if vocab == 259 else "nats/token"


def check_units(table) -> None:
    """One loss unit per fit: runs of a byte-level and a subword tokenizer (nats/byte and
    nats/token) do not share a law. Called after --where, which can pick one unit."""
    col = (table.extra or {}).get("loss_unit")
    if col is None:
        return
    counts = Counter(str(u) for u in col)
    if len(counts) > 1:
        what = ", ".join(f"{n} run(s) in {u}" for u, n in counts.most_common())
        first = counts.most_common(1)[0][0]
        raise UserError(
            f"{table.source}: the runs' losses are in different units ({what}); fit one unit "
            f"with --where 'loss_unit == \"{first}\"', or compare all in bits per byte with "
            "--loss bpb"
        )
    if counts:
        table.loss_unit = next(iter(counts))


def dedupe(records: list[dict], name: str) -> tuple[list[dict], list[str]]:
    """(records with one line per run id, the last of each; notes). Records without a (string)
    run id are kept as they are."""
    ids = [r.get("run_id") if isinstance(r.get("run_id"), str) else None for r in records]
    last = {rid: i for i, rid in enumerate(ids) if rid is not None}
    keep = [r for i, (r, rid) in enumerate(zip(records, ids, strict=True)) if last.get(rid, i) == i]
    if len(keep) == len(records):
        return records, []
    counts = Counter(rid for rid in ids if rid is not None)
    repeated = sum(1 for n in counts.values() if n > 1)
    dropped = len(records) - len(keep)
    return keep, [
        f"{name} repeats {repeated} run id(s): dropped {dropped} duplicate record(s), kept the "
        f"last line of each"
    ]


def read_plan_ids(results: Path) -> tuple[str | None, set[str] | None]:
    """(sweep name, run ids) of the plan.json beside `results`; (None, None) when there is none
    (a damaged one is named once on stderr)."""
    path = Path(results).parent / PLAN
    if not path.is_file():
        return None, None
    plan = read_json(path, fix="not checking the records against it", default=None)
    cells = plan.get("cells") if isinstance(plan, dict) else None
    if not isinstance(cells, list):
        return None, None
    ids = {c["run_id"] for c in cells if isinstance(c, dict) and isinstance(c.get("run_id"), str)}
    return str(plan.get("sweep")), ids


def off_plan(records: list[dict], planned: set[str], sweep: str | None, name: str) -> list[str]:
    """The note on records whose run id the plan does not list ([] when there are none)."""
    off = [r for r in records if str(r.get("run_id")) not in planned]
    if not off:
        return []
    others = sorted({str(r.get("sweep")) for r in off if str(r.get("sweep")) != sweep})
    origin = [f"copied from sweep {', '.join(map(repr, others))}"] if others else []
    if any(str(r.get("sweep")) == sweep for r in off):
        origin.append("left from an earlier plan: `sweep run --replan` keeps finished results")
    return [
        f"{len(off)} of the {len(records)} records in {name} are runs {PLAN} does not list "
        f"({' or '.join(origin)}); they are analysed with the rest; to fit only the planned runs "
        f"add --where 'in_plan == 1'"
    ]
