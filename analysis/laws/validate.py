"""Validate predictive intervals on real published sweeps (../shared/data): `make validate`.

For each data set: fit on the small-compute runs (with rolling back-tests inside them), predict the
held-out largest runs, and score mean/worst relative error, coverage of the nominal intervals and
their median half-width; a second table gives, on the same splits, the mean error of the old
single-form Chinchilla fit, of each law form alone and of the chosen predictor. The
extrapolation prior of each data set is learned from the OTHER data sets' rolling back-tests only
(leave one data set out), so no data set calibrates its own intervals. `--write-prior` stores the
prior learned from all of them in analysis/laws/interval_prior.json (numbers only; the data are
never copied into the repository).

    python -m analysis.laws.validate [--data ../shared/data] [--resamples 100] [--write-prior]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.laws.bounds import OLD, print_bounds
from analysis.laws.forms import design, subset
from analysis.laws.intervals import LEVELS, PRIOR_PATH, derive_prior, relative_distance
from analysis.laws.predictive import Predictor, build_predictor
from analysis.laws.rolling import compute_levels
from scaling.errors import UserError

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
BAND = (0.80, 0.97)


@dataclass
class Study:
    """One published sweep split into fitted and held-out rows."""

    name: str
    X: dict
    L: np.ndarray
    groups: np.ndarray
    fit: np.ndarray  # bool mask of fitted rows
    split: str
    budget: np.ndarray | None = None


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"{path} not found; pass --data pointing at the shared data directory")
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _arr(rows: list[dict], col: str) -> np.ndarray:
    return np.array([float(r[col]) for r in rows])


def chinchilla(data: Path) -> Study:
    r = _rows(data / "epoch_chinchilla_svg_extracted_data.csv")
    N, C, L = _arr(r, "Model Size"), _arr(r, "Training FLOP"), _arr(r, "loss")
    keep = np.argsort(L)[:-5]  # Besiroglu et al. drop the 5 highest-loss points
    N, C, L = N[keep], C[keep], L[keep]
    fit = C <= 5e20
    return Study(
        "epoch_chinchilla", design(N, C / (6 * N)), L, np.arange(L.size), fit, "fit C<=5e20"
    )


def porian(data: Path, config: str, short: str) -> Study:
    r = [x for x in _rows(data / "porian2024_isoflop.csv") if x["config_id"] == config]
    r = [x for x in r if float(x["D"]) >= float(x["N"])]  # D < N: early-training points
    N, D, L, C = _arr(r, "N"), _arr(r, "D"), _arr(r, "loss"), _arr(r, "C")
    return Study(short, design(N, D), L, np.arange(L.size), C <= 1.6e18, "fit C<=1.6e18, D>=N", C)


def muennighoff(data: Path, repeated: bool) -> Study:
    r = _rows(data / "muennighoff2023_datablations.csv")
    if repeated:  # beyond ~100 epochs runs diverge (loss up to 11), which no law models
        r = [x for x in r if x["variant"] == "base" and float(x["epochs"]) <= 100]
    else:
        r = [x for x in r if x["variant"] in ("base", "seed") and x["single_epoch"] == "1"]
    N, D, U, L = _arr(r, "N"), _arr(r, "D"), _arr(r, "U"), _arr(r, "loss")
    C = _arr(r, "C_6ND")
    _, groups = np.unique(
        [f"{a}-{b}-{c}" for a, b, c in zip(N, D, U, strict=True)], return_inverse=True
    )
    name = "muennighoff_repeated" if repeated else "muennighoff_single_epoch"
    X = design(N, D, U) if repeated else design(N, D)
    return Study(
        name, X, L, groups, C <= 1e20, "fit C<=1e20" + (", <=100 epochs" if repeated else "")
    )


def olmo(data: Path) -> Study:
    r = _rows(data / "bhagia2024_olmo_ladder_final.csv")
    N, D, L = _arr(r, "N"), _arr(r, "D"), _arr(r, "loss_c4")
    _, groups = np.unique([x["run"].replace("-rerun", "") for x in r], return_inverse=True)
    return Study("olmo_ladder_c4", design(N, D), L, groups, N <= 1.3e9, "fit N<=1.3B")


def studies(data: Path) -> list[Study]:
    return [
        chinchilla(data),
        porian(data, "rw_base_short_chinchilla_standard_val", "porian_rw_cosine"),
        porian(data, "rw_tuned_short_const_standard_val", "porian_rw_tuned_const"),
        muennighoff(data, repeated=False),
        muennighoff(data, repeated=True),
        olmo(data),
    ]


def prepare(st: Study, n_resamples: int, seed: int = 0) -> Predictor:
    X = subset(st.X, st.fit)
    lv = compute_levels(np.exp(X["lnC"]), None if st.budget is None else st.budget[st.fit])
    return build_predictor(
        X, st.L[st.fit], lv, st.groups[st.fit], n_resamples=n_resamples, seed=seed, prior=None
    )


def score(st: Study, pr: Predictor, level: float) -> dict:
    Xt, Lt = subset(st.X, ~st.fit), st.L[~st.fit]
    p = pr.predict(Xt, level)
    rel = p["loss"] / Lt - 1.0
    inside = (Lt >= p["lo"]) & (Lt <= p["hi"])
    far = (p["distance"] >= np.log10(4)) & (p["distance"] <= np.log10(20))
    return {
        "name": st.name,
        "split": st.split,
        "n_fit": int(st.fit.sum()),
        "n_test": int(Lt.size),
        "chosen": pr.chosen,
        "mean_abs_rel_error": float(np.mean(np.abs(rel))),
        "worst_abs_rel_error": float(np.max(np.abs(rel))),
        "coverage": float(np.mean(inside)),
        "median_half_width": float(np.median(np.expm1(p["half_width_log"]))),
        "max_distance": float(p["distance"].max()),
        "unsupported": int((~p["supported"]).sum()),
        "abs_rel": np.abs(rel),
        "inside": inside,
        "far": far,
        "half": np.expm1(p["half_width_log"]),
        "supported": p["supported"],
        "boot_only_inside": _boot_only(pr, Xt, Lt, level),
    }


def log_errors(st: Study, pr: Predictor) -> dict[str, np.ndarray]:
    """Held-out log(predicted / actual loss) on the same split of: the old single-form fit
    (Chinchilla's law, analysis.laws.fit.fit_joint from the 4,500-start grid), each law form
    alone, and the predictor."""
    from analysis.laws.core import joint_loss
    from analysis.laws.fit import fit_joint

    Xf, Xt, Lt = subset(st.X, st.fit), subset(st.X, ~st.fit), st.L[~st.fit]
    old = fit_joint(Xf["N"], Xf["D"], st.L[st.fit], keep=8)
    out = {OLD: np.log(joint_loss(old.params, Xt["N"], Xt["D"]))}
    out |= {n: f.logpred(Xt) for n, f in pr.fits.items()} | {"chosen": pr.point_log(Xt)}
    return {k: v - np.log(Lt) for k, v in out.items()}


def _boot_only(pr: Predictor, Xt: dict, Lt: np.ndarray, level: float) -> np.ndarray:
    """Coverage of the old interval: the chosen form's bootstrap percentile interval alone."""
    f = pr.fits.get("chinchilla") or next(iter(pr.fits.values()))
    b = f.boot_logpred(Xt)
    lo, hi = np.nanpercentile(b, [50 * (1 - level), 100 - 50 * (1 - level)], axis=0)
    return (np.log(Lt) >= lo) & (np.log(Lt) <= hi)


def run(data: Path, n_resamples: int = 50, level: float = 0.9, quiet: bool = False) -> dict:
    """LODO-calibrated validation over every study; returns per-study rows and pooled numbers."""
    t0 = time.perf_counter()
    sts = studies(data)
    preds = {}
    for st in sts:
        preds[st.name] = prepare(st, n_resamples)
        if not quiet:
            print(
                f"  {st.name}: fitted and back-tested ({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
            )
    pairs = {
        n: (relative_distance(p.rolling.dist, p.rolling.span), p.rolling.errors())
        for n, p in preds.items()
    }
    rows, by_level = [], {lv: [] for lv in LEVELS}
    for st in sts:
        others = {n: v for n, v in pairs.items() if n != st.name}
        pr = preds[st.name]
        pr.prior, pr.cals = derive_prior(others, f"leave-out {st.name}"), {}
        le = log_errors(st, pr)
        by_form = {k: np.abs(np.expm1(v)) for k, v in le.items()}
        rows.append(score(st, pr, level) | {"log_errors": le, "by_form": by_form})
        for lv in LEVELS:
            by_level[lv].append(score(st, pr, lv)["inside"])
    cat = lambda k: np.concatenate([r[k] for r in rows])  # noqa: E731
    pooled = _pooled(cat, np.ones(cat("abs_rel").size, dtype=bool)) | {
        "bootstrap_only_coverage": float(np.mean(cat("boot_only_inside"))),
        "reliability": {lv: float(np.mean(np.concatenate(v))) for lv, v in by_level.items()},
    }
    # the same numbers on the runs the data support (a second view)
    pooled["supported"] = _pooled(cat, cat("supported"))
    return {
        "studies": rows,
        "pooled": pooled,
        "level": level,
        "pairs": pairs,
        "seconds": time.perf_counter() - t0,
    }


def _pooled(cat, mask: np.ndarray) -> dict:
    """Coverage, median half-width and errors over the held-out runs in `mask`."""
    err, far = cat("abs_rel")[mask], cat("far")[mask]
    return {
        "n_test": int(mask.sum()),
        "coverage": float(np.mean(cat("inside")[mask])),
        "median_half_width": float(np.median(cat("half")[mask])),
        "mean_abs_rel_error": float(np.mean(err)),
        "mae_4_20x": float(np.mean(err[far])) if far.any() else float("nan"),
        "n_4_20x": int(far.sum()),
    }


def print_table(res: dict) -> None:
    lvl = int(round(100 * res["level"]))
    print(
        f"| data set | split | fit | held out | predictor | mean err | worst err | "
        f"{lvl}% coverage | median half-width | max dist (dec) | unsupported |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in res["studies"]:
        print(
            f"| {r['name']} | {r['split']} | {r['n_fit']} | {r['n_test']} | {r['chosen']} | "
            f"{r['mean_abs_rel_error']:.2%} | {r['worst_abs_rel_error']:.2%} | "
            f"{r['coverage']:.0%} | {r['median_half_width']:.2%} | {r['max_distance']:.2f} | "
            f"{r['unsupported']} |"
        )
    p = res["pooled"]
    print(
        f"\npooled over {p['n_test']} held-out runs: coverage {p['coverage']:.1%} "
        f"(target {BAND[0]:.0%}-{BAND[1]:.0%}; bootstrap-only interval "
        f"{p['bootstrap_only_coverage']:.1%}), "
        f"median half-width {p['median_half_width']:.2%} (target <= 3%), mean error "
        f"{p['mean_abs_rel_error']:.2%}; at 4-20x in compute ({p['n_4_20x']} runs): "
        f"{p['mae_4_20x']:.2%} (target <= 1.5%)"
    )
    q = p["supported"]
    print(
        f"the {q['n_test']} runs the data support (the rest are flagged: too far, or past the "
        f"epochs where fitted runs overfit): coverage {q['coverage']:.1%}, median half-width "
        f"{q['median_half_width']:.2%}, mean error {q['mean_abs_rel_error']:.2%}; at 4-20x "
        f"({q['n_4_20x']} runs): {q['mae_4_20x']:.2%}"
    )
    rel = ", ".join(f"{k:.0%}->{v:.0%}" for k, v in p["reliability"].items())
    print(f"reliability (nominal -> observed): {rel}; {res['seconds']:.0f} s")


def print_forms_table(res: dict) -> None:
    """Mean |error| on all held-out runs / on those 4-20x beyond the fitted compute, for the old
    single-form fit, each form alone and the chosen predictor: where the error comes from."""
    cols = list(dict.fromkeys(k for r in res["studies"] for k in r["by_form"]))
    cols = [c for c in cols if not c.startswith("chosen")] + ["chosen"]
    print("\nmean error, all held-out runs / 4-20x in compute:")
    print(f"| data set | {' | '.join(cols)} |")
    print("|---" * (len(cols) + 1) + "|")

    def cell(errs: list, fars: list) -> str:
        if not errs:
            return "n/a"
        e, f = np.concatenate(errs), np.concatenate(fars)
        return f"{np.mean(e):.2%} / " + (f"{np.mean(e[f]):.2%}" if f.any() else "-")

    pooled = {c: ([], []) for c in cols}
    for r in res["studies"]:
        cells = []
        for c in cols:
            e = r["by_form"].get(c)
            cells.append(cell([] if e is None else [e], [r["far"]]))
            if e is not None:
                pooled[c][0].append(e)
                pooled[c][1].append(r["far"])
        print(f"| {r['name']} | {' | '.join(cells)} |")
    print(f"| pooled (where the form applies) | {' | '.join(cell(*pooled[c]) for c in cols)} |")


def reliability_figure(res: dict, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scaling.fileio import save_figure

    rel = res["pooled"]["reliability"]
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    ax.plot(list(rel), list(rel.values()), "o-", label="held-out runs, pooled")
    ax.axhspan(*BAND, xmin=0.85, xmax=0.95, color="C2", alpha=0.15)
    ax.set(xlabel="nominal level", ylabel="observed coverage", xlim=(0.4, 1), ylim=(0, 1))
    ax.set_title("Interval reliability on published sweeps", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=120)  # atomic, like the report's figures
    plt.close(fig)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m analysis.laws.validate", description=__doc__.split("\n")[0]
    )
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data directory")
    p.add_argument(
        "--resamples", type=int, default=50, help="bootstrap resamples per form (default 50)"
    )
    p.add_argument(
        "--level",
        type=float,
        default=0.9,
        help="nominal level of the scored intervals, in (0, 1) (default 0.9; the reliability "
        "figure always shows 0.5-0.99)",
    )
    p.add_argument(
        "--figure",
        default="runs/validate/reliability.png",
        help="where to draw the reliability figure (default runs/validate/reliability.png)",
    )
    p.add_argument("--write-prior", action="store_true", help=f"write {PRIOR_PATH.name}")
    a = p.parse_args(argv)
    if not 0.0 < a.level < 1.0:
        raise UserError(f"--level {a.level}: must lie strictly between 0 and 1, e.g. --level 0.9")
    if a.resamples < 2:
        raise UserError(
            f"--resamples {a.resamples}: the bootstrap needs at least 2 resamples per form, "
            f"e.g. --resamples 50"
        )
    res = run(Path(a.data), a.resamples, a.level)
    print_table(res)
    print_forms_table(res)
    print_bounds(res)
    print(f"reliability figure: {reliability_figure(res, Path(a.figure))}")
    if a.write_prior:
        prior = derive_prior(res["pairs"], "python -m analysis.laws.validate --write-prior")
        PRIOR_PATH.write_text(json.dumps(prior, indent=2) + "\n")
        print(f"wrote {PRIOR_PATH}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
