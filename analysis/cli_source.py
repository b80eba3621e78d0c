"""The input flags every analysis command shares (a sweep directory or a table, --map, --where,
the fit's options) and the table they select."""

from __future__ import annotations

import argparse
import sys

from scaling.errors import UserError


def source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", default=None, help="sweep directory containing results.jsonl")
    p.add_argument(
        "--table",
        "--csv",
        dest="csv",
        default=None,
        metavar="FILE",
        help="fit a CSV table instead (e.g. published data); .jsonl/.ndjson is read as JSON lines",
    )
    p.add_argument(
        "--map",
        dest="mapping",
        action="append",
        default=[],
        metavar="KEY=COLUMN",
        help="table column for KEY in N, D, C, loss, budget, run, or any other NAME (an extra "
        "column for --where/--holdout); repeatable; D = C/(6N) when D is not mapped; columns "
        "named N, loss and D (or C) need no --map",
    )
    p.add_argument(
        "--where",
        default=None,
        metavar="EXPR",
        help="keep only rows matching EXPR, e.g. 'N > 1e8 and data == \"c4\"' "
        "(comparisons, and/or/not; any column)",
    )
    p.add_argument(
        "--loss-unit", default=None, help="loss unit label for a CSV (default nats/token)"
    )
    p.add_argument(
        "--drop-highest",
        type=int,
        default=0,
        metavar="K",
        help="drop the K highest-loss rows first (Epoch's Chinchilla refit uses 5)",
    )
    p.add_argument(
        "--n-kind",
        choices=("total", "nonembed"),
        default="total",
        help="which parameter count is N (results.jsonl only; default total)",
    )
    p.add_argument(
        "--flops-kind",
        choices=("6nd", "exact"),
        default="6nd",
        help="C = 6ND (default) or the engine's exact FLOPs (results.jsonl only)",
    )
    p.add_argument(
        "--loss",
        dest="loss_kind",
        choices=("nats", "bpb"),
        default="nats",
        help="results.jsonl only: validation loss per token in nats (default) or in bits per "
        "byte, which compares runs with different tokenizers",
    )
    p.add_argument(
        "--method",
        choices=("grid", "varpro"),
        default="grid",
        help="joint-fit solver: 4,500-start grid (default) or variable projection",
    )
    p.add_argument("--resamples", type=int, default=4000, help="bootstrap resamples (default 4000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--level", type=float, default=0.9, help="CI level (default 0.9)")
    p.add_argument("--out", default=None, help="output directory (default DIR/report)")
    p.add_argument(
        "--no-approach2",
        action="store_true",
        help="do not require >= 2 IsoFLOP budgets (skip Approach 2 with a note)",
    )


def load_source(args: argparse.Namespace):
    """The table `scaling predict` fits; its notes (runs skipped, repeated or off the plan, rows
    kept by --where) go to stderr here, since predict's output has no place for them."""
    from analysis.tables import drop_highest_loss

    table = drop_highest_loss(filtered(args), args.drop_highest)
    for note in table.notes:
        print(f"  note: {note}", file=sys.stderr)
    return table


def sweep_only_flags(args: argparse.Namespace) -> list[str]:
    """The flags given that pick fields of a sweep's results.jsonl (--loss, --flops-kind,
    --n-kind away from their defaults): a table says the same with --map."""
    return [
        f"{flag} {val}"
        for flag, val, default in (
            ("--loss", args.loss_kind, "nats"),
            ("--flops-kind", args.flops_kind, "6nd"),
            ("--n-kind", args.n_kind, "total"),
        )
        if val != default
    ]


def filtered(args: argparse.Namespace):
    """The table of --csv or DIR, after --where (not yet --drop-highest)."""
    from analysis.table_file import load_table, parse_map
    from analysis.tables import load_results

    if args.csv:
        if moot := sweep_only_flags(args):
            raise UserError(
                f"{', '.join(moot)}: applies to a sweep directory's results.jsonl only; for a "
                "table, map the column you mean (--map loss=COLUMN, --map C=COLUMN, --map "
                "N=COLUMN) and name its unit with --loss-unit"
            )
        mapping = parse_map(args.mapping)
        table = load_table(args.csv, mapping, loss_unit=args.loss_unit or "nats/token")
        if {"C", "D", "N"} <= mapping.keys():
            note_flop_convention(table, "the mapped C")
    elif args.dir:
        if args.mapping:
            raise UserError(
                "--map applies to --table/--csv files only (a sweep directory names its own "
                "columns; filter them with --where)"
            )
        table = load_results(
            args.dir, n_kind=args.n_kind, flops=args.flops_kind, loss=args.loss_kind
        )
        if args.loss_unit:
            table.loss_unit = args.loss_unit
        if args.flops_kind == "exact":
            note_flop_convention(table, "the exact C (--flops-kind exact)")
    else:
        raise UserError(
            "give a sweep directory (containing results.jsonl) or --table FILE.csv|.jsonl --map ..."
        )
    from analysis.laws.select import where

    table = where(table, args.where)
    if args.dir and not args.csv:  # one loss unit (runs --where keeps), as the label says
        from analysis.records import check_units

        check_units(table)
        table.loss_unit = args.loss_unit or table.loss_unit
    if not 0 < args.level < 1:
        raise UserError(f"--level must be between 0 and 1, got {args.level}")
    if args.resamples < 10:
        raise UserError(f"--resamples must be at least 10, got {args.resamples}")
    if args.seed < 0:  # numpy's seeding raised a traceback after the joint fit
        raise UserError(f"--seed must be a non-negative integer, got {args.seed}")
    return table


def c_ratio(table) -> float:
    """The table's C over 6ND (median): 1 unless C was mapped or is the engine's exact count."""
    import numpy as np

    return float(np.median(table.C / (6.0 * table.N * table.D)))


def c_convention(table) -> str:
    """What C counts: 6ND, or (a mapped C, `--flops-kind exact`) FLOPs as given, which place the
    budgets, the frontier and Approach 2 while the joint law and its predictions count 6ND."""
    r = c_ratio(table)
    if abs(r - 1.0) <= 0.01:
        return "C = 6ND FLOPs"
    return (
        f"C = FLOPs as given, {r:.3g}x 6ND (median): budgets, frontier and Approach 2 use it, "
        "the joint law, its compute-optimal points and extrapolation distances count C = 6ND"
    )


def note_flop_convention(table, what: str) -> None:
    """A C that is not 6ND (FLOPs a lab logged or the engine counted, attention included)
    places the budgets and back-test origins, while the law, `--flops` and the distances read
    C = 6ND: say so when they differ by more than 1%."""
    ratio = c_ratio(table)
    if abs(ratio - 1.0) > 0.01:
        fix = "map only N and D" if what.startswith("the mapped") else "leave out --flops-kind"
        table.notes.append(
            f"{what} is {ratio:.3g}x 6ND (median): budgets and back-test origins use it, "
            f"but the law, --flops and extrapolation distances count C = 6ND; {fix} to use "
            "6ND throughout"
        )
