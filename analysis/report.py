"""The analysis pipeline behind `scaling analyze`: fits, bootstrap, cross-checks, report.md."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from analysis.design import detect_design
from analysis.laws.bootstrap import bootstrap_fit, resample_weights, summarize
from analysis.laws.core import allocation_exponents, compute_optimal
from analysis.laws.fit import fit_joint, fit_power
from analysis.laws.frontier import approach2, envelope
from analysis.laws.predict import backtest, predict_flops, table_predictor
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
            f"{design.description}: N and D move together, so the joint law's separate N and D "
            "terms and the allocation exponents a, b are not identified; trust its predictions "
            "along the ladder only"
        )
    fit = fit_joint(table.N, table.D, table.loss, method=method)
    res["timings"]["fit_s"] = fit.diagnostics["seconds"]
    groups = np.asarray(table.run_id)  # resample whole runs (a run may have several rows)
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
    res["params_ci"] = summarize(p, bp, level)
    env = envelope(table)
    res["envelope"] = env
    lc = None
    if env["C"].size >= 3:
        try:
            lc = fit_power(env["C"], env["loss"], what="frontier L(C)")
        except UserError as e:  # the frontier is a cross-check: note it, keep the report
            res["notes"].append(f"frontier L(C) not fitted: {e}")
    else:
        res["notes"].append(f"frontier L(C) not fitted: {env['C'].size} envelope point(s) < 3")
    if lc is not None:
        res["frontier_fit"] = lc
        lb = bootstrap_fit(
            lc,
            [np.log(env["C"])],
            np.log(env["loss"]),
            np.arange(env["C"].size),
            n_resamples=min(n_resamples, 1000),
            seed=seed,
        )
        res["frontier_ci"] = summarize(lc.params, lb.params, level)
    W = resample_weights(groups, min(n_resamples, 1000), np.random.default_rng(seed + 1))
    try:
        if not design.supports("approach2"):
            raise UserError(f"not applicable to a {design.description} (no IsoFLOP budgets)")
        a2 = approach2(table, W)
        res["approach2"] = a2
        res["approach2_ci"] = summarize(
            {"a": a2["a"], "b": a2["b"]}, {"a": a2.pop("a_boot"), "b": a2.pop("b_boot")}, level
        )
        res["notes"].extend(a2["notes"])
    except UserError as e:
        if need_approach2 and design.supports("approach2"):
            raise
        res["notes"].append(f"Approach 2 skipped: {e}")
    t1 = time.perf_counter()
    pred = (
        table_predictor(table, n_resamples=min(n_resamples, 100), seed=seed) if intervals else None
    )
    res["predictor"] = pred
    res["timings"]["predictor_s"] = time.perf_counter() - t1
    Cmax = float(table.C.max())
    with np.errstate(over="ignore", invalid="ignore"):  # a ladder's allocation may not exist
        res["compute_optimal"] = [
            predict_flops(fit, boot, c, level, pred) for c in (Cmax, 10 * Cmax, 100 * Cmax)
        ]
    if holdout:
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
            "C": "6 N D FLOPs",
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
        "approach1": {k: v for k, v in res["envelope"].items()},
        "notes": res["notes"],
        "timings": res["timings"],
    }
    if res.get("predictor") is not None:
        out["predictive"] = res["predictor"].to_json(res["level"])
    if "frontier_fit" in res:
        out["frontier"] = res["frontier_fit"].to_json()
        out["frontier_ci"] = res["frontier_ci"]
    for k in ("approach2", "approach2_ci", "backtest", "emergence", "finetune"):
        if k in res:
            out[k] = res[k]
    return _jsonable(out)


def _g(x: float) -> str:
    return f"{x:.4g}"


def _ci_row(name: str, d: dict) -> str:
    return f"| {name} | {_g(d['estimate'])} | {_g(d['lo'])} – {_g(d['hi'])} |"


def report_md(res: dict, figures: dict, out_dir: Path) -> str:
    """Markdown report: parameters with CIs, allocation, cross-checks, back-test, convergence."""
    t, fit, lvl = res["table"], res["fit"], int(round(res["level"] * 100))
    d = fit.diagnostics
    L = [
        f"# Scaling-law analysis of `{t.source}`",
        "",
        f"{len(t)} runs; loss in {t.loss_unit}; C = 6ND FLOPs. CIs are {lvl}% percentile "
        f"intervals over {res['boot'].n_resamples} bootstrap resamples of whole runs.",
        "",
        f"Design: {res['design']['description']}; analyses run: "
        f"{', '.join(res['design']['approaches'])}.",
        "",
        "## Joint law L(N, D) = E + A/N^alpha + B/D^beta",
        "",
        f"| parameter | estimate | {lvl}% CI |",
        "|---|---|---|",
    ]
    L += [_ci_row(k, res["params_ci"][k]) for k in ("E", "A", "B", "alpha", "beta")]
    L += [
        "",
        "Allocation: N_opt ~ C^a, D_opt ~ C^b.",
        "",
        f"| exponent | estimate | {lvl}% CI |",
        "|---|---|---|",
        _ci_row("a = beta/(alpha+beta)", res["params_ci"]["a"]),
        _ci_row("b = alpha/(alpha+beta)", res["params_ci"]["b"]),
    ]
    if "approach2_ci" in res:
        L.append(_ci_row("a, Approach 2 (IsoFLOP parabolas)", res["approach2_ci"]["a"]))
    env = res["envelope"]
    if "a" in env:
        L.append(f"| a, Approach 1 (envelope, no CI) | {_g(env['a'])} | |")
    L += [
        "",
        "## Compute-optimal allocation (from the joint law)",
        "",
        f"| C (FLOPs) | loss [{lvl}% predictive] | N_opt [{lvl}% CI] | D_opt [CI] | "
        "tokens/param [CI] |",
        "|---|---|---|---|---|",
    ]
    for r in res["compute_optimal"]:
        cells = [
            f"{_g(r[k]['estimate'])} [{_g(r[k]['lo'])}, {_g(r[k]['hi'])}]"
            for k in ("loss", "N_opt", "D_opt", "tokens_per_param")
        ]
        L.append(f"| {r['flops']:.3g} | " + " | ".join(cells) + " |")
    if res.get("predictor") is not None:
        from analysis.report_intervals import intervals_md

        L += intervals_md(res)
    if "frontier_ci" in res:
        L += [
            "",
            "## Frontier L(C) = E + A C^-alpha (fitted to the Approach-1 envelope)",
            "",
            f"| parameter | estimate | {lvl}% CI |",
            "|---|---|---|",
        ]
        L += [_ci_row(k, v) for k, v in res["frontier_ci"].items()]
        if res["frontier_ci"]["E"]["hi"] < 1e-6 * float(np.min(res["envelope"]["loss"])):
            L += [
                "",
                "E sits at its bound 0 in every resample: over this compute range the frontier "
                "is indistinguishable from a pure power law, so its irreducible loss is not "
                "identified (read the joint law's E instead).",
            ]
        L += [
            "",
            "(CI from resampling envelope points.) L(N) = E + A/N^alpha and "
            "L(D) = E + B/D^beta are the joint law's infinite-data and infinite-model limits.",
        ]
    if "backtest" in res:
        bt = res["backtest"]
        L += [
            "",
            f"## Back-test: fit on {bt['n_train']} runs, predict {bt['description']}",
            "",
            f"| run | N | D | actual | predicted [{lvl}% CI] | relative error [CI] |",
            "|---|---|---|---|---|---|",
        ]
        for r in bt["runs"]:
            p, e = r["predicted"], r["rel_error"]
            L.append(
                f"| {r['run_id']} | {_g(r['N'])} | {_g(r['D'])} | {_g(r['actual'])} | "
                f"{_g(p['estimate'])} [{_g(p['lo'])}, {_g(p['hi'])}] | "
                f"{e['estimate']:+.2%} [{e['lo']:+.2%}, {e['hi']:+.2%}] |"
            )
        m, a = bt["mean_abs_rel_error"], bt["mae"]
        L += [
            "",
            f"Mean absolute relative error {m['estimate']:.2%} [{m['lo']:.2%}, {m['hi']:.2%}]; "
            f"MAE {_g(a['estimate'])} [{_g(a['lo'])}, {_g(a['hi'])}] {t.loss_unit}.",
        ]
    sp = d.get("spread_among_agreeing", {})
    L += [
        "",
        "## Convergence",
        "",
        f"- method: {fit.method}; {d['n_starts']} starts, best {d['n_refined']} refined "
        f"({d['n_refined_converged']} converged), polished with scipy L-BFGS-B: {d['polished']}",
        f"- summed Huber objective (delta {fit.delta:g}): {fit.objective:.10g}; gradient inf-norm "
        f"at the optimum: {fit.grad_norm:.2e}",
        f"- {d['n_agree']} refined starts reach the best objective within a relative "
        f"{d['agree_rtol']:g}; largest relative spread among them: "
        + ", ".join(f"{k} {v:.1e}" for k, v in sp.items()),
        f"- bootstrap resamples not converged: {res['boot'].n_unconverged} of "
        f"{res['boot'].n_resamples}",
        f"- time: fit {res['timings']['fit_s']:.2f} s, bootstrap "
        f"{res['timings']['bootstrap_s']:.2f} s",
    ]
    if res.get("emergence_md"):
        L += ["", "## Emergence", "", res["emergence_md"]]
    if res.get("ablation_md"):
        L += ["", "## Which components in-context learning needs (ablation)", ""]
        L += [res["ablation_md"]]
    if res.get("finetune_md"):
        L += ["", "## Fine-tuning across scale", "", res["finetune_md"]]
    if res["notes"]:
        L += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    L += ["", "## Figures", ""]
    for name, paths in figures.items():
        png = Path(paths[0])
        rel = os.path.relpath(png, out_dir)
        L.append(f"![{name}]({rel})")
        L.append("")
    return "\n".join(L) + "\n"


def _emergence(results_path: Path, out_dir: Path, res: dict, figures: dict) -> None:
    """Call analysis.emergence.report.analyze_results when that module exists."""
    try:
        from analysis.emergence.report import analyze_results
    except ImportError:
        return
    em = analyze_results(results_path, out_dir)
    if not em:
        return
    res["emergence"] = _jsonable({k: v for k, v in em.items() if k != "curves"})
    rows = em.get("summary") or []
    md = [
        "Full output: `emergence.json`.",
        "",
        "| task | metric | shots | family | verdict | reason |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            "| "
            + " | ".join(
                str(r.get(k, ""))
                for k in ("task", "metric", "shots", "family", "verdict", "reason")
            )
            + " |"
        )
    res["emergence_md"] = "\n".join(md)
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
    from analysis.ablation import analyze

    ab = analyze(table, out_dir)
    res["ablation_md"] = ab["md"]
    figures.update(ab["figures"])


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


def write_report(res: dict, out_dir: Path, results_path: Path | None = None) -> dict:
    """Figures, fits.json and report.md in ``out_dir``; returns {"report", "fits", "figures"}."""
    from analysis.plots import all_figures

    out_dir = Path(out_dir)
    figures = all_figures(res, out_dir)
    hp = getattr(res["table"], "hparams", None)
    if hp:
        from analysis import hparams

        for axis in ("lr", "batch"):
            if paths := hparams.figure(hp, out_dir, axis):
                figures[f"loss_vs_{axis}"] = paths
    if results_path is not None:
        _emergence(results_path, out_dir, res, figures)
        _ablation(Path(results_path), out_dir, res, figures)
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
