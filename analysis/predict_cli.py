"""`scaling predict`: the loss of a compute budget, an (N, D) or a points file, from one fit of
the table (or of it without `--holdout`'s runs, which are then back-tested)."""

from __future__ import annotations

import argparse
import json

from analysis.checks import backtest_prior_note
from analysis.cli_source import load_source
from scaling.errors import UserError
from scaling.fmt import with_ci
from scaling.results import clean_json


def interval_lines(pr: dict, predictor: dict) -> list[str]:
    """How far the prediction extrapolates, what each interval term adds, which predictor."""
    t = pr["interval_terms"]
    cal = predictor["calibration"]
    out = [
        f"  extrapolation: {t['distance_decades']:.2f} decades beyond the fitted runs "
        f"(x{10 ** t['distance_decades']:.3g} in compute or size)",
        f"  interval half-width (log loss): parameter {t['param']:.2%}, form {t['form']:.2%}, "
        f"extrapolation {t['extrapolation']:.2%} -> total {t['total']:.2%} (the larger of the "
        "parameter term and the root sum of squares of the other two)",
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
    if args.holdout == "none":  # as `analyze --holdout none`: no back-test
        args.holdout = None
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


def predict(args: argparse.Namespace) -> int:
    """`scaling predict`: loss (with its predictive interval) at C, (N, D) or many points."""
    import numpy as np

    from analysis.design import identified_exponents
    from analysis.laws.bootstrap import bootstrap_fit
    from analysis.laws.fit import fit_joint
    from analysis.laws.points import predict_points
    from analysis.laws.predict import backtest, predict_flops, predict_nd, table_predictor
    from analysis.progress import stage, status

    points = _predict_targets(args)
    table = load_source(args)
    _check_budget_target(table, args, points)
    out: dict = {"source": table.source, "n_runs": len(table), "loss_unit": table.loss_unit}
    fit = boot = pred = None
    with status(f"scaling predict ({len(table)} runs)"):
        if args.holdout:  # the prediction, too, comes from the fit without the held-out runs
            stage(f"back-test without the held-out runs ({args.holdout})")
            bt = backtest(
                table,
                args.holdout,
                n_resamples=args.resamples,
                seed=args.seed,
                level=args.level,
                method=args.method,
            )
            fit, boot, pred = bt.pop("fit"), bt.pop("boot"), bt.pop("pred")
            _check_terms(fit, args, points)
            out["backtest"] = bt
        n_fit = out["backtest"]["n_train"] if args.holdout else len(table)
        if args.flops is not None or args.params is not None or points is not None:
            if fit is None:
                stage(f"law fits and bootstraps ({args.resamples} resamples)")
                fit = fit_joint(
                    table.N,
                    table.D,
                    table.loss,
                    method=args.method,
                    identified=identified_exponents(table),
                )
                _check_terms(fit, args, points)  # before the bootstrap and the law forms
                boot = bootstrap_fit(
                    fit,
                    [np.log(table.N), np.log(table.D)],
                    np.log(table.loss),
                    np.asarray(table.run_id),  # resample whole runs (a run may have several rows)
                    n_resamples=args.resamples,
                    seed=args.seed,
                )
                pred = table_predictor(table, n_resamples=min(args.resamples, 100), seed=args.seed)
            out["params"] = _params_json(fit, table, args.holdout)
            out["n_fit"] = n_fit
            out["predictor"] = pred.to_json(args.level)
            if points is not None:
                out["predictions"] = predict_points(fit, boot, points, args.level, pred)
            elif args.flops is not None:
                out["prediction"] = predict_flops(fit, boot, args.flops, args.level, pred)
            else:
                nd = (args.params, args.tokens)
                out["prediction"] = predict_nd(fit, boot, *nd, args.level, pred)
    if args.json:
        # strict JSON (jq, JSON.parse): a number a fit could not give is null, never NaN
        print(json.dumps(clean_json(out), indent=2, allow_nan=False))
        return 0
    _print_text(out, args, table, points)
    return 0


def _check_budget_target(table, args: argparse.Namespace, points) -> None:
    """A prediction at a compute budget needs the allocation: a size ladder does not identify
    it (N and D move together), nor does one model size or one token count, so say so before
    fitting instead of printing nan."""
    from analysis.design import detect_design

    at_budget = args.flops is not None or (points is not None and points.kind == "flops")
    if not at_budget:
        return
    fitted, left = table, ""
    if args.holdout:  # the prediction comes from the runs the hold-out leaves
        from analysis.laws.select import holdout_rows

        fitted = table.subset(~holdout_rows(table, args.holdout)[0])
        left = f"the runs --holdout {args.holdout} leaves: "
    design = detect_design(fitted)
    if not design.supports("allocation"):
        raise UserError(
            f"{left}{design.description}: {design.no_allocation}, so the compute-optimal model "
            f"at a budget is not identified; {'hold out fewer runs, or ' if left else ''}predict "
            "a model like the runs with --params N --tokens D (or an --at file with N and D "
            "columns)"
        )


def _params_json(fit, table, holdout: str | None) -> dict:
    """The joint law's parameters, null where the fitted runs' design or a lost term leaves
    none (`analyze` prints no value for them either: a one-budget A read 7e+31)."""
    from analysis.design import UNIDENTIFIED, detect_design
    from analysis.laws.fit import lost_params
    from analysis.laws.predict import holdout_mask

    fitted = table.subset(~holdout_mask(table, holdout)[0]) if holdout else table
    gone = set(UNIDENTIFIED.get(detect_design(fitted).kind, ()))
    for term, why in fit.diagnostics.get("lost_terms", {}).items():
        gone.update(lost_params(term, why))
    return {k: None if k in gone else v for k, v in fit.params.items()}


def _check_terms(fit, args: argparse.Namespace, points) -> None:
    """A prediction at a budget needs both the N and the D term: one the data do not identify
    (`fit_joint`'s diagnostics["lost_terms"]: at its bound 0, flat, or only at the smallest size)
    leaves the allocation without a value."""
    from analysis.laws.fit import lost_nd

    at_budget = args.flops is not None or (points is not None and points.kind == "flops")
    if at_budget and (nd := lost_nd(fit)):
        raise UserError(
            f"{nd} (the data do not identify it), so the compute-optimal model at a "
            "budget is not identified; add runs that vary N and D over a wider range, or predict "
            "a model with --params N --tokens D"
        )


def _print_text(out: dict, args: argparse.Namespace, table, points) -> None:
    """`predict`'s plain-text answer: the fit, the prediction with its interval terms, the
    compute-optimal allocation, the points table and the back-test."""
    from analysis.laws.points import points_lines

    lvl = int(round(args.level * 100))
    held = f" (held out: {out['backtest']['description']})" if args.holdout else ""
    if "params" in out:
        print(
            f"fit on {out['n_fit']} runs of {table.source}{held}; loss intervals are {lvl}% "
            "predictive"
        )
    pr = out.get("prediction")
    if pr:
        print(f"C = {pr['flops']:.4g} FLOPs")
        print(f"  predicted loss ({table.loss_unit}): {_fmt(pr['loss'])}  ({lvl}% predictive)")
        print("\n".join(interval_lines(pr, out["predictor"])))
        fr = pr.get("frontier_L_opt")
        if fr:
            print("  " + frontier_line(fr, lvl))
        if "N_opt" in pr:
            print(f"  compute-optimal N (Chinchilla law, {lvl}% bootstrap CI): {_fmt(pr['N_opt'])}")
            print(f"  compute-optimal D: {_fmt(pr['D_opt'])} tokens")
            print(f"  tokens per parameter: {_fmt(pr['tokens_per_param'])}")
    if points is not None:
        reach = out["predictor"]["calibration"]["d_max"] if out.get("predictor") else None
        lines = points_lines(out["predictions"], points.kind, table.loss_unit, args.level, reach)
        print("\n".join(lines))
    if "backtest" in out:
        _print_backtest(out["backtest"], table.loss_unit, lvl)


def frontier_line(fr: dict, lvl: int) -> str:
    """The frontier cross-check: L_opt(C) fitted to each budget's lowest loss (a CI only when
    there are enough budgets to resample: `Predictor.frontier_loss`)."""
    err = fr["out_of_sample_error"]
    oos = "" if err is None else f"; out-of-sample error {err:.2%}"
    head = (  # compute levels: an IsoFLOP sweep's budgets, or clusters of C on other designs
        f"cross-check, frontier L_opt(C) fitted to the lowest loss at each of {fr['n_budgets']} "
        "compute levels"
    )
    if fr.get("lo") is None:
        return f"{head}: {fr['estimate']:.4g} (too few budgets for a bootstrap CI{oos})"
    return f"{head}: {_fmt(fr)} ({lvl}% bootstrap, parameter noise only{oos})"


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
        + backtest_prior_note(bt)
    )
    print(f"  {bt['predictor']['choice']}")
    m = bt["mean_abs_rel_error"]
    print(f"  mean |rel. error| {with_ci(m, '.2%')}; MAE {_fmt(bt['mae'])} {unit}")
