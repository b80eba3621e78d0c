"""The text of report.md: one function per section, joined by `report_md`.

Every number comes from `analysis.report.run_analysis`'s result (and fits.json holds the same
numbers at full precision); nothing here computes.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from analysis.checks import backtest_prior_note, loo_coverage_text
from analysis.cli_source import c_convention
from analysis.design import FORM_UNIDENTIFIED
from analysis.laws.intervals import SUPPORT_MARGIN, unsupported_reason
from analysis.summary import lost_reason, minima_caveat, no_allocation
from scaling.fmt import with_ci


def _g(x: float) -> str:
    return f"{x:.4g}"


def _ci_row(name: str, d: dict) -> str:
    ci = "none (see notes)" if d["lo"] is None else f"{_g(d['lo'])} – {_g(d['hi'])}"
    return f"| {name} | {_g(d['estimate'])} | {ci} |"


def _ran(res: dict, approach: str) -> bool:
    """Whether an analysis the design supports ran (Approach 2 needs 2 budgets, the frontier 3
    envelope points; the others always run)."""
    key = {"approach2": "approach2", "frontier": "frontier_ci"}.get(approach)
    return key is None or key in res


def _lvl(res: dict) -> int:
    return int(round(res["level"] * 100))


def report_md(res: dict, figures: dict, out_dir: Path) -> str:
    """Markdown report: parameters with CIs, allocation, cross-checks, back-test, convergence."""
    L = _joint(res) + _allocation(res)
    if res.get("predictor") is not None:
        L += intervals_md(res)
    if "frontier_ci" in res:
        L += _frontier(res)
    if "backtest" in res:
        L += _backtest(res)
    L += _convergence(res)
    for key, title in (
        ("emergence_md", "Emergence"),
        ("ablation_md", "Which components in-context learning needs (ablation)"),
        ("finetune_md", "Fine-tuning across scale"),
    ):
        if res.get(key):
            L += ["", f"## {title}", "", res[key]]
    if res["notes"]:
        L += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    L += ["", "## Figures", ""]
    for name, paths in figures.items():
        L += [f"![{name}]({os.path.relpath(Path(paths[0]), out_dir)})", ""]
    return "\n".join(L) + "\n"


def _joint(res: dict) -> list[str]:
    t, lvl, n = res["table"], _lvl(res), res["boot"].n_resamples
    counts = [f"{n} for the joint law"]  # only the analyses that ran (no Approach 2 on a ladder)
    counts += [f"{min(n, 1000)} for Approach 2"] if "approach2" in res else []
    if res.get("predictor") is not None:
        counts.append(
            f"{min(n, 100)} per law form for the parameter term of the predictive intervals"
        )
    L = [
        f"# Scaling-law analysis of `{t.source}`",
        "",
        f"{len(t)} runs; loss in {t.loss_unit}; {c_convention(t)}. CIs are {lvl}% percentile "
        f"intervals of bootstrap resamples of whole runs: {', '.join(counts)}"
        + ("; the frontier's CI resamples its envelope's runs." if "frontier_ci" in res else "."),
        "",
        f"Design: {res['design']['description']}; analyses run: "
        f"{', '.join(a for a in res['design']['approaches'] if _ran(res, a))}.",
        "",
        "## Joint law L(N, D) = E + A/N^alpha + B/D^beta",
        "",
        f"| parameter | estimate | {lvl}% CI |",
        "|---|---|---|",
    ]
    for k in ("E", "A", "B", "alpha", "beta"):  # no value, no CI: its spread is the optimiser's
        why = lost_reason(res, k)
        if why is None:
            L.append(_ci_row(k, res["params_ci"][k]))
        elif why[0] == "design":
            L.append(f"| {k} | – | not identified by this design |")
        elif why[0] == "bound":
            L.append(f"| {k} | 0 (at its bound) | not identified: the data do not need the term |")
        else:
            L.append(f"| {k} | – | not identified: {why[1]} |")
    return L


def _allocation(res: dict) -> list[str]:
    lvl = _lvl(res)
    if not res["compute_optimal"]:
        by = "design" if (res.get("design") or {}).get("no_allocation") else "fit"
        return [
            "",
            f"Allocation: not identified by this {by} ({no_allocation(res)}), so no "
            "compute-optimal N, D or prediction at a budget is given; predict a model on the "
            "design with `scaling predict ... --params N --tokens D`.",
        ]
    L = [
        "",
        "Allocation: N_opt ~ C^a, D_opt ~ C^b.",
        "",
        f"| exponent | estimate | {lvl}% CI |",
        "|---|---|---|",
        _ci_row("a = beta/(alpha+beta)", res["params_ci"]["a"]),
        _ci_row("b = alpha/(alpha+beta)", res["params_ci"]["b"]),
    ]
    if "approach2_ci" in res:
        a2 = f"a, Approach 2 (IsoFLOP parabolas{minima_caveat(res)})"
        L.append(_ci_row(a2, res["approach2_ci"]["a"]))
    env = res["envelope"]
    if "a" in env:
        L.append(f"| a, Approach 1 (envelope, no CI) | {_g(env['a'])} | |")
    L += [
        "",
        "## Compute-optimal allocation (from the joint law)",
        "",
        "N_opt, D_opt and tokens/param minimise the joint Chinchilla law (run-level bootstrap "
        "CIs); the loss there is the chosen predictor's (below), with its predictive interval.",
        "",
        f"| C (FLOPs) | loss [{lvl}% predictive] | N_opt [{lvl}% CI] | D_opt [CI] | "
        "tokens/param [CI] |",
        "|---|---|---|---|---|",
    ]
    for r in res["compute_optimal"]:
        cells = [with_ci(r[k]) for k in ("loss", "N_opt", "D_opt", "tokens_per_param")]
        L.append(f"| {r['flops']:.3g} | " + " | ".join(cells) + " |")
    return L


def _frontier(res: dict) -> list[str]:
    L = [
        "",
        "## Frontier L(C) = E + A C^-alpha (fitted to the Approach-1 envelope)",
        "",
        f"| parameter | estimate | {_lvl(res)}% CI |",
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
    return L + ["", "(CIs from resampling the runs whose points form the envelope.)"]


def _backtest(res: dict) -> list[str]:
    bt, t = res["backtest"], res["table"]
    L = [
        "",
        f"## Back-test: fit on {bt['n_train']} runs, predict {bt['description']}",
        "",
        f"| run | N | D | actual | predicted [{_lvl(res)}% predictive] "
        "| relative error [same interval] |",
        "|---|---|---|---|---|---|",
    ]
    for r in bt["runs"]:
        L.append(
            f"| {r['run_id']} | {_g(r['N'])} | {_g(r['D'])} | {_g(r['actual'])} | "
            f"{with_ci(r['predicted'])} | {with_ci(r['rel_error'], '+.2%')} |"
        )
    m, a, cv = bt["mean_abs_rel_error"], bt["mae"], bt["coverage"]
    return L + [
        "",
        f"Predictor: {bt['predictor']['choice']}. {cv['inside']}/{cv['n']} inside their "
        f"{_lvl(res)}% predictive intervals{backtest_prior_note(bt)}. Mean absolute relative "
        f"error {with_ci(m, '.2%')}; MAE {with_ci(a)} {t.loss_unit} (bootstrap CIs).",
    ]


def _convergence(res: dict) -> list[str]:
    fit = res["fit"]
    d = fit.diagnostics
    sp = d.get("spread_among_agreeing", {})
    return [
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


# the emergence table's order: verdicts to look at first
_VERDICT_ORDER = ("emergent", "emergent_metric_induced", "non_monotone", "insufficient_resolution")


def emergence_md(summary: list[dict]) -> str:
    """The emergence section: the verdict counts, a row per curve that was tested and leaves
    chance (flagged verdicts first; curves that differ only in shots share a row), the curves
    flat at chance and the untested continuous ones grouped by task and metric in one line
    each, and the warnings with the curves they concern (emergence.json has every curve)."""
    counts = Counter(str(r.get("verdict")) for r in summary)
    md = [
        f"{len(summary)} curves (task x metric x shots): "
        + ", ".join(f"{n} {v}" for v, n in counts.most_common())
        + ". Full output: `emergence.json`.",
    ]
    rank = {v: i for i, v in enumerate(_VERDICT_ORDER)}
    shown = sorted(
        (r for r in summary if r.get("verdict") not in _GROUPED),
        key=lambda r: (rank.get(r.get("verdict"), len(rank)), str(r.get("task"))),
    )  # stable: within a verdict and task, the flagger's order (metric, shots)
    rows: dict[tuple, list[str]] = {}  # curves that differ only in shots share a row
    for r in shown:
        key = tuple(str(r.get(k, "")) for k in ("task", "metric", "family", "verdict", "reason"))
        rows.setdefault(key, []).append(str(r.get("shots", "")))
    if rows:
        md += [
            "",
            "| task | metric | shots | family | verdict | reason |",
            "|---|---|---|---|---|---|",
        ]
        for (task, metric, fam, verdict, why), shots in rows.items():
            md.append(f"| {task} | {metric} | {', '.join(shots)} | {fam} | {verdict} | {why} |")
    for verdict, intro in _GROUPED.items():
        line = _grouped(summary, verdict, intro)
        md += ["", line] if line else []
    return "\n".join(md + _warnings(summary))


# verdicts listed in one line, grouped by task and metric, with what they mean
_GROUPED = {
    "flat_at_chance": "Flat at chance ({n} curves: at no scale does the 95% CI's lower bound "
    "clear the curve's chance level by the margin; each level is in emergence.json)",
    "not_tested": "Not tested for a jump ({n} curves: a continuous metric has no chance level, "
    "so no onset; it is tested only as the companion of the mirage check)",
}


def _grouped(summary: list[dict], verdict: str, intro: str) -> str:
    groups: dict[tuple, list[str]] = {}
    for r in summary:
        if r.get("verdict") == verdict:
            key = (r.get("task"), r.get("metric"), r.get("family"))
            groups.setdefault(key, []).append(str(r.get("shots")))
    if not groups:
        return ""
    one_family = len({k[2] for k in groups}) == 1
    parts = [
        f"{t} {m} (shots {', '.join(k)}{'' if one_family else f'; {fam}'})"
        for (t, m, fam), k in groups.items()
    ]
    return intro.format(n=sum(map(len, groups.values()))) + ": " + "; ".join(parts) + "."


def _warnings(summary: list[dict]) -> list[str]:
    """One line per warning: on every curve, or on which (task metric shots)."""
    by: dict[str, list[str]] = {}
    for r in summary:
        for w in r.get("warnings") or ():
            by.setdefault(str(w), []).append(f"{r.get('task')} {r.get('metric')} {r.get('shots')}")
    lines = [
        f"- `{w}`: " + (f"all {len(who)} curves" if len(who) == len(summary) else ", ".join(who))
        for w, who in by.items()
    ]
    return ["", "Warnings:", *lines] if lines else []


def intervals_md(res: dict) -> list[str]:
    """The predictive-interval section: chosen predictor, forms, rolling back-tests, terms."""
    js = res["predictor"].to_json(res["level"])
    forms = _forms(js, _lvl(res), (res.get("design") or {}).get("kind"))
    return forms + _rolling(js["rolling"]) + _interval_terms(res, js)


def _form_params(name: str, params: dict, kind: str | None) -> str:
    """A form's parameters; those the design cannot identify say so (`FORM_UNIDENTIFIED`)."""
    na = FORM_UNIDENTIFIED.get(kind or "", {}).get(name, ())
    return ", ".join(
        f"{k} not identified" if k in na else f"{k} {_g(v)}" for k, v in params.items()
    )


def _forms(js: dict, lvl: int, kind: str | None) -> list[str]:
    rb = js["rolling"]
    L = [
        "",
        "## Predictive intervals: law forms, rolling back-tests, calibration",
        "",
        f"**{js['choice'][0].upper() + js['choice'][1:]}.**",
        "",
        f"The scaling-law loss intervals in this report and in `scaling predict` are {lvl}% "
        "predictive intervals: form uncertainty (spread of the good forms) and extrapolation "
        "error calibrated on the rolling back-tests below (split-conformal), added in "
        "quadrature, with parameter noise (run-level bootstrap of each form) as a floor: total "
        "= max(parameter, sqrt(form^2 + extrapolation^2)). They widen with the extrapolation "
        "distance. (The fine-tuning law's CIs are a bootstrap of its pre-trained runs, or of its "
        "rows where they name no run: parameter noise only.) A bootstrap within one law form "
        "measures parameter noise only (on published sweeps it covered about a quarter of "
        "held-out runs at a nominal 90%; `make validate`).",
        "",
        "| form | parameters | AIC | BIC | out-of-sample mean abs log error (longer "
        "extrapolations weigh more) | stack weight |",
        "|---|---|---|---|---|---|",
    ]
    for n, f in js["forms"].items():
        ps = _form_params(n, f["params"], kind)
        sc = rb["scores"].get(n)
        L.append(
            f"| {n} | {ps} | {f['aic']:.1f} | {f['bic']:.1f} | "
            f"{'' if sc is None else f'{sc:.2%}'} | {js['weights'].get(n, 0):.2f} |"
        )
    fr = js.get("frontier")
    if fr:
        ps = ", ".join(f"{k} {_g(v)}" for k, v in fr["params"].items())
        sc = fr["out_of_sample_error"]
        L.append(
            f"| frontier L_opt(C) (on the lowest loss at each of {fr['n_budgets']} compute levels; "
            f"cross-check) | {ps} | {fr['aic']:.1f} | {fr['bic']:.1f} | "
            f"{'' if sc is None else f'{sc:.2%}'} | – |"
        )
    if "stack" in rb["scores"]:
        L.append(
            f"| stack (weights chosen on these back-tests) | | | | {rb['scores']['stack']:.2%} | |"
        )
    return L


def _rolling(rb: dict) -> list[str]:
    forms = rb["forms"]
    L = [
        "",
        "### Rolling-origin back-tests (fit on budgets <= C_k, predict every larger run)",
        "",
        "| fitted up to C | runs fitted | runs predicted | max distance (decades) | "
        + " | ".join(forms)
        + " | chosen |",
        "|---" * (5 + len(forms)) + "|",
    ]
    for o in rb["origins"]:
        e = o["mean_abs_log_error"]
        L.append(
            f"| {o['origin_C']:.3g} | {o['n_train']} | {o['n_test']} | {o['max_distance']:.2f} | "
            + " | ".join(f"{e[n]:.2%}" for n in forms)
            + f" | {e['chosen']:.2%} |"
        )
    if not rb["origins"]:
        L.append("| (too few compute levels for a rolling back-test) |" + " |" * (4 + len(forms)))
    return L


def _interval_terms(res: dict, js: dict) -> list[str]:
    cal, cc, lvl = js["calibration"], js["cross_coverage"], _lvl(res)
    prior = cal.get("prior_source") or "none"
    L = [
        "",
        f"Calibration: extrapolation scale s(x) = {cal['s0']:.4f} + {cal['s1']:.4f} x with "
        f"x = distance / sqrt({cal['span']:.2f} decades fitted), conformal factor q = "
        f"{cal['q']:.3g}, "
        f"from {cal['n_pairs']} back-test predictions at {cal['n_origins']} origins; weight "
        f"{cal['weight_user']:.0%} on these, the rest on the published-sweep prior ({prior}). "
        + loo_coverage_text(cc, lvl),
    ]
    if not res["compute_optimal"]:  # a ladder: no prediction at a budget to break down
        return L
    L += [
        "",
        "| C (FLOPs) | distance (decades) | parameter | form | extrapolation | total half-width "
        f"| supported (within {SUPPORT_MARGIN:g} decades of the furthest back-test, "
        f"{cal['d_max']:.2f}) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["compute_optimal"]:
        t = r["interval_terms"]
        L.append(
            f"| {r['flops']:.3g} | {t['distance_decades']:.2f} | {t['param']:.2%} | "
            f"{t['form']:.2%} | {t['extrapolation']:.2%} | {t['total']:.2%} | "
            + ("yes" if t["supported"] else f"**no: {unsupported_reason(t)}**")
            + " |"
        )
    return L
