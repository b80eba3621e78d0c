"""The report's section on predictive intervals: law forms, rolling back-tests, calibration."""

from __future__ import annotations

from analysis.laws.intervals import unsupported_reason


def _g(x: float) -> str:
    return f"{x:.4g}"


def intervals_md(res: dict) -> list[str]:
    """Markdown lines: chosen predictor, forms table, rolling back-test table, interval terms."""
    pred, level = res["predictor"], res["level"]
    lvl = int(round(100 * level))
    js = pred.to_json(level)
    rb, cal, cc = js["rolling"], js["calibration"], js["cross_coverage"]
    L = [
        "",
        "## Predictive intervals: law forms, rolling back-tests, calibration",
        "",
        f"**{js['choice'][0].upper() + js['choice'][1:]}.**",
        "",
        f"The loss intervals in this report and in `scaling predict` are {lvl}% predictive "
        "intervals: parameter noise (run-level bootstrap of each form) + form uncertainty "
        "(spread of the good forms) + extrapolation error calibrated on the rolling back-tests "
        "below (split-conformal), so they widen with the extrapolation distance. A bootstrap "
        "within one law form measures parameter noise only (on published sweeps it covered "
        "about a quarter of held-out runs at a nominal 90%; `make validate`).",
        "",
        "| form | parameters | AIC | BIC | out-of-sample mean abs log error | stack weight |",
        "|---|---|---|---|---|---|",
    ]
    for n, f in js["forms"].items():
        ps = ", ".join(f"{k} {_g(v)}" for k, v in f["params"].items())
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
            f"| frontier L_opt(C) (Approach 2, on {fr['n_budgets']} per-budget minima; "
            f"cross-check) | {ps} | {fr['aic']:.1f} | {fr['bic']:.1f} | "
            f"{'' if sc is None else f'{sc:.2%}'} | – |"
        )
    if "stack" in rb["scores"]:
        L.append(
            f"| stack (weights chosen on these back-tests) | | | | {rb['scores']['stack']:.2%} | |"
        )
    forms = rb["forms"]
    L += [
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
    prior = cal.get("prior_source") or "none"
    L += [
        "",
        f"Calibration: extrapolation scale s(x) = {cal['s0']:.4f} + {cal['s1']:.4f} x with "
        f"x = distance / sqrt({cal['span']:.2f} decades fitted), conformal factor q = "
        f"{cal['q']:.3g}, "
        f"from {cal['n_pairs']} back-test predictions at {cal['n_origins']} origins; weight "
        f"{cal['weight_user']:.0%} on these, the rest on the published-sweep prior ({prior}). "
        f"Leave-one-origin-out coverage of the back-tests: {cc['inside']}/{cc['n']} inside "
        f"their {lvl}% intervals (`analysis.checks` fails when this is far below {lvl}%).",
        "",
        "| C (FLOPs) | distance (decades) | parameter | form | extrapolation | total half-width "
        "| supported by the back-tests |",
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
