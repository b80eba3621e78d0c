"""`scaling predict | plot | analyze`: thin argparse front-end over analysis/ (lazy imports)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.cli_source import filtered, source_args
from scaling.errors import UserError
from scaling.fileio import check_writable_dir


def _out_dir(args: argparse.Namespace) -> Path:
    if args.out:
        out = Path(args.out)
    elif args.dir:
        out = Path(args.dir) / "report"
    else:
        out = Path(Path(args.csv).stem + "_report")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory; pass a directory path")
    return check_writable_dir(out)  # a read-only sweep: say so before the fit, not after


def _results_path(args: argparse.Namespace) -> Path | None:
    if args.csv or not args.dir:
        return None
    d = Path(args.dir)
    return d if d.is_file() else d / "results.jsonl"


def _analyze(args: argparse.Namespace, figures_only: bool = False) -> int:
    from analysis.plots import all_figures
    from analysis.progress import stage, status
    from analysis.report import run_analysis, write_report
    from analysis.tables import drop_highest_loss

    kept = filtered(args)
    table = drop_highest_loss(kept, args.drop_highest)
    out = _out_dir(args)  # before any compute: a bad --out fails fast
    holdout = None if figures_only or args.holdout in (None, "none") else args.holdout
    if holdout and holdout != "largest":  # a hold-out the user asked for: check it before fitting
        from analysis.laws.select import holdout_rows

        holdout_rows(table, holdout)
    try:
        with status(f"scaling {'plot' if figures_only else 'analyze'} ({len(table)} runs)"):
            res = run_analysis(
                table,
                n_resamples=args.resamples,
                seed=args.seed,
                level=args.level,
                method=args.method,
                holdout=holdout,
                need_approach2=not args.no_approach2,
                intervals=not figures_only,  # `plot` draws the law's figures only (no back-tests)
            )
            if figures_only:
                stage("figures")
                figs = all_figures(res, out)
            else:
                # --where limits the emergence section too (--drop-highest and --holdout are
                # the fits' business: a high-loss small model is still on an emergence curve)
                ids = set(kept.run_id) if args.where else None
                paths = write_report(res, out, _results_path(args), ids)
    except UserError:  # the fit (or the report) failed: the notes (e.g. skipped diverged runs)
        # still matter
        for note in table.notes:
            print(f"  note: {note}", file=sys.stderr)
        raise
    if figures_only:
        for name, fig_paths in figs.items():
            print(f"{name}: {', '.join(fig_paths)}")
        for note in table.notes:  # what the input held (runs skipped, repeated, off the plan)
            print(f"  note: {note}", file=sys.stderr)
        return 0
    from analysis.summary import summary_lines

    print("\n".join(summary_lines(res)))
    if table.hparams:
        from analysis.hparams import summary_lines as hp_lines

        print("\n".join(hp_lines(table.hparams)))
    print(f"wrote {paths['report']} and {paths['fits']} ({len(paths['figures'])} figures)")
    for note in res["notes"]:
        print(f"  note: {note}", file=sys.stderr)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from analysis.predict_cli import predict

    return predict(args)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `predict`, `plot` and `analyze` to the `scaling` CLI."""
    p = sub.add_parser("predict", help="predict loss (with CI) at a compute budget or (N, D)")
    source_args(p)
    p.add_argument("--flops", type=float, default=None, help="compute budget C in FLOPs")
    p.add_argument("--params", type=float, default=None, help="model parameters N")
    p.add_argument("--tokens", type=float, default=None, help="training tokens D")
    p.add_argument(
        "--at",
        default=None,
        metavar="POINTS",
        help="predict at every row of a CSV/JSONL with columns N and D (or N and C), or C",
    )
    p.add_argument(
        "--holdout",
        default=None,
        metavar="SPEC",
        help="fit without these runs and back-test them: 'largest' budget, a FLOP threshold, "
        "@FILE of run names, a filter like 'N > 4e8', or none (the default)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_predict)
    p = sub.add_parser("plot", help="draw loss-vs-compute, IsoFLOP, N_opt and residual figures")
    source_args(p)
    p.set_defaults(handler=lambda a: _analyze(a, figures_only=True), holdout=None)
    p = sub.add_parser("analyze", help="fit, bootstrap, back-test, plot; write DIR/report/")
    source_args(p)
    p.add_argument(
        "--holdout",
        default="largest",
        metavar="SPEC",
        help="back-test held-out runs: 'largest' (default), a FLOP threshold, @FILE of run "
        "names, a filter like 'N > 4e8', or none",
    )
    p.set_defaults(handler=_analyze)
