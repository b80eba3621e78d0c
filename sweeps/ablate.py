"""`scaling ablate DIR`: which heads and MLP blocks few-shot learning needs, for every finished
run of a sweep (or a chosen subset), resumably, into one table DIR/ablation.jsonl.

The work per run is `scaling.evals.ablate.ablate_run` (imported only once a run is ablated:
argument and run checks, which need no JAX, come first and fail with one line). The table holds
one record per run for the spec of the latest command, rewritten atomically after every run, so
an interrupted command leaves a valid table and the rerun continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from scaling.errors import UserError
from scaling.fmt import with_ci
from scaling.results import N_TOTAL, read_records, upgrade_result

TABLE = "ablation.jsonl"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate",
        help="prune heads/MLP blocks of trained runs: importance, curves, removable fraction",
    )
    p.add_argument("dir", help="sweep directory (results.jsonl and runs/), or one run directory")
    p.add_argument(
        "--runs", default="", help="comma-separated run ids or id prefixes (default all)"
    )
    p.add_argument(
        "--budget",
        default="",
        help="only runs of this IsoFLOP budget (a number, or 'largest'); default all budgets",
    )
    p.add_argument(
        "--sizes",
        type=int,
        default=0,
        help="keep this many model sizes of the selected runs, evenly spaced in the sorted list "
        "of sizes (smallest and largest included; not in log N), one run each, the lowest seed "
        "(default 0: every run, all seeds)",
    )
    p.add_argument("--tasks", default="", help="comma-separated tasks (default: the run's evals)")
    p.add_argument("--shots", default="", help="comma-separated shot counts (default: the run's)")
    p.add_argument("--n-items", type=int, default=0, help="eval items per task (default: run's)")
    p.add_argument(
        "--fractions", default="", help="pruning fractions in (0, 1) (default 0.1,0.2,...,0.9)"
    )
    p.add_argument("--kinds", default="heads,ffn,both", help="what to prune: heads,ffn,both")
    p.add_argument("--ffn-order", choices=("greedy", "gradient"), default="greedy")
    p.add_argument(
        "--head-order",
        choices=("gradient", "single"),
        default="gradient",
        help="order in which heads are removed: gradient importance (default), or single: each "
        "head's measured effect when removed alone (one suite evaluation per head)",
    )
    p.add_argument("--tol", type=float, default=0.05, help="relative drop allowed (default 0.05)")
    p.add_argument("--level", type=float, default=0.9, help="CI level (default 0.9)")
    p.add_argument("--resamples", type=int, default=1000, help="item resamples for the CI")
    p.add_argument("--no-progress", action="store_true", help="disable progress bars")
    p.set_defaults(handler=_ablate)


def _csv(text: str, kind: type, what: str) -> tuple:
    try:
        return tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"--{what} {text!r}: expected comma-separated {kind.__name__}s") from None


def spec_from_args(args: argparse.Namespace):
    from scaling.evals.ablate import AblateSpec  # numpy only, no JAX

    spec = AblateSpec(
        tasks=_csv(args.tasks, str, "tasks"),
        shots=_csv(args.shots, int, "shots"),
        n_items=args.n_items,
        kinds=_csv(args.kinds, str, "kinds"),
        ffn_order=args.ffn_order,
        head_order=args.head_order,
        tol=args.tol,
        level=args.level,
        resamples=args.resamples,
        **({"fractions": _csv(args.fractions, float, "fractions")} if args.fractions else {}),
    )
    return spec.check()


def select_runs(
    root: Path, ids: tuple[str, ...] = (), budget: str = "", sizes: int = 0
) -> list[Path]:
    """Run directories to ablate: finished runs of the sweep in `root` (or `root` itself when it
    is a run directory), filtered by id prefixes and budget, then `sizes` model sizes evenly
    spaced in the sorted list of sizes (indices round(i (S - 1) / (K - 1)); not in log N), one
    run each (the lowest seed; 0 keeps every run). UserError when none match or an id matches
    nothing."""
    if sizes < 0:
        raise UserError(f"--sizes {sizes}: must be >= 1 (or 0 for all runs)")
    if not root.is_dir():
        raise UserError(f"{root} is not a directory; pass a sweep directory or a run directory")
    if (root / "result.json").is_file() and not (root / "results.jsonl").is_file():
        given = [f for f, v in (("--runs", ids), ("--budget", budget), ("--sizes", sizes)) if v]
        if given:  # they were ignored: the one run was ablated whatever they said
            raise UserError(
                f"{' and '.join(given)} choose among a sweep's runs, but {root} is one run "
                f"directory; drop {given[0]} or pass the sweep directory"
            )
        return [root]
    path = root / "results.jsonl"
    if not path.is_file():
        raise UserError(f"no results.jsonl in {root}; pass a sweep directory (scaling sweep run)")
    records = read_records(path)  # a damaged line: reported once and skipped
    records = [r for r in records if r.get("status", "done") == "done"]
    if budget:
        budgets = sorted({float(r["cell"]["budget"]) for r in records if "budget" in r["cell"]})
        if not budgets:
            raise UserError(f"--budget {budget}: the sweep in {root} has no IsoFLOP budgets")
        if budget == "largest":
            want = budgets[-1]
        else:
            want = float(_csv(budget, float, "budget")[0])
            if not any(abs(b - want) <= 1e-6 * b for b in budgets):
                shown = ", ".join(f"{b:g}" for b in budgets)
                raise UserError(f"--budget {budget}: no such budget; the sweep has {shown}")
        records = [r for r in records if abs(r["cell"].get("budget", -1) - want) <= 1e-6 * want]
    for prefix in ids:
        if not any(r["run_id"].startswith(prefix) for r in records):
            raise UserError(f"--runs: no finished run matches {prefix!r} in {root}")
    if ids:
        records = [r for r in records if any(r["run_id"].startswith(p) for p in ids)]
    if not records:
        raise UserError(f"no finished runs to ablate in {root}")
    records.sort(key=lambda r: (r.get(N_TOTAL, 0), r.get("seed", 0), r["run_id"]))
    if sizes:  # K model sizes spread over N, one run each (the lowest seed): seeds are not sizes
        first: dict[int, dict[str, Any]] = {}
        for r in records:
            first.setdefault(r.get(N_TOTAL, 0), r)
        ns = sorted(first)
        if sizes > len(ns):  # it kept every size without a word (scaling finetune refuses)
            raise UserError(
                f"--sizes {sizes}: the runs chosen in {root} have only {len(ns)} distinct model "
                f"sizes; use --sizes {len(ns)} or fewer"
            )
        keep = sorted({round(i * (len(ns) - 1) / max(sizes - 1, 1)) for i in range(sizes)})
        records = [first[ns[i]] for i in keep]
    return [root / "runs" / r["run_id"] for r in records]


def write_table(path: Path, records: list[dict[str, Any]]) -> None:
    from scaling.fileio import atomic_write

    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    atomic_write(path, lines)


def run_ablation(
    root: Path, run_dirs: list[Path], spec, *, progress: bool = True
) -> list[dict[str, Any]]:
    """Ablate each run (resuming), rewriting the table after each; returns this call's records.
    The table (DIR/ablation.jsonl, or RUN/ablation/ablation.jsonl for one run directory) holds
    every run of DIR ablated with this spec, also by earlier calls on other subsets."""
    from scaling.evals.ablate import ablate_run  # JAX from here on

    single = run_dirs == [root]
    table = root / "ablation" / TABLE if single else root / TABLE
    keep_other_spec(table, spec.key())
    records: list[dict[str, Any]] = []
    for i, run in enumerate(run_dirs, 1):
        rec = ablate_run(run, spec, progress=progress)
        assert rec is not None
        records.append(rec)
        write_table(table, records if single else collect(root, spec.key()))
        print(f"[{i}/{len(run_dirs)}] {_line(rec)}", file=sys.stderr)
    print(f"table: {table}", file=sys.stderr)
    return records


def keep_other_spec(table: Path, key: str) -> None:
    """The table holds one spec's records: one of another spec (other tasks, shots, fractions,
    kinds, ...) is moved to TABLE.bak (replacing an older .bak) before this spec's is written."""
    if not table.is_file():
        return
    if any(r.get("spec_key") != key for r in read_records(table)):
        bak = table.with_name(table.name + ".bak")
        table.replace(bak)
        print(f"{table} held another ablation spec's records: moved to {bak}", file=sys.stderr)


def collect(root: Path, key: str) -> list[dict[str, Any]]:
    """Every finished ablation of spec `key` under root/runs, smallest model first, in today's
    names (one written before the record schema was unified is upgraded)."""
    records = []
    for path in sorted(root.glob(f"runs/*/ablation/{key}/result.json")):
        try:
            records.append(upgrade_result(json.loads(path.read_text())))
        except json.JSONDecodeError:
            continue  # cannot happen with atomic writes; never let one file sink the table
    return sorted(records, key=lambda r: (r.get(N_TOTAL) or 0, r["run_id"]))


def _fmt(s: dict | None, first: float | None = None) -> str:
    """A removable fraction; "< f" when even the first step (removing f: one head, one MLP
    block) dropped more than the tolerance, which "0.00 [0.00, 0.00]" hid."""
    if not s or s.get("estimate") is None:
        return "  n/a (at chance)"
    if s["estimate"] == 0 and first:
        return f"< {first:.2f}" + (f" [{s['lo']:.2f}, {s['hi']:.2f}]" if s["hi"] > 0 else "")
    return with_ci(s, ".2f")


def _line(rec: dict[str, Any]) -> str:
    parts = [f"{rec['run_id']} N={rec[N_TOTAL]:.3g}"]
    for kind, by_metric in rec["removable"].items():
        lp, em = by_metric["logprob"]["suite"], by_metric["exact_match"]["suite"]
        first = min((a for a in rec["curves"][kind]["actual"] if a > 0), default=None)
        parts.append(f"{kind}: logprob {_fmt(lp, first)}, exact {_fmt(em, first)}")
    cut = rec.get("truncated") or {}
    if cut:  # K-shot prompts that did not fit seq_len lost demos: say how many were used
        parts.append(
            "prompts cut to fit seq_len: "
            + ", ".join(f"{g} used {v['mean_shots']:.1f} shots on average" for g, v in cut.items())
        )
    return "; ".join(parts)


def _ablate(args: argparse.Namespace) -> int:
    from scaling.evals.ablate import check_items, check_run

    spec = spec_from_args(args)
    root = Path(args.dir)
    runs = select_runs(root, _csv(args.runs, str, "runs"), args.budget, args.sizes)
    for run in runs:
        check_run(run)
        check_items(run, spec)
    run_ablation(root, runs, spec, progress=not args.no_progress)
    return 0
