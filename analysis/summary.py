"""The short console summary of `scaling analyze` (and so of `make demo`).

It prints the handful of numbers a researcher looks at first; report.md has everything else.
"""

from __future__ import annotations

from collections import Counter

from analysis.laws.finetune import e_cell, exp_cell
from analysis.laws.fit import term_phrase
from analysis.laws.intervals import unsupported_reason
from scaling.fmt import with_ci


def summary_lines(res: dict) -> list[str]:
    """Fitted law with CIs, allocation, back-test, 100x prediction and emergence verdicts."""
    t, p, lvl = res["table"], res["params_ci"], int(round(res["level"] * 100))
    unit = t.loss_unit
    out = [
        f"Scaling law from {len(t)} runs ({lvl}% CIs over {res['boot'].n_resamples} "
        f"bootstrap resamples of whole runs); loss in {unit}:",
        "  L(N, D) = E + A / N^alpha + B / D^beta",
        "    " + "   ".join(_param(res, k) for k in ("E", "alpha", "beta")),
        "    " + "   ".join(_param(res, k) for k in ("A", "B")),
    ]
    co = res["compute_optimal"]
    if co:
        out.append(
            f"  compute-optimal allocation: N_opt ~ C^{with_ci(p['a'], '.3f')}, "
            f"D_opt ~ C^{with_ci(p['b'], '.3f')}"
        )
        out.append(
            f"  tokens per parameter at the largest budget (C = {co[0]['flops']:.3g}): "
            f"{with_ci(co[0]['tokens_per_param'], '.3g')}"
        )
    else:
        why = no_allocation(res)
        out.append(
            f"  allocation not identified ({why}): no compute-optimal point; "
            "predict a model on the design with --params N --tokens D"
        )
    if res.get("design"):
        out.insert(0, f"Design: {res['design']['description']}")
    if "approach2_ci" in res:
        a = res["approach2_ci"]["a"]
        a2 = with_ci(a, ".3f") if a["lo"] is not None else f"{a['estimate']:.3f} (no CI: 2 budgets)"
        out.append(f"  cross-check, IsoFLOP parabolas (Approach 2): a = {a2}{minima_caveat(res)}")
    if m := res.get("isoflop_minimum"):  # one budget: its minimum, no exponents
        out.append(
            f"  IsoFLOP minimum at the one budget (C = {m['budget']:.3g}): N_opt = "
            f"{m['N_opt']:.4g}, D_opt = {m['D_opt']:.4g}, loss {m['loss_min']:.4g}"
        )
    bt = res.get("backtest")
    if bt:
        m = bt["mean_abs_rel_error"]
        out.append(
            f"  back-test: fit on {bt['n_train']} runs, predict {bt['description']}:\n"
            f"    mean |relative error| {with_ci(m, '.2%')}"
        )
    big = co[-1] if co else None
    if big:
        out += _far_lines(big, lvl)
    if res.get("predictor") is not None:
        out.append("  " + res["predictor"].describe())
    em = res.get("emergence")
    if em:
        rows = em.get("summary") or []
        counts = Counter(r["verdict"] for r in rows)
        out.append(
            f"Emergence over {len(rows)} curves (task x metric x shots): "
            + ", ".join(f"{v} {k}" for k, v in counts.most_common())
        )
        for r in rows:
            if r["verdict"] in ("emergent", "emergent_metric_induced", "insufficient_resolution"):
                out.append(
                    f"  {r['task']} {r['metric']} {r['shots']}-shot: {r['verdict']} ({r['reason']})"
                )
    out += finetune_lines(res.get("finetune"))
    return out


def minima_caveat(res: dict) -> str:
    """'; minima outside the sampled N at K of M budgets (extrapolated)' when Approach 2's line
    runs through parabola minima past their budgets' runs (only a note said so, after the
    summary had printed the exponent as a plain cross-check)."""
    minima = (res.get("approach2") or {}).get("minima") or []
    k = sum(not m.get("inside_range", True) for m in minima)
    return (
        f"; minima outside the sampled N at {k} of {len(minima)} budgets (extrapolated)"
        if k
        else ""
    )


def finetune_lines(ft: dict | None) -> list[str]:
    """The fine-tuning law per (task, method), X = N; E reads "not identified" at its bound."""
    if not ft:
        return []
    out = [
        f"Fine-tuning law L(N, D_f) = E + A N^-alpha D_f^-beta from {ft['n_rows']} rows "
        f"({'row' if ft.get('resample_unit') != 'run' else 'run'}-level bootstrap):"
    ]
    for g in ft["groups"]:
        f = g["fits"].get("N")
        if f is None:
            continue
        bt = g.get("backtest")
        tail = f", back-test on the largest N {bt['mean_abs_rel_error']:.2%}" if bt else ""
        out.append(
            f"  {g['task']} {g['method']}: alpha = {exp_cell(f, 'alpha', '.3g')}, "
            f"beta = {exp_cell(f, 'beta', '.3g')}, E = {e_cell(f, '.3g')}{tail}"
        )
    return out


def unidentified(res: dict) -> dict:
    """{parameter: "design" | its lost term} (`analysis.report._unidentified`; a result
    without it: the design's list)."""
    if "unidentified" in res:
        return res["unidentified"]
    return dict.fromkeys((res.get("design") or {}).get("unidentified", ()), "design")


def no_allocation(res: dict) -> str:
    """Why no compute-optimal allocation is given (a ladder's reason by default)."""
    why = res.get("no_allocation") or (res.get("design") or {}).get("no_allocation")
    return why or "N and D move together"


def lost_reason(res: dict, k: str) -> tuple[str, str] | None:
    """Why parameter k has no value, as (short, long) words; None when it has one. ("design", _):
    the design cannot identify it; ("bound", _): k's own term sits at its bound 0 (it reads 0);
    else its term TERM is lost (`analysis.laws.fit.lost_terms`): ("A = 0", "A sits at its bound
    0"), ("A term flat", ...) or ("A term only at the smallest N", ...)."""
    why = unidentified(res).get(k)
    if why is None or why == "design":
        return None if why is None else ("design", "")
    how = res.get("lost_terms", {}).get(why, "bound")
    if how == "bound":
        return ("bound", "") if why == k else (f"{why} = 0", f"{why} sits at its bound 0")
    short = {
        "flat": "term flat",
        "spike": f"term only at the smallest {'N' if why == 'A' else 'D'}",
    }
    return f"{why} {short[how]}", term_phrase(why, how)


def _param(res: dict, k: str) -> str:
    """`k = estimate [lo, hi]`; a parameter without a value prints none: the design cannot
    identify it (its bootstrap spread is the optimiser's: a ladder's beta read 2.368 [2.368,
    2.368], a one-size sweep's E 1e-300), or its term is lost (`lost_reason`)."""
    why = lost_reason(res, k)
    if why is None:
        return f"{k} = {with_ci(res['params_ci'][k])}"
    if why[0] == "design":
        return f"{k} = not identified"
    return f"{k} = {'0 (at its bound)' if why[0] == 'bound' else f'not identified ({why[0]})'}"


def _far_lines(big: dict, lvl: int) -> list[str]:
    """The prediction at 100x the largest budget, with its interval's terms."""
    out = [
        f"  prediction at 100x the largest budget (C = {big['flops']:.3g}):\n"
        f"    loss {with_ci(big['loss'])}, N_opt {with_ci(big['N_opt'], '.3g')}, "
        f"D_opt {with_ci(big['D_opt'], '.3g')} tokens"
    ]
    t = big.get("interval_terms")
    if t:
        out.append(
            f"    loss interval is {lvl}% predictive, {t['distance_decades']:.2f} decades out: "
            f"half-width parameter {t['param']:.2%}, form {t['form']:.2%}, extrapolation "
            f"{t['extrapolation']:.2%}"
            + ("" if t["supported"] else f"; {unsupported_reason(t)} (prior only)")
        )
    return out
