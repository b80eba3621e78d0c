"""The analysis pipeline behind `scaling analyze`: fits, bootstrap, cross-checks, report.md."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from analysis.cli_source import c_convention
from analysis.design import UNIDENTIFIED, detect_design
from analysis.laws.bootstrap import bootstrap_fit, resample_weights, summarize
from analysis.laws.core import allocation_exponents, compute_optimal
from analysis.laws.fit import TERM_PARAMS, fit_joint, fit_power, lost_params, term_phrase
from analysis.laws.frontier import approach2, envelope
from analysis.laws.predict import backtest, predict_flops, table_predictor
from analysis.markdown import emergence_md, report_md
from analysis.progress import stage
from analysis.tables import RunTable
from scaling.errors import UserError
from scaling.fileio import atomic_write
from scaling.results import clean_json


def run_analysis(
    table: RunTable,
    *,
    n_resamples: int = 4000,
    seed: int = 0,
    level: float = 0.9,
    method: str = "grid",
    holdout: str | None = "largest",
    need_approach2: bool = False,
    intervals: bool = True,
) -> dict:
    """Joint fit + run-level bootstrap, frontier and Approaches 1/2, optional back-test."""
    t0 = time.perf_counter()
    design = detect_design(table)
    if need_approach2 and design.supports("approach2"):
        approach2(table)  # cheap: fail with a UserError before any fitting
    res: dict = {"table": table, "level": level, "notes": list(table.notes), "timings": {}}
    res["design"] = design.to_json()
    if not design.supports("allocation"):
        res["notes"].append(
            f"{design.description}: {design.no_allocation}, so the joint law's separate N and D "
            "terms and the allocation exponents a, b are not identified: no compute-optimal "
            "allocation or prediction at a budget is given; predict a model like the runs with "
            "`scaling predict ... --params N --tokens D`"
        )
    groups = np.asarray(table.run_id)  # resample whole runs (a run may have several rows)
    stage(f"joint law and its bootstrap ({n_resamples} resamples)")
    _joint(res, table, groups, design.exponents, method=method, n_resamples=n_resamples, seed=seed)
    _unidentified(res, design)
    stage("Approach 1: envelope and frontier L(C)")
    _frontier(res, table, n_resamples=n_resamples, seed=seed)
    W = resample_weights(groups, min(n_resamples, 1000), np.random.default_rng(seed + 1))
    stage("Approach 2: IsoFLOP parabolas")
    _approach2(res, table, design, W, required=need_approach2)
    t1 = time.perf_counter()
    pred = None
    if intervals:
        stage("law forms and rolling back-tests")
        pred = table_predictor(table, n_resamples=min(n_resamples, 100), seed=seed)
    res["predictor"] = pred
    res["timings"]["predictor_s"] = time.perf_counter() - t1
    Cmax = float(np.max(6.0 * table.N * table.D))  # the law's C (table.C may count otherwise)
    res["compute_optimal"] = []  # a ladder identifies no allocation: no compute-optimal point
    if design.supports("allocation") and not res["no_allocation"]:
        res["compute_optimal"] = [
            predict_flops(res["fit"], res["boot"], c, level, pred)
            for c in (Cmax, 10 * Cmax, 100 * Cmax)
        ]
    if holdout:
        stage(f"back-test without the held-out runs ({holdout})")
        try:
            bt = backtest(
                table, holdout, n_resamples=n_resamples, seed=seed, level=level, method=method
            )
            bt.pop("fit"), bt.pop("boot"), bt.pop("pred")
            res["backtest"] = bt
        except UserError as e:
            res["notes"].append(f"back-test skipped: {e}")
    res["timings"]["total_s"] = time.perf_counter() - t0
    return res


def _joint(res: dict, table: RunTable, groups, identified, *, method: str, n_resamples, seed):
    """The joint law (refused if an `identified` exponent is <= 0), its run-level bootstrap and
    the parameters' CIs (with a and b)."""
    fit = fit_joint(table.N, table.D, table.loss, method=method, identified=identified)
    res["timings"]["fit_s"] = fit.diagnostics["seconds"]
    boot = bootstrap_fit(
        fit,
        [np.log(table.N), np.log(table.D)],
        np.log(table.loss),
        groups,
        n_resamples=n_resamples,
        seed=seed,
    )
    res["timings"]["bootstrap_s"] = boot.seconds
    res["fit"], res["boot"] = fit, boot
    p, bp = dict(fit.params), dict(boot.params)
    p["a"], p["b"] = allocation_exponents(fit.params)
    bp["a"], bp["b"] = allocation_exponents(boot.params)
    res["params_ci"] = summarize(p, bp, res["level"])


def _unidentified(res: dict, design) -> None:
    """res["unidentified"]: {parameter: "design" | TERM} for the joint law's parameters that have
    no value: those the design cannot identify, and those of a term the data do not identify
    (TERM; res["lost_terms"]: {TERM: "bound" | "flat" | "spike"}, `analysis.laws.fit.lost_terms`;
    varpro reported a term at its bound as 1e-300). A lost term of N or D leaves no allocation:
    res["no_allocation"] says why (None when there is one)."""
    gone = dict.fromkeys(UNIDENTIFIED.get(design.kind, ()), "design")
    terms = res["fit"].diagnostics.get("lost_terms", {})
    for term, why in sorted(terms.items(), key=lambda kv: kv[1] != "flat"):  # E: the flat term's
        for k in lost_params(term, why):
            gone.setdefault(k, term)
    res["unidentified"], res["lost_terms"] = gone, terms
    res["no_allocation"] = design.no_allocation
    lost = {t: w for t, w in terms.items() if gone.get(TERM_PARAMS[t][-1]) == t}  # not the design's
    if not lost:
        return
    them = ("these terms", "their") if len(lost) > 1 else ("this term", "its")
    res["notes"].append(
        f"joint law: {_lost_words(lost)}: the data do not identify {them[0]}, so {them[1]} "
        f"parameters{' and E' if 'flat' in lost.values() else ''} are not identified; add runs "
        "that vary N and D over a wider range"
    )
    if res["no_allocation"] is None and (nd := {t: lost[t] for t in ("A", "B") if t in lost}):
        res["no_allocation"] = _lost_words(nd, short=True)


def _lost_words(lost: dict, short: bool = False) -> str:
    """'the fitted A term(s) sit at the bound 0 (below 1e-6 of every run's loss); the fitted B
    term is flat across the runs (...)' (``short``: without the parenthesis)."""
    bound = [t for t, w in lost.items() if w == "bound"]
    out = [f"the fitted {' and '.join(bound)} term(s) sit at the bound 0"] if bound else []
    if bound and not short:
        out[0] += " (below 1e-6 of every run's loss)"
    return "; ".join(out + [term_phrase(t, w) for t, w in lost.items() if w != "bound"])


def _frontier(res: dict, table: RunTable, *, n_resamples: int, seed: int) -> None:
    """Approach 1's envelope and, with 3 or more envelope points, the frontier L(C) with CIs."""
    env = envelope(table)
    res["envelope"] = env
    if env["C"].size < 3:
        res["notes"].append(f"frontier L(C) not fitted: {env['C'].size} envelope point(s) < 3")
        return
    try:
        lc = fit_power(env["C"], env["loss"], what="frontier L(C)")
    except UserError as e:  # the frontier is a cross-check: note it, keep the report
        res["notes"].append(f"frontier L(C) not fitted: {e}")
        return
    res["frontier_fit"] = lc
    groups = env["run"]  # resample runs: one run's curve can put many points on the envelope
    if np.unique(groups).size < 3:
        groups = np.arange(env["C"].size)
        res["notes"].append(
            f"frontier L(C): its envelope comes from {np.unique(env['run']).size} run(s), too few "
            "to resample, so its CI resamples the envelope points as if independent (too narrow)"
        )
    lb = bootstrap_fit(
        lc,
        [np.log(env["C"])],
        np.log(env["loss"]),
        groups,
        n_resamples=min(n_resamples, 1000),
        seed=seed,
    )
    res["frontier_ci"] = summarize(lc.params, lb.params, res["level"])


def _approach2(res: dict, table: RunTable, design, W, *, required: bool) -> None:
    """Approach 2 (IsoFLOP parabolas) where the design has budgets; a note where it can't run."""
    try:
        if design.kind == "one_budget":
            return _one_minimum(res, table, design)
        if not design.supports("approach2"):
            why = "" if "IsoFLOP" in design.description else ": no IsoFLOP budgets"
            raise UserError(f"not applicable ({design.description}{why})")
        a2 = approach2(table, W)
        res["approach2"] = a2
        boot = {"a": a2.pop("a_boot"), "b": a2.pop("b_boot")}
        a2["n_boot_failed"] = n_bad = int(np.isnan(boot["a"]).sum())
        if n_bad:  # nanpercentile would leave them out silently
            a2["notes"].append(
                f"Approach 2: {n_bad} of {boot['a'].size} bootstrap resamples found an IsoFLOP "
                "minimum at fewer than 2 budgets; its CI leaves them out, so it is too narrow "
                "where the minima are poorly determined (add model sizes around each minimum)"
            )
        res["approach2_ci"] = summarize({"a": a2["a"], "b": a2["b"]}, boot, res["level"])
        if len(a2["minima"]) < 3:  # a line through 2 minima: resampling shows no spread
            for k in ("a", "b"):
                res["approach2_ci"][k].update(lo=None, hi=None)
            a2["notes"].append(
                "Approach 2 on 2 budgets: the line through their minima has no CI (a bootstrap "
                "of 2 points cannot show how far off it is); add a budget"
            )
        res["notes"].extend(a2["notes"])
    except UserError as e:
        if required and design.supports("approach2"):
            raise
        res["notes"].append(f"Approach 2 skipped: {e}")


def _one_minimum(res: dict, table: RunTable, design) -> None:
    """One budget: its IsoFLOP parabola's minimum (res["isoflop_minimum"]), no exponents."""
    try:
        m = approach2(table, minima_only=True)["minima"][0]
    except UserError as e:
        m, why = None, str(e)
    res["isoflop_minimum"] = m
    if m is not None:
        where = "inside" if m["inside_range"] else "outside (extrapolated)"
        why = (
            f"IsoFLOP minimum at the one budget C = {m['budget']:.3g}: N_opt = {m['N_opt']:.4g}, "
            f"D_opt = {m['D_opt']:.4g} tokens, loss {m['loss_min']:.4g} ({where} the sampled N)"
        )
    res["notes"].append(
        f"Approach 2 skipped: not applicable ({design.description}: the exponents a, b need "
        f">= 2 budgets); {why}"
    )


def _jsonable(x):
    return clean_json(x, keep_nonfinite=True)  # fits.json keeps NaN/Infinity


def fits_json(res: dict) -> dict:
    """Everything numeric, at full float64 precision (never rounded)."""
    t = res["table"]
    out = {
        "source": t.source,
        "n_runs": len(t),
        "loss_unit": t.loss_unit,
        "ci_level": res["level"],
        "conventions": {
            "N": "parameters as given",
            "D": "training tokens",
            "C": c_convention(t),
            "law": "L = E + A/N^alpha + B/D^beta",
            "a": "beta/(alpha+beta)",
            "b": "alpha/(alpha+beta)",
        },
        "joint": res["fit"].to_json(),
        "joint_ci": res["params_ci"],
        "bootstrap": {
            "n_resamples": res["boot"].n_resamples,
            "seed": res["boot"].seed,
            "resample_unit": "run",
            "n_unconverged": res["boot"].n_unconverged,
        },
        "compute_optimal": res["compute_optimal"],
        "design": res.get("design"),
        "joint_unidentified": res.get("unidentified", {}),
        "joint_lost_terms": res.get("lost_terms", {}),
        "no_allocation": res.get("no_allocation"),
        "approach1": {k: v for k, v in res["envelope"].items()},
        "notes": res["notes"],
        "timings": res["timings"],
    }
    if res.get("predictor") is not None:
        out["predictive"] = res["predictor"].to_json(res["level"])
    if "frontier_fit" in res:
        out["frontier"] = res["frontier_fit"].to_json()
        out["frontier_ci"] = res["frontier_ci"]
    for k in ("approach2", "approach2_ci", "isoflop_minimum", "backtest", "emergence", "finetune"):
        if k in res:
            out[k] = res[k]
    return _jsonable(out)


def _emergence(
    results_path: Path, out_dir: Path, res: dict, figures: dict, run_ids: set[str] | None
) -> None:
    """The emergence section and figures of a sweep whose runs were scored on few-shot tasks."""
    from analysis.emergence.report import analyze_results

    em = analyze_results(results_path, out_dir, run_ids=run_ids)
    if not em:
        return
    res["emergence"] = _jsonable({k: v for k, v in em.items() if k != "curves"})
    res["emergence_md"] = emergence_md(em.get("summary") or [])
    for c in em.get("curves") or []:
        if c.get("figure"):
            figures[f"emergence {c.get('task')} {c.get('metric')} k={c.get('shots')}"] = [
                str(c["figure"])
            ]


def _ablation(results_path: Path, out_dir: Path, res: dict, figures: dict) -> None:
    """The ablation section and figures when `scaling ablate` left DIR/ablation.jsonl."""
    table = results_path.parent / "ablation.jsonl"
    if not table.is_file():
        return
    from analysis import ablation_plots
    from analysis.ablation import analyze

    ab = analyze(table, out_dir)
    res["ablation_md"] = ab["md"]
    figures.update(ablation_plots.all_figures(ab, out_dir))


def _finetune(table: Path, out_dir: Path, res: dict, figures: dict) -> None:
    """The fine-tuning law section, when `scaling finetune` has written its table."""
    if not table.is_file():
        return
    from analysis import finetune_plots
    from analysis.laws import finetune

    try:
        ft = finetune.analyze(table, seed=0, level=res["level"])
    except UserError as e:
        res["notes"].append(f"fine-tuning law not fitted: {e}")
        return
    res["finetune"] = _jsonable(ft)
    res["finetune_md"] = finetune.report_md(ft)
    figures.update(finetune_plots.all_figures(ft, out_dir))


def write_report(
    res: dict, out_dir: Path, results_path: Path | None = None, run_ids: set[str] | None = None
) -> dict:
    """Figures, fits.json and report.md in ``out_dir``; returns {"report", "fits", "figures"}.
    `run_ids` (`analyze --where`) limits the emergence section to those runs, as the fits are."""
    from analysis.plots import all_figures

    out_dir = Path(out_dir)
    stage("figures")
    figures = all_figures(res, out_dir)
    hp = getattr(res["table"], "hparams", None)
    if hp:
        from analysis import hparams

        for axis in ("lr", "batch"):
            if paths := hparams.figure(hp, out_dir, axis):
                figures[f"loss_vs_{axis}"] = paths
    if results_path is not None:
        stage("emergence of the few-shot scores")
        _emergence(results_path, out_dir, res, figures, run_ids)
        stage("ablation")
        _ablation(Path(results_path), out_dir, res, figures)
        stage("fine-tuning law")
        _finetune(Path(results_path).parent / "finetune" / "results.jsonl", out_dir, res, figures)
    fits = fits_json(res)
    md = report_md(res, figures, out_dir)
    if hp:
        fits["hparams"] = _jsonable(hp)
        md += hparams.markdown(hp)
    atomic_write(out_dir / "fits.json", json.dumps(fits, indent=2))
    atomic_write(out_dir / "report.md", md)
    return {
        "report": str(out_dir / "report.md"),
        "fits": str(out_dir / "fits.json"),
        "figures": figures,
    }


__all__ = ["run_analysis", "write_report", "fits_json", "compute_optimal"]
