"""The one record schema: a run's `result.json` and a sweep's `results.jsonl` row (stdlib only).

Both records name one quantity one way: `N_total`, `N_nonembed`, `D`, `C_6ND`, `C_exact` (the
names the analysis reads). `result.json` files written before that carried the engine's own names
(`n_params_total`, `tokens`, `flops_exact`, ...); `upgrade_result` renames them on read, so old run
directories still load. An ablation record (`scaling.evals.ablate`, RUN/ablation/<key>/result.json
and DIR/ablation.jsonl) copies its run's N_total, N_nonembed, D and C_6ND under these names too,
and is upgraded the same way when read. JAX-free: `scaling.train` writes through it, `sweeps` and
`analysis` read through it.

- `clean_json`: THE JSON cleaner (numpy scalars and arrays, tuples, sets, paths; non-finite
  floats -> null unless kept).
- `write_result` / `read_result` / `finished_result`: result.json, and the one "is this run
  finished" check (`scaling.train` and `sweeps.runner` both ask it).
- `read_records` / `append_record`: results.jsonl, appended atomically without duplicates.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from scaling.errors import UserError
from scaling.fileio import (
    atomic_write,
    file_lock,
    read_json,
    read_jsonl,
    split_jsonl,
    warn,
    writing,
)

# ----------------------------------------------------------------------------- names

RUN_ID, STATUS = "run_id", "status"
N_TOTAL, N_EMBED, N_NONEMBED = "N_total", "N_embed", "N_nonembed"
D = "D"  # training tokens
C_EXACT, C_6ND, C_6ND_NONEMBED = "C_exact", "C_6ND", "C_6ND_nonembed"
FINISHED = ("done", "diverged")  # a run with one of these statuses is never trained again

RESULT_FIELDS = (
    RUN_ID, "name", STATUS, "step", "diverged_at_step",
    "final_val_loss", "best_val_loss", "final_val_bpb", "best_val_bpb",
    N_TOTAL, N_EMBED, N_NONEMBED, D, "epochs", "flops_per_token", C_EXACT, C_6ND, C_6ND_NONEMBED,
    "flops_val", "flops_convention", "wall_time_s", "tokens_per_s", "mfu",
    "launchers", "started_at", "device_kind", "n_devices", "compute_dtype", "mesh",
    "warmup_steps", "resumed_from_step",
    "checkpoint_warnings", "data_info", "evals", "metrics_path", "config",
)  # fmt: skip
"""The keys of result.json, as `scaling.run_result` writes them for `scaling.train`."""

RECORD_FIELDS = (
    RUN_ID, "sweep", "label", "cell", "config", N_TOTAL, N_NONEMBED, D, C_6ND, C_EXACT,
    "steps", "batch", "lr", "final_val_loss", "best_val_loss", "final_val_bpb",
    "tokenizer", "tokenizer_sha256", "curve", "evals", STATUS, "steps_done",
    "diverged_at_step", "wall_time_s", "tokens_per_s", "mfu", "launchers", "started_at",
    "device_kind", "n_devices", "seed",
)  # fmt: skip
"""The keys of a results.jsonl row, as `sweeps.registry.make_record` writes them."""

OLD_RESULT_NAMES = {
    "n_params_total": N_TOTAL,
    "n_params_embed": N_EMBED,
    "n_params_nonembed": N_NONEMBED,
    "tokens": D,
    "flops_exact": C_EXACT,
    "flops_6nd_total": C_6ND,
    "flops_6nd_nonembed": C_6ND_NONEMBED,
}
"""result.json (and ablation record) names before the schema was unified -> today's names (read,
never written)."""

# ----------------------------------------------------------------------------- JSON


def clean_json(value: Any, *, keep_nonfinite: bool = False, drop_private: bool = False) -> Any:
    """A copy of `value` that `json.dumps` writes: numpy scalars and arrays (anything with
    `tolist`) -> Python, tuples and sets -> lists, paths -> str, dict keys json cannot write ->
    str. Non-finite floats become None (strict JSON) unless `keep_nonfinite` (then json writes
    NaN/Infinity); `drop_private` drops dict keys starting with "_"."""

    def clean(x: Any) -> Any:
        if isinstance(x, float):  # before `tolist`: numpy float64 is a float
            return float(x) if keep_nonfinite or math.isfinite(x) else None
        if isinstance(x, dict):
            return {
                k if isinstance(k, str | int | float | bool | None) else str(k): clean(v)
                for k, v in x.items()
                if not (drop_private and str(k).startswith("_"))
            }
        if isinstance(x, list | tuple | set | frozenset):
            return [clean(v) for v in x]
        if isinstance(x, Path):
            return str(x)
        if callable(getattr(x, "tolist", None)):
            return clean(x.tolist())  # numpy scalar or array (a JAX array too)
        return x

    return clean(value)


# ----------------------------------------------------------------------------- result.json


def write_result(path: Path, result: dict[str, Any]) -> None:
    """result.json, atomically (NaN kept as JSON NaN, keys sorted, indent 2)."""
    text = json.dumps(clean_json(result, keep_nonfinite=True), indent=2, sort_keys=True)
    atomic_write(path, text + "\n")


def upgrade_result(result: dict[str, Any]) -> dict[str, Any]:
    """`result` (a result.json or an ablation record) with the pre-unification names renamed to
    today's (a copy; other keys untouched)."""
    out = dict(result)
    for old, new in OLD_RESULT_NAMES.items():
        if old in out:
            value = out.pop(old)
            out.setdefault(new, value)
    return out


def is_result(obj: Any) -> bool:
    """True for a result.json object: a dict with a string run_id and status."""
    return (
        isinstance(obj, dict)
        and isinstance(obj.get(RUN_ID), str)
        and isinstance(obj.get(STATUS), str)
    )


def read_result(path: Path, *, fix: str) -> dict[str, Any] | None:
    """The result.json at `path` in today's names; None when absent, not a JSON object, or
    damaged (then with a warning naming `fix`)."""
    path = Path(path)
    if not path.is_file():
        return None
    result = read_json(path, fix=fix, default=None)
    return upgrade_result(result) if isinstance(result, dict) else None


def finished_result(out: Path, run_id: str) -> dict[str, Any] | None:
    """THE "is this run finished" check: the result.json in run directory `out` when it records
    run `run_id` as done or diverged, else None (absent, damaged, another run, or stopped)."""
    fix = "ignoring it: the run resumes from its newest checkpoint and rewrites it"
    result = read_result(Path(out) / "result.json", fix=fix)
    if is_result(result) and result[RUN_ID] == run_id and result[STATUS] in FINISHED:
        return result
    return None


# ----------------------------------------------------------------------------- results.jsonl


def number(record: dict[str, Any], key: str, where: str) -> float:
    """A record's numeric field as a float; a UserError naming `where` (the file and run), the
    field and its value when it is not a number (a bool is not a number here)."""
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{where}: {key} = {value!r} is not a number")
    return float(value)


def read_records(path: Path, *, required: tuple[str, ...] = (RUN_ID,)) -> list[dict[str, Any]]:
    """Every intact row of a results.jsonl ([] when absent): a damaged line, or one without the
    `required` fields, is reported once and skipped."""
    return read_jsonl(path, required=required)


def append_record(path: Path, record: dict[str, Any], *, key: str = RUN_ID) -> bool:
    """Append one row to the JSON-lines table `path` atomically, under an exclusive lock on
    `.results.lock` beside it: the file is rewritten to a temp file and `os.replace`d, so readers
    never see half a line. False (nothing written) if a row with the same `key` is there.
    Damaged lines move to `<name>.damaged` beside the table; every intact row is kept."""
    path = Path(path)
    line = json.dumps(clean_json(record), allow_nan=False) + "\n"
    with file_lock(path.with_name(".results.lock")):
        old = path.read_bytes() if path.is_file() else b""
        records, problems = split_jsonl(old, required=(key,))
        if record[key] in {r[key] for r in records}:
            return False
        if problems:  # keep the damaged bytes beside the table, and only intact lines in it
            kept = [x for x in old.split(b"\n") if _intact(x, key)]
            damaged = [x for x in old.split(b"\n") if x.strip() and not _intact(x, key)]
            bad = path.with_name(path.name + ".damaged")
            with writing(bad):
                with open(bad, "ab") as f:
                    f.write(b"\n".join(damaged) + b"\n")
            warn(
                f"{path}: moved {len(damaged)} damaged line(s) to {bad.name} "
                f"({'; '.join(problems[:3])}); {len(records)} intact record(s) kept"
            )
            old = b"".join(x + b"\n" for x in kept if x.strip())
        elif old and not old.endswith(b"\n"):
            old += b"\n"
        atomic_write(path, old + line.encode())
    return True


def _intact(raw: bytes, key: str) -> bool:
    return bool(split_jsonl(raw + b"\n", required=(key,))[0])
