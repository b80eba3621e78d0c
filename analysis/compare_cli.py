"""`scaling compare A B`: is B worth it across scale? (front-end of analysis/laws/compare.py)"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from scaling.errors import UserError
from scaling.fileio import check_writable_dir


def _load(src: str, args: argparse.Namespace):
    from analysis.table_file import load_table, parse_map
    from analysis.tables import load_results

    if src.lower().endswith(".csv"):  # columns named N, loss and D (or C) need no --map
        return load_table(src, parse_map(args.mapping), loss_unit=args.loss_unit or "nats/token")
    if args.mapping:
        raise UserError(f"--map applies to CSV tables only, and {src} is not a .csv file")
    table = load_results(src, n_kind=args.n_kind, flops=args.flops_kind, loss=args.loss_kind)
    col = (table.extra or {}).get("loss_unit")
    units = sorted({str(u) for u in col}) if col is not None else []
    if len(units) > 1:  # one law across byte-level and subword runs: the last run's unit won
        raise UserError(
            f"{src}: the runs' losses are in different units ({', '.join(units)}); compare "
            "them all in bits per byte with --loss bpb"
        )
    table.loss_unit = units[0] if units else table.loss_unit
    if args.loss_unit:
        table.loss_unit = args.loss_unit
    return table


def _moot_flags(args: argparse.Namespace) -> None:
    """--loss, --flops-kind and --n-kind pick fields of a sweep's results.jsonl: with two CSVs
    they were ignored silently (a `--loss bpb` comparison of nats per token)."""
    if any(not s.lower().endswith(".csv") for s in (args.a, args.b)):
        return
    from analysis.cli_source import sweep_only_flags

    if moot := sweep_only_flags(args):
        raise UserError(
            f"{', '.join(moot)}: applies to a sweep directory's results.jsonl only; for CSV "
            "tables map the columns you mean (--map loss=COLUMN, --map N=COLUMN, --map "
            "C=COLUMN) and name the unit with --loss-unit"
        )


def _recorded(src: str) -> tuple[set[str], set[str]]:
    """(tokenizer ids, datasets) recorded in a sweep's results.jsonl (empty for CSVs)."""
    path = Path(src) / "results.jsonl" if Path(src).is_dir() else Path(src)
    toks: set[str] = set()
    data: set[str] = set()
    if path.suffix != ".jsonl" or not path.is_file():
        return toks, data
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            d = rec.get("config", {}).get("data", {})
        except (json.JSONDecodeError, AttributeError):
            continue
        if rec.get("tokenizer"):
            toks.add(str(rec["tokenizer"]))
        if d.get("dataset"):
            paths = ",".join(d.get("paths") or [])
            data.add(f"{d['dataset']}[{paths}]" if paths else str(d["dataset"]))
    return toks, data


def _floats(text: str | None, what: str) -> list[float] | None:
    if not text:
        return None
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(
            f"{what} {text!r}: expected comma-separated numbers, e.g. 2.1,2.0"
        ) from None
    if not out or any(not (math.isfinite(x) and x > 0) for x in out):
        raise UserError(f"{what} {text!r}: give one or more positive finite numbers")
    return out


def _default_out(args: argparse.Namespace, labels: tuple[str, str]) -> Path:
    """--out, else B's directory / compare_<A>_vs_<B> (a '/' in a label made nested folders);
    a path that is a file exits 2 here, before the fits (it failed only when writing)."""
    if args.out:
        out = Path(args.out)
    else:
        b = Path(args.b)
        name = "_vs_".join(re.sub(r"[^\w.+=-]+", "_", s) for s in labels)
        out = (b if b.is_dir() else b.parent) / f"compare_{name}"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory; pass a directory path")
    return out


def _label(src: str) -> str:
    p = Path(src)
    name = p.stem if p.suffix in (".csv", ".jsonl") else p.name
    return name or "sweep"


def _check_pair(args: argparse.Namespace, A: tuple, B: tuple) -> None:
    """Before the bootstraps: the two sweeps share a tokenizer (or --loss bpb) and a loss unit,
    and each design identifies the compute-optimal frontier; a note when their data differ."""
    (ta, la), (tb, lb) = A, B
    (tok_a, data_a), (tok_b, data_b) = _recorded(args.a), _recorded(args.b)
    if args.loss_kind == "nats" and tok_a and tok_b and tok_a != tok_b:
        raise UserError(
            f"the sweeps use different tokenizers ({', '.join(sorted(tok_a))} vs "
            f"{', '.join(sorted(tok_b))}): nats per token do not compare; add --loss bpb"
        )
    if data_a and data_b and data_a != data_b:
        print(
            f"  note: the sweeps were trained on different data ({', '.join(sorted(data_a))} vs "
            f"{', '.join(sorted(data_b))}); the multiplier then mixes the change with the data",
            file=sys.stderr,
        )
    if ta.loss_unit != tb.loss_unit:  # before the bootstraps, not after them
        fix = (
            "add --loss bpb (bits per byte)"
            if Path(args.a).is_dir() and Path(args.b).is_dir()
            else "name a CSV's unit with --loss-unit, or fit sweeps of one unit"
        )
        raise UserError(
            f"the sweeps report loss in different units ({la}: {ta.loss_unit!r}, {lb}: "
            f"{tb.loss_unit!r}); compare runs on the same data and unit: {fix}"
        )
    from analysis.design import detect_design

    for t, lab in (A, B):
        design = detect_design(t)
        if not design.supports("allocation"):
            raise UserError(
                f"{lab}: {design.description}: {design.no_allocation}, so the joint law's "
                "compute-optimal frontier, which the multiplier reads, is not identified; compare "
                + (
                    "IsoFLOP sweeps at >= 2 compute budgets each"
                    if design.kind == "one_budget"
                    else "sweeps that vary N at fixed compute (IsoFLOP) or N and D independently "
                    "(a grid)"
                )
            )


def _compare(args: argparse.Namespace) -> int:
    from analysis.laws import compare as cmp
    from analysis.laws import compare_plot
    from analysis.progress import stage, status

    if not 0 < args.level < 1:
        raise UserError(f"--level must be between 0 and 1, got {args.level}")
    if args.resamples < 10:
        raise UserError(f"--resamples must be at least 10, got {args.resamples}")
    if not (math.isfinite(args.extrapolate) and args.extrapolate > 1):  # before the bootstraps
        raise UserError(
            f"--extrapolate must be a finite factor > 1 on the largest budget, e.g. 100; "
            f"got {args.extrapolate}"
        )
    if args.seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {args.seed}")
    labels = (args.labels or f"{_label(args.a)},{_label(args.b)}").split(",")
    if len(labels) != 2 or not all(s.strip() for s in labels):
        raise UserError(f"--labels {args.labels!r}: give two names, e.g. --labels rope,learned")
    la, lb = (s.strip() for s in labels)
    if la == lb:
        la, lb = f"A:{la}", f"B:{lb}"
    losses = _floats(args.losses, "--losses")
    _moot_flags(args)
    out = _default_out(args, (la, lb))
    ta, tb = _load(args.a, args), _load(args.b, args)
    _check_pair(args, (ta, la), (tb, lb))
    check_writable_dir(out)  # after the input checks (no empty folder), before the bootstraps
    kw = dict(n_resamples=args.resamples, method=args.method)
    with status(f"scaling compare ({len(ta)} + {len(tb)} runs)"):
        stage(f"{la}: fit, {args.resamples} bootstraps")
        seed_a, seed_b = cmp.sweep_seeds(ta, tb, args.seed)
        a = cmp.fit_sweep(ta, la, seed=seed_a, **kw)
        stage(f"{lb}: fit, {args.resamples} bootstraps")
        b = cmp.fit_sweep(tb, lb, seed=seed_b, **kw)
        stage("multiplier, exponent test, figure")
        res = cmp.compare(a, b, losses=losses, extrapolate=args.extrapolate, level=args.level)
        paths = compare_plot.write(res, a, b, out)
    if args.json:
        from scaling.results import clean_json

        print(json.dumps(clean_json(res), indent=2))
    else:
        print("\n".join(cmp.summary_lines(res)))
        print(f"wrote {paths['json']} and {', '.join(paths['figures'])}")
    for t, lab in ((ta, la), (tb, lb)):  # which sweep each note is about
        for note in t.notes:
            print(f"  note: {lab}: {note}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `compare` to the `scaling` CLI."""
    p = sub.add_parser(
        "compare",
        help="compute multiplier of sweep B over sweep A (bootstrap CIs), exponent test, figure",
    )
    p.add_argument("a", help="baseline: sweep directory (results.jsonl) or CSV")
    p.add_argument("b", help="candidate: sweep directory (results.jsonl) or CSV")
    p.add_argument("--labels", default=None, help="names for A and B, e.g. rope,learned")
    p.add_argument(
        "--losses",
        default=None,
        help="comma-separated losses to report the multiplier at "
        "(default: 3 losses across the compute range both sweeps cover)",
    )
    p.add_argument(
        "--extrapolate",
        type=float,
        default=100.0,
        help="also report the multiplier at the loss A reaches at this factor times the "
        "largest budget (default 100)",
    )
    p.add_argument(
        "--map",
        dest="mapping",
        action="append",
        default=[],
        metavar="KEY=COLUMN",
        help="CSV column for KEY in N, D, C, loss, budget, run (both CSVs; repeatable); "
        "columns named N, loss and D (or C) need no --map",
    )
    p.add_argument("--loss-unit", default=None, help="loss unit label for CSVs")
    p.add_argument("--n-kind", choices=("total", "nonembed"), default="total")
    p.add_argument(
        "--flops-kind",
        choices=("6nd", "exact"),
        default="6nd",
        help="C of a sweep directory's runs, which places its budgets (default 6nd); the "
        "frontiers, the multipliers and the extrapolated region count C = 6ND either way",
    )
    p.add_argument(
        "--loss",
        dest="loss_kind",
        choices=("nats", "bpb"),
        default="nats",
        help="nats per token (default) or bits per byte (needed when the tokenizers differ)",
    )
    p.add_argument("--method", choices=("grid", "varpro"), default="grid")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per sweep")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="bootstrap seed: one sweep uses SEED, the other SEED + 1, chosen by their rows, "
        "so swapping A and B mirrors the results (default 0)",
    )
    p.add_argument("--level", type=float, default=0.9, help="CI level (default 0.9)")
    p.add_argument("--out", default=None, help="output dir (default B_DIR/compare_A_vs_B)")
    p.add_argument("--json", action="store_true", help="print compare.json instead of a summary")
    p.set_defaults(handler=_compare)
