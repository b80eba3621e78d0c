"""The fine-tuning law of Zhang et al. (ICLR 2024), L(X, D_f) = E + A * X^-alpha * D_f^-beta,
fitted per (task, method) to the table `scaling finetune` writes (DIR/finetune/results.jsonl).

X is the model size N (total parameters) or, for comparison, the pre-training tokens; D_f the
number of fine-tuning examples; L the fine-tuned test loss (nats per target token). The fit is
the pre-training laws' machinery: summed Huber (delta 1e-3) on log-residuals, a multi-start grid
run through the batched L-BFGS and polished by scipy (analysis.laws.fit.multistart), then a
bootstrap over pre-trained runs (a model's rows, which share its luck, are drawn together;
rows without a run_id: each row) refitted in one batch.
Predictions at a larger N or D_f carry percentile CIs; the back-test refits without the largest
model and predicts its rows. Each exponent is checked (`exponent_check`): with fewer than 4
levels of its variable, a CI spanning 10x, or refits leaving out one level that differ 3x, it is
reported as not determined by the data (a model size's luck rests on few models, however many
rows each has). numpy/scipy only.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np

from analysis.laws.bootstrap import resample_weights, summarize, two_stage_weights
from analysis.laws.core import HUBER_DELTA, MultLogHuberObjective, mult_from_vec, mult_loss
from analysis.laws.fit import Fit, check_finite, check_points, multistart
from analysis.laws.lbfgs import lbfgs_batched
from scaling.errors import UserError
from scaling.fmt import with_ci
from scaling.results import read_records

E_AT_BOUND = 1e-6
"""E below this fraction of the smallest loss sits at its bound 0 (E = exp(e), e drifting to
-inf): the data cannot tell the law from a pure power law, so E is not identified; its CI is
then a degenerate sliver around ~1e-13 and is not shown (as the frontier's E, `markdown`)."""

MIN_LEVELS = 4
"""An exponent needs values at >= this many levels of its variable (model sizes for alpha, D_f
values for beta) to be checked by the data: along X the law has 3 parameters (E, A X^-alpha), so
3 sizes fit it with nothing left over to show a wrong alpha (the demo sweep's 3 sizes gave
alpha = 0.028 with one training seed and 0.168 with another)."""
SPAN_NOT_DETERMINED = 10.0
"""A CI whose upper end is >= this multiple of its lower end (or a lower end <= 0) does not
determine the exponent: it spans an order of magnitude."""
LOO_NOT_DETERMINED = 3.0
"""Refits leaving out one level each (one model size, or one D_f) whose exponents differ by this
factor or more: the exponent rests on single levels, whose shared noise (one pre-trained model's
luck) a bootstrap over few models measures poorly."""

X_KINDS = {"N": "n_params", "D_pre": "pretrain_tokens"}
"""X -> the row field holding it: the base run's N_total and D (`scaling.results`) under the names
the rows have always had; the rows are copied into fits.json verbatim, so those keys stay."""


def mult_grid() -> np.ndarray:
    """Starts [e, a, alpha, beta]: e in -1..1, a in 0..25, alpha and beta in 0..2."""
    rows = itertools.product(
        np.arange(-1.0, 1.5, 0.5),
        np.arange(0.0, 27.5, 2.5),
        np.arange(0.0, 2.25, 0.25),
        np.arange(0.0, 2.25, 0.25),
    )
    return np.array(list(rows), dtype=np.float64)


def fit_mult(X, D_f, L, *, delta: float = HUBER_DELTA) -> Fit:
    """Fit L = E + A X^-alpha D_f^-beta (summed log-Huber, multi-start, polished)."""
    X, D_f, L = (np.asarray(v, dtype=np.float64) for v in (X, D_f, L))
    what = "fine-tuning law L(X, D_f)"
    check_points(L.size, 4, what)
    obj = MultLogHuberObjective([np.log(X), np.log(D_f)], np.log(L), delta=delta)
    best, fbest, g, diag = multistart(obj, mult_grid(), keep=32, kind="mult")
    fit = Fit("mult", best, fbest, float(np.abs(g).max()), int(L.size), "grid", delta, diag)
    return check_finite(fit, what)


def bootstrap_mult(
    fit: Fit, X, D_f, L, *, groups=None, n_resamples: int = 1000, seed: int = 0
) -> dict:
    """Parameter arrays (length R) refitted on bootstrap resamples of ``groups`` (each row's
    pre-trained run: the rows of one model share its luck, so they are drawn together; a row
    bootstrap read them as independent and its CIs were too narrow). None: each row alone."""
    X, D_f, L = (np.asarray(v, dtype=np.float64) for v in (X, D_f, L))
    rng = np.random.default_rng(seed)
    if groups is None:
        W = resample_weights(np.arange(L.size), n_resamples, rng)
    else:
        W = two_stage_weights(np.asarray(groups), n_resamples, rng)
    obj = MultLogHuberObjective([np.log(X), np.log(D_f)], np.log(L), weights=W, delta=fit.delta)
    res = lbfgs_batched(obj, np.repeat(fit.vec[None], n_resamples, 0), ftol=1e-12, gtol=1e-8)
    out = mult_from_vec(res.x)
    out["n_unconverged"] = int((~res.converged).sum())
    return out


def leave_one_level_out(fit: Fit, X, D_f, L, which: str) -> list[float]:
    """The exponent ``which`` ("alpha": levels of X, "beta": levels of D_f) refitted without each
    level in turn (warm-started at ``fit``, as the bootstrap is); [] with < 3 levels."""
    X, D_f, L = (np.asarray(v, dtype=np.float64) for v in (X, D_f, L))
    _, lab = np.unique(X if which == "alpha" else D_f, return_inverse=True)
    k = int(lab.max()) + 1
    if k < 3:  # leaving one out leaves one level: the exponent is not identified at all
        return []
    W = (lab[None, :] != np.arange(k)[:, None]).astype(np.float64)
    obj = MultLogHuberObjective([np.log(X), np.log(D_f)], np.log(L), weights=W, delta=fit.delta)
    res = lbfgs_batched(obj, np.repeat(fit.vec[None], k, 0), ftol=1e-12, gtol=1e-8)
    return [float(v) for v in mult_from_vec(res.x)[which]]


def exponent_check(fit: Fit, ci: dict, data: tuple, which: str, x_kind: str) -> dict:
    """Whether the data (X, D_f, L) determine exponent ``which`` (its CI ``ci``), and if not why
    (`MIN_LEVELS`, `SPAN_NOT_DETERMINED`, `LOO_NOT_DETERMINED`)."""
    n_levels = int(np.unique(data[0] if which == "alpha" else data[1]).size)
    loo = leave_one_level_out(fit, *data, which)
    var = {"alpha": "model sizes" if x_kind == "N" else f"values of {x_kind}"}.get(
        which, "values of D_f"
    )
    why = []
    if n_levels < MIN_LEVELS:
        why.append(f"only {n_levels} {var} for a law with 3 parameters along them")
    lo, hi = ci["lo"], ci["hi"]
    if not lo > 0 or hi >= SPAN_NOT_DETERMINED * lo:
        why.append(f"its {round(100 * ci['level'])}% CI [{lo:.3g}, {hi:.3g}] spans 10x or more")
    if loo and (min(loo) <= 0 or max(loo) >= LOO_NOT_DETERMINED * min(loo)):
        why.append(f"leaving out one of the {var} moves it from {min(loo):.3g} to {max(loo):.3g}")
    return {
        "n_levels": n_levels,
        "leave_one_out": loo,
        "determined": not why,
        "why": "; ".join(why) or None,
    }


def load_rows(path: str | Path) -> list[dict]:
    """Finished rows; of rows repeating (run, task, method, D_f), the last one written."""
    rows: dict[tuple, dict] = {}
    for r in read_records(Path(path), required=()):  # a damaged line: reported, skipped
        if r.get("status") == "done" and r.get("eval_loss"):
            rows[(r["run_id"], r["task"], r["method"], r["d_f"])] = r
    return list(rows.values())


def _one_setting(rows: list[dict]) -> tuple[list[dict], int]:
    """The rows fine-tuned with the settings most rows share (of equals, the latest written);
    how many others were left out."""
    keys = [json.dumps(r.get("settings"), sort_keys=True) for r in rows]
    count = {k: keys.count(k) for k in keys}
    best = max(reversed(keys), key=lambda k: count[k])  # max keeps the first: the latest
    kept = [r for r, k in zip(rows, keys, strict=True) if k == best]
    return kept, len(rows) - len(kept)


def _settings_text(row: dict) -> str:
    st = row.get("settings") or {}
    return ", ".join(f"{k} {v}" for k, v in sorted(st.items()) if not isinstance(v, dict)) or "-"


def _ci(point: float, samples: np.ndarray, level: float) -> dict:
    q = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.nanpercentile(samples, [q, 100.0 - q])
    return {"estimate": float(point), "lo": float(lo), "hi": float(hi), "level": level}


def run_groups(rows: list[dict]) -> np.ndarray | None:
    """Each row's pre-trained run (the bootstrap's unit), or None when a row has no run_id."""
    ids = [r.get("run_id") for r in rows]
    return None if None in ids else np.array([str(i) for i in ids])


def _arrays(rows: list[dict], x_kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    key = X_KINDS[x_kind]
    return (
        np.array([r[key] for r in rows], np.float64),
        np.array([r["d_f"] for r in rows], np.float64),
        np.array([r["eval_loss"] for r in rows], np.float64),
    )


def fit_group(rows: list[dict], x_kind: str, *, n_resamples: int, seed: int, level: float) -> dict:
    """Fit, bootstrap CIs and predictions for one (task, method) and one choice of X."""
    X, D, L = _arrays(rows, x_kind)
    if np.unique(X).size < 2 or np.unique(D).size < 2:
        raise UserError(
            f"{np.unique(X).size} value(s) of {x_kind} and {np.unique(D).size} of D_f: the law "
            "needs >= 2 of each; fine-tune more runs (--sizes) or more --df values"
        )
    fit = fit_mult(X, D, L)
    boot = bootstrap_mult(fit, X, D, L, groups=run_groups(rows), n_resamples=n_resamples, seed=seed)
    n_bad = boot.pop("n_unconverged")
    preds = []
    for x, d in ((X.max(), 10 * D.max()), (10 * X.max(), D.max()), (10 * X.max(), 10 * D.max())):
        pt = float(mult_loss(fit.params, x, d))
        preds.append(
            {x_kind: float(x), "d_f": float(d), "loss": _ci(pt, mult_loss(boot, x, d), level)}
        )
    ci = summarize(fit.params, boot, level)
    checks = {k: exponent_check(fit, ci[k], (X, D, L), k, x_kind) for k in ("alpha", "beta")}
    return {
        "x": x_kind,
        "fit": fit.to_json(),
        "params_ci": ci,
        "exponents": checks,
        "E_identified": bool(fit.params["E"] >= E_AT_BOUND * L.min()),
        "n_unconverged": n_bad,
        "predictions": preds,
        "points": {"X": X.tolist(), "d_f": D.tolist(), "loss": L.tolist()},
    }


def backtest_largest(rows: list[dict], *, n_resamples: int, seed: int, level: float) -> dict:
    """Fit on every model but the largest N, predict the largest model's rows."""
    X, D, L = _arrays(rows, "N")
    held = X == X.max()
    if np.unique(X[~held]).size < 2 or (~held).sum() < 4:
        raise UserError("back-test needs >= 2 smaller models and >= 4 rows without the largest")
    fit = fit_mult(X[~held], D[~held], L[~held])
    runs = run_groups(rows)
    boot = bootstrap_mult(
        fit,
        X[~held],
        D[~held],
        L[~held],
        groups=None if runs is None else runs[~held],
        n_resamples=n_resamples,
        seed=seed,
    )
    boot.pop("n_unconverged")
    out = []
    for x, d, actual in zip(X[held], D[held], L[held], strict=True):
        pt, bs = float(mult_loss(fit.params, x, d)), mult_loss(boot, x, d)
        out.append(
            {
                "N": float(x),
                "d_f": float(d),
                "actual": float(actual),
                "predicted": _ci(pt, bs, level),
                "rel_error": _ci(pt / actual - 1.0, bs / actual - 1.0, level),
            }
        )
    mare = float(np.mean([abs(r["rel_error"]["estimate"]) for r in out]))
    return {
        "n_train": int((~held).sum()),
        "held_out_N": float(X.max()),
        "rows": out,
        "mean_abs_rel_error": mare,
    }


def analyze(
    path: str | Path, *, n_resamples: int = 1000, seed: int = 0, level: float = 0.9
) -> dict:
    """Every (task, method) group of the table: fits for X = N and X = D_pre, back-test."""
    t0 = time.perf_counter()
    rows = load_rows(path)
    if not rows:
        raise UserError(f"{path} holds no finished fine-tuning rows; run `scaling finetune` first")
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["method"]), []).append(r)
    out: dict = {
        "source": str(path),
        "level": level,
        "n_rows": len(rows),
        "resample_unit": "row" if run_groups(rows) is None else "run",
        "groups": [],
        "notes": [],
    }
    for (task, method), g in sorted(groups.items()):
        g, dropped = _one_setting(g)
        if dropped:  # a law across learning rates (or epochs, ...) would mix two experiments
            out["notes"].append(
                f"{task} / {method}: {dropped} row(s) fine-tuned with other settings than the "
                f"other rows ({_settings_text(g[-1])}) left out of its law"
            )
        entry: dict = {"task": task, "method": method, "n_rows": len(g), "fits": {}}
        entry["trainable_params"] = sorted({int(r["trainable_params"]) for r in g})
        for x_kind in X_KINDS:
            try:
                entry["fits"][x_kind] = fit_group(
                    g, x_kind, n_resamples=n_resamples, seed=seed, level=level
                )
            except UserError as e:
                out["notes"].append(f"{task} / {method}, X = {x_kind}: not fitted ({e})")
                continue
            if not entry["fits"][x_kind]["E_identified"]:
                out["notes"].append(e_note(f"{task} / {method}, X = {x_kind}"))
            for k, c in entry["fits"][x_kind]["exponents"].items():
                if not c["determined"]:
                    est = entry["fits"][x_kind]["params_ci"][k]["estimate"]
                    out["notes"].append(
                        f"{task} / {method}, X = {x_kind}: {k} = {est:.3g} is not determined by "
                        f"the data ({c['why']}); fine-tune more model sizes and D_f values"
                    )
        try:
            entry["backtest"] = backtest_largest(g, n_resamples=n_resamples, seed=seed, level=level)
        except UserError as e:
            out["notes"].append(f"{task} / {method}: back-test skipped ({e})")
        entry["rows"] = g
        out["groups"].append(entry)
    out["seconds"] = time.perf_counter() - t0
    return out


def e_note(where: str) -> str:
    """The note for a law whose E sits at its bound 0."""
    return (
        f"{where}: E sits at its bound 0 (not identified): over these sizes and D_f the law is "
        "indistinguishable from a pure power law A X^-alpha D_f^-beta, so the irreducible loss "
        "is unknown and predictions far outside the data keep falling instead of levelling off"
    )


def e_cell(fit: dict, fmt: str = ".4g") -> str:
    """E with its CI, or "not identified (at bound 0)" when it sits at its bound (fits.json
    written before the flag existed: read as identified); a CI reaching the bound shows 0 as its
    lower end, not the ~1e-11 where exp(e) stopped."""
    if not fit.get("E_identified", True):
        return "not identified (at bound 0)"
    ci = dict(fit["params_ci"]["E"])
    if ci["lo"] < E_AT_BOUND * min(fit["points"]["loss"]):  # resamples at the bound: E may be 0
        ci["lo"] = 0.0
    return with_ci(ci, fmt)


def exp_cell(fit: dict, k: str, fmt: str = ".4g") -> str:
    """An exponent with its CI, tagged "(not determined)" where `exponent_check` says so (the
    notes say why; fits.json written before the check: untagged)."""
    c = (fit.get("exponents") or {}).get(k)
    tag = " (not determined)" if c and not c["determined"] else ""
    return with_ci(fit["params_ci"][k], fmt) + tag


def resample_words(res: dict) -> str:
    """What the bootstrap resampled: pre-trained runs (each with all its rows), or rows (rows
    without a run_id, or fits.json written before the bootstrap drew whole runs)."""
    if res.get("resample_unit") == "run":
        return "pre-trained runs (each with all its rows)"
    return "rows"


def _g(x: float) -> str:
    return f"{x:.4g}"


def report_md(res: dict) -> str:
    """The sweep report's fine-tuning section (markdown, without the heading)."""
    lvl = int(round(100 * res["level"]))
    L = [
        f"{res['n_rows']} fine-tuning rows from `{res['source']}`. Law: L(X, D_f) = E + A X^-alpha "
        f"D_f^-beta (Zhang et al. 2024), X = N (total parameters); loss = test-set nats per target "
        f"token. {lvl}% CIs over bootstrap resamples of {resample_words(res)}.",
        "",
        "| task | method | rows | trainable params | E | A | alpha (N) | beta (D_f) "
        "| alpha (X = D_pre) | back-test error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g in res["groups"]:
        f, fd = g["fits"].get("N"), g["fits"].get("D_pre")

        def cell(fit, k):
            if fit is None:
                return "n/a"
            if k == "E":
                return e_cell(fit)
            return exp_cell(fit, k) if k in ("alpha", "beta") else with_ci(fit["params_ci"][k])

        tp = "-".join(_g(x) for x in (g["trainable_params"][0], g["trainable_params"][-1]))
        bt = g.get("backtest")
        bts = f"{bt['mean_abs_rel_error']:.2%}" if bt else "n/a"
        L.append(
            f"| {g['task']} | {g['method']} | {g['n_rows']} | {tp} | {cell(f, 'E')} | "
            f"{cell(f, 'A')} | {cell(f, 'alpha')} | {cell(f, 'beta')} | {cell(fd, 'alpha')} "
            f"| {bts} |"
        )
    L += [
        "",
        f"Predictions (X = N) [{lvl}% CI]:",
        "",
        "| task | method | N | D_f | loss |",
        "|---|---|---|---|---|",
    ]
    for g in res["groups"]:
        for p in (g["fits"].get("N") or {}).get("predictions", []):
            L.append(
                f"| {g['task']} | {g['method']} | {_g(p['N'])} | {_g(p['d_f'])} | "
                f"{with_ci(p['loss'])} |"
            )
    L += [
        "",
        "The back-test refits each law without the largest model and predicts that model's rows "
        "(mean |relative error|). With few sizes and D_f values the exponents are loosely pinned: "
        "read the CIs before the point estimates.",
    ]
    if res["notes"]:
        L += [""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(L)
