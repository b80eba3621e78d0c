"""`scaling predict | plot | analyze`: thin argparse front-end over analysis/ (lazy imports)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scaling.errors import UserError
from scaling.fmt import with_ci


def _source_args(p: argparse.ArgumentParser) -> None:
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
        "column for --where/--holdout); repeatable; D = C/(6N) when D is not mapped",
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


def _load(args: argparse.Namespace):
    from analysis.tables import drop_highest_loss

    return drop_highest_loss(_filtered(args), args.drop_highest)


def _filtered(args: argparse.Namespace):
    """The table of --csv or DIR, after --where (not yet --drop-highest)."""
    from analysis.tables import load_csv, load_results, parse_map

    if args.csv:
        table = load_csv(
            args.csv, parse_map(args.mapping), loss_unit=args.loss_unit or "nats/token"
        )
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
    else:
        raise UserError(
            "give a sweep directory (containing results.jsonl) or --table FILE.csv|.jsonl --map ..."
        )
    from analysis.laws.select import where

    table = where(table, args.where)
    if not 0 < args.level < 1:
        raise UserError(f"--level must be between 0 and 1, got {args.level}")
    if args.resamples < 10:
        raise UserError(f"--resamples must be at least 10, got {args.resamples}")
    return table


def _out_dir(args: argparse.Namespace) -> Path:
    if args.out:
        out = Path(args.out)
    elif args.dir:
        out = Path(args.dir) / "report"
    else:
        out = Path(Path(args.csv).stem + "_report")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory; pass a directory path")
    return out


def _results_path(args: argparse.Namespace) -> Path | None:
    if args.csv or not args.dir:
        return None
    d = Path(args.dir)
    return d if d.is_file() else d / "results.jsonl"


def interval_lines(pr: dict, predictor: dict) -> list[str]:
    """How far the prediction extrapolates, what each interval term adds, which predictor."""
    t = pr["interval_terms"]
    cal = predictor["calibration"]
    out = [
        f"  extrapolation: {t['distance_decades']:.2f} decades beyond the fitted runs "
        f"(x{10 ** t['distance_decades']:.3g} in compute or size)",
        f"  interval half-width (log loss): parameter {t['param']:.2%}, form {t['form']:.2%}, "
        f"extrapolation {t['extrapolation']:.2%} -> total {t['total']:.2%}",
        f"  {predictor['choice']}",
        f"  extrapolation term calibrated on {cal['n_pairs']} back-test predictions from "
        f"{cal['n_origins']} origins (weight {cal['weight_user']:.0%}; the rest from the "
        "published-sweep prior)",
    ]
    if t.get("why_unsupported") == "overfitting":
        out.append(
            f"  WARNING: this target repeats its data at least "
            f"{predictor.get('overfit_onset_epochs') or 0:.3g} times, where fitted runs overfit "
            "(loss rising with more training); no law form describes that: the interval rests on "
            "the published-sweep prior and is a rough guess, not a calibrated one"
        )
    elif not t["supported"]:
        out.append(
            f"  WARNING: your back-tests reach {cal['d_max']:.2f} decades, this asks for "
            f"{t['distance_decades']:.2f}: the data cannot support this distance; the interval "
            "rests on the published-sweep prior and is a rough guess, not a calibrated one"
        )
    return out


def _fmt(d: dict) -> str:
    return with_ci(d, gap="  ")


def _predict_targets(args: argparse.Namespace):
    """Validate what to predict (before loading or fitting); the --at points when given."""
    nd = args.params is not None or args.tokens is not None
    given = [
        f
        for f, on in (
            ("--flops", args.flops is not None),
            ("--params/--tokens", nd),
            ("--at", args.at is not None),
        )
        if on
    ]
    if len(given) > 1:
        raise UserError(
            f"give one of --flops, --params/--tokens or --at, not {' and '.join(given)}"
        )
    if nd and (args.params is None or args.tokens is None):
        raise UserError("--params and --tokens go together (or give --flops)")
    for flag in ("flops", "params", "tokens"):
        value = getattr(args, flag)
        if value is not None and not 0 < value < float("inf"):
            raise UserError(f"--{flag} {value}: must be a positive finite number, e.g. 1e21")
    if not given and not args.holdout:
        raise UserError(
            "say what to predict: --flops C, --params N --tokens D, --at POINTS.csv, or --holdout"
        )
    if args.at is not None:
        from analysis.laws.points import read_points

        return read_points(args.at)
    return None


def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    from analysis.laws.bootstrap import bootstrap_fit
    from analysis.laws.fit import fit_joint
    from analysis.laws.points import points_lines, predict_points
    from analysis.laws.predict import backtest, predict_flops, predict_nd, table_predictor

    points = _predict_targets(args)
    table = _load(args)
    out: dict = {"source": table.source, "n_runs": len(table), "loss_unit": table.loss_unit}
    fit = boot = pred = None
    if args.holdout:  # the prediction, too, comes from the fit without the held-out runs
        bt = backtest(
            table,
            args.holdout,
            n_resamples=args.resamples,
            seed=args.seed,
            level=args.level,
            method=args.method,
        )
        fit, boot, pred = bt.pop("fit"), bt.pop("boot"), bt.pop("pred")
        out["backtest"] = bt
    n_fit = out["backtest"]["n_train"] if args.holdout else len(table)
    if args.flops is not None or args.params is not None or points is not None:
        if fit is None:
            fit = fit_joint(table.N, table.D, table.loss, method=args.method)
            boot = bootstrap_fit(
                fit,
                [np.log(table.N), np.log(table.D)],
                np.log(table.loss),
                np.asarray(table.run_id),  # resample whole runs (a run may have several rows)
                n_resamples=args.resamples,
                seed=args.seed,
            )
            pred = table_predictor(table, n_resamples=min(args.resamples, 100), seed=args.seed)
        out["params"] = fit.params
        out["n_fit"] = n_fit
        out["predictor"] = pred.to_json(args.level)
        if points is not None:
            out["predictions"] = predict_points(fit, boot, points, args.level, pred)
        elif args.flops is not None:
            out["prediction"] = predict_flops(fit, boot, args.flops, args.level, pred)
        else:
            out["prediction"] = predict_nd(fit, boot, args.params, args.tokens, args.level, pred)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    lvl = int(round(args.level * 100))
    held = f" (held out: {out['backtest']['description']})" if args.holdout else ""
    if "params" in out:
        print(f"fit on {n_fit} runs of {table.source}{held}; loss intervals are {lvl}% predictive")
    pr = out.get("prediction")
    if pr:
        print(f"C = {pr['flops']:.4g} FLOPs")
        print(f"  predicted loss ({table.loss_unit}): {_fmt(pr['loss'])}  ({lvl}% predictive)")
        print("\n".join(interval_lines(pr, out["predictor"])))
        fr = pr.get("frontier_L_opt")
        if fr:
            err = fr["out_of_sample_error"]
            print(
                f"  cross-check, Approach 2 frontier L_opt(C) on per-budget minima: {_fmt(fr)} "
                f"({lvl}% bootstrap"
                + (f"; out-of-sample error {err:.2%})" if err is not None else ")")
            )
        if "N_opt" in pr:
            print(f"  compute-optimal N (Chinchilla law, {lvl}% bootstrap CI): {_fmt(pr['N_opt'])}")
            print(f"  compute-optimal D: {_fmt(pr['D_opt'])} tokens")
            print(f"  tokens per parameter: {_fmt(pr['tokens_per_param'])}")
    if points is not None:
        print("\n".join(points_lines(out["predictions"], points.kind, table.loss_unit, args.level)))
    if "backtest" in out:
        _print_backtest(out["backtest"], table.loss_unit, lvl)
    return 0


def _print_backtest(bt: dict, unit: str, lvl: int = 90) -> None:
    print(f"back-test: fit on {bt['n_train']} runs, predict {bt['description']}")
    for r in bt["runs"]:
        e = r["rel_error"]
        print(
            f"  {r['run_id']}: actual {r['actual']:.4g}, predicted {_fmt(r['predicted'])}, "
            f"rel. error {e['estimate']:+.2%}, {r['distance_decades']:.2f} decades out"
            + ("" if r["inside"] else "  (outside the interval)")
        )
    cv = bt["coverage"]
    print(
        f"  {cv['inside']}/{cv['n']} held-out runs inside their {lvl}% predictive intervals "
        f"(the bootstrap-only interval covered {bt['bootstrap_coverage']:.0%})"
    )
    print(f"  {bt['predictor']['choice']}")
    m = bt["mean_abs_rel_error"]
    print(f"  mean |rel. error| {with_ci(m, '.2%')}; MAE {_fmt(bt['mae'])} {unit}")


def _analyze(args: argparse.Namespace, figures_only: bool = False) -> int:
    from analysis.plots import all_figures
    from analysis.report import run_analysis, write_report
    from analysis.tables import drop_highest_loss

    kept = _filtered(args)
    table = drop_highest_loss(kept, args.drop_highest)
    out = _out_dir(args)  # before any compute: a bad --out fails fast
    holdout = None if figures_only or args.holdout in (None, "none") else args.holdout
    if holdout and holdout != "largest":  # a hold-out the user asked for: check it before fitting
        from analysis.laws.select import holdout_rows

        holdout_rows(table, holdout)
    try:
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
    except UserError:  # the fit failed: the notes (e.g. skipped diverged runs) still matter
        for note in table.notes:
            print(f"  note: {note}", file=sys.stderr)
        raise
    if figures_only:
        figs = all_figures(res, out)
        for name, paths in figs.items():
            print(f"{name}: {', '.join(paths)}")
        return 0
    # --where selects runs for the emergence section too (--drop-highest and --holdout are the
    # fits' business: a high-loss small model is still a point of an emergence curve)
    paths = write_report(res, out, _results_path(args), set(kept.run_id) if args.where else None)
    from analysis.summary import summary_lines

    print("\n".join(summary_lines(res)))
    if table.hparams:
        from analysis.hparams import summary_lines as hp_lines

        print("\n".join(hp_lines(table.hparams)))
    print(f"wrote {paths['report']} and {paths['fits']} ({len(paths['figures'])} figures)")
    for note in res["notes"]:
        print(f"  note: {note}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `predict`, `plot` and `analyze` to the `scaling` CLI."""
    p = sub.add_parser("predict", help="predict loss (with CI) at a compute budget or (N, D)")
    _source_args(p)
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
        "@FILE of run names, or a filter like 'N > 4e8'",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_predict)
    p = sub.add_parser("plot", help="draw loss-vs-compute, IsoFLOP, N_opt and residual figures")
    _source_args(p)
    p.set_defaults(handler=lambda a: _analyze(a, figures_only=True), holdout=None)
    p = sub.add_parser("analyze", help="fit, bootstrap, back-test, plot; write DIR/report/")
    _source_args(p)
    p.add_argument(
        "--holdout",
        default="largest",
        metavar="SPEC",
        help="back-test held-out runs: 'largest' (default), a FLOP threshold, @FILE of run "
        "names, a filter like 'N > 4e8', or none",
    )
    p.set_defaults(handler=_analyze)
