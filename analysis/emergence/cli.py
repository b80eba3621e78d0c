"""`scaling emergence`: flag emergent abilities in a sweep directory or in a published table.

    scaling emergence SWEEP_DIR [--scale compute|params] [--out OUT]
    scaling emergence --csv A.csv [--csv B.csv] --map obsscaling --families Pythia,OPT
    scaling emergence --csv T.csv --map model=Model --map family=Family \\
        --map compute='FLOPs (1E21)' --map compute_multiplier=1e21 \\
        --metric 'MMLU:chance=0.25:n=14042' --metric 'ipa_em:chance=0:n=1003:pair=ipa_bleu' \\
        --metric ipa_bleu

Heavy imports (numpy, scipy, matplotlib) happen inside the handler only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scaling.errors import UserError
from scaling.fileio import check_writable_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "emergence",
        help="flag abilities that jump with scale (and whether the jump is metric-induced)",
        description="Per (task, metric, shots, family): chance-normalised score with Wilson CIs, "
        "onset, leave-future-out jump test (Holm-corrected), sigmoid-vs-linear ΔBIC, BIG-bench "
        "linearity/breakthroughness, mirage check on continuous companion metrics, "
        "loss-threshold view. Writes OUT/emergence.json and one PNG per flagged curve.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    p.add_argument("dir", nargs="?", help="sweep directory holding results.jsonl (or the file)")
    p.add_argument("--out", help="output directory (default DIR/emergence or ./emergence)")
    p.add_argument(
        "--scale",
        choices=("compute", "params"),
        default="compute",
        help="x axis: log10 training compute (default) or log10 parameters",
    )
    p.add_argument(
        "--csv",
        action="append",
        default=[],
        metavar="FILE",
        help="published table (repeat to join several on the `join` column)",
    )
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="SPEC|KEY=VALUE",
        help="column map: a built-in name (obsscaling), a TOML file, or KEY=VALUE "
        "(keys: model, join, family, compute, compute_multiplier, params, "
        "params_multiplier, families); repeatable, later entries win",
    )
    p.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="COL[:chance=C][:majority=M][:n=N][:pair=COL2][:scale=S]",
        help="score column; chance and n together make it a rate (Wilson CIs; one without "
        "the other exits 2); majority = "
        "the majority-label rate of a multiple-choice task (raises the chance level); "
        "pair names its continuous companion for the mirage check; scale divides "
        "the values (e.g. 100 for percentages); no chance/n = continuous metric",
    )
    p.add_argument("--families", help="comma-separated families to keep (default: all)")
    p.add_argument("--no-figures", action="store_true", help="write emergence.json only")
    p.set_defaults(handler=run)


def _table_curves(args: argparse.Namespace):
    from analysis.emergence.tables import curves_from_table, load_spec, parse_metric_flag

    specs = [m for m in args.map if "=" not in m]
    if len(specs) > 1:
        raise UserError(f"--map names {len(specs)} specs ({', '.join(specs)}); give at most one")
    spec = load_spec(specs[0] if specs else None, [m for m in args.map if "=" in m])
    metrics = spec.get("metrics") or {}
    if not isinstance(metrics, dict):  # `--map metrics=X` or `metrics = "X"`: a traceback
        raise UserError(
            f"--map: metrics = {metrics!r} is not a table; map a score column with --metric "
            "COLUMN[:chance=C:n=N] or a [metrics.COLUMN] table in a TOML map"
        )
    metrics = dict(metrics)
    for text in args.metric:
        col, opts = parse_metric_flag(text)
        prev = metrics.get(col, {})  # not a table: tables._check_options names it
        metrics[col] = {**prev, **opts} if isinstance(prev, dict) else prev
    spec["metrics"] = metrics
    fams = args.families or spec.get("families")
    if isinstance(fams, str):
        fams = [f.strip() for f in fams.split(",") if f.strip()]
    if fams is not None and not (isinstance(fams, list) and all(isinstance(f, str) for f in fams)):
        raise UserError(
            f'families = {fams!r}: give family names, e.g. families = ["Pythia", "OPT"] or '
            '"Pythia,OPT"'
        )
    return curves_from_table(args.csv, spec, scale=args.scale, families=fams)


def _print_table(report: dict) -> None:
    rows = [("family", "task", "metric", "shots", "verdict", "onset log10", "warnings")]
    for c in report["curves"]:
        onset = "-" if c.get("onset_log10") is None else f"{c['onset_log10']:.2f}"
        warns = ",".join(w for w in c["warnings"] if w != "single_seed")
        rows.append(
            (
                c["family"],
                c["task"],
                c["metric"],
                "-" if c["shots"] is None else str(c["shots"]),  # a table may not say
                c["verdict"],
                onset,
                warns or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def run(args: argparse.Namespace) -> int:
    from analysis.emergence import flagger
    from analysis.emergence import report as emergence_report
    from analysis.progress import stage, status

    if args.csv and args.dir:
        raise UserError("give either a sweep DIR or --csv tables, not both")
    table_only = [f for f, v in (("--map", args.map), ("--metric", args.metric),
                                 ("--families", args.families)) if v]  # fmt: skip
    if args.dir and table_only:  # they were silently ignored
        raise UserError(
            f"{', '.join(table_only)} describe --csv tables; a sweep DIR's curves come from its "
            "results.jsonl (every family, task, metric and shot count in it): drop them"
        )
    if args.csv:
        curves = _table_curves(args)
        out = Path(args.out or "emergence")
        source = ", ".join(args.csv)
    elif args.dir:
        from analysis.emergence.sources import curves_from_results

        curves = curves_from_results(args.dir, scale=args.scale)
        base = Path(args.dir)
        out = Path(args.out) if args.out else (base if base.is_dir() else base.parent) / "emergence"
        source = str(args.dir)
        if not curves:
            print(f"no finished run in {args.dir} has an evals block and a {args.scale} value: "
                  "nothing to flag")  # fmt: skip
            return 0
    else:
        raise UserError("pass a sweep DIR, or --csv FILE with a column map (--map/--metric)")
    check_writable_dir(out)  # before the flagging: results that cannot be saved are lost
    with status(f"scaling emergence ({len(curves)} curves)"):
        stage("flagging the curves")
        results = flagger.analyze_curves(curves)
        stage("report and figures")
        report = emergence_report.write_report(
            results, out, scale=args.scale, source=source, figures=not args.no_figures
        )
    _print_table(report)
    for m in report["mirage_pairs"]:
        comp = ", ".join(f"{k}: {v}" for k, v in m["companion_verdicts"].items())
        shots = "" if m.get("shots") is None else f" {m['shots']}-shot"
        na = "; ".join(f"{k}: {v}" for k, v in m.get("not_checked", {}).items())
        why = na if m["onset"].startswith("leaves") and na else m["onset"]
        print(
            f"mirage pair {m['family']}/{m['task']}{shots}: {m['primary']}: {m['primary_verdict']}"
            f" | {comp} | companion jumps at onset: "
            f"{m['any_companion_jumps'] if m['checked_at_onset'] else 'n/a: ' + why}"
        )
    one_seed = all("single_seed" in c["warnings"] for c in report["curves"])
    if one_seed:
        print("(every curve has a single seed per scale: model-to-model noise is not measured)")
    print(f"wrote {out / 'emergence.json'}")
    return 0
