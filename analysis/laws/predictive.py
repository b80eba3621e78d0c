"""The predictive pipeline: forms + rolling back-tests + bootstrap -> calibrated intervals.

`build_predictor` fits every candidate form to all the data (each with its own run-level
bootstrap, all with the same resamples so a stacked average can be bootstrapped too), runs the
rolling-origin back-tests, and chooses the best form or the stack out of sample.
`Predictor.predict` returns, for each target (N, D), the point prediction, the interval and the
half-width of each term (parameter, form, extrapolation) with the extrapolation distance.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from analysis.laws.domain import onset, outside, overfit_rows
from analysis.laws.form_fit import FormFit, bootstrap_form, fit_form
from analysis.laws.forms import FORMS, design, frontier_design, frontier_points, subset
from analysis.laws.intervals import Calibration, calibrate, load_prior
from analysis.laws.rolling import (
    Rolling,
    candidate_forms,
    describe_choice,
    distance,
    final_fits,
    form_spread,
    rolling_backtest,
    span,
)

FRONTIER_MIN_CI = 6  # budgets: twice the frontier law's 3 parameters, else no bootstrap CI


@dataclass
class Predictor:
    X: dict
    L: np.ndarray
    fits: dict[str, FormFit]
    rolling: Rolling
    prior: dict | None
    cals: dict = field(default_factory=dict)
    frontier: dict | None = None  # Approach 2's L_opt(C) on per-budget minima (a cross-check)
    onset: float | None = None  # epochs from which fitted runs overfit (analysis/laws/domain.py)

    @property
    def chosen(self) -> str:
        return self.rolling.chosen

    @property
    def weights(self) -> dict:
        w = {n: v for n, v in self.rolling.weights.items() if n in self.fits}
        if self.chosen != "stack":
            return {self.chosen: 1.0} if self.chosen in self.fits else {next(iter(self.fits)): 1.0}
        tot = sum(w.values())
        return {n: v / tot for n, v in w.items()}

    def noise(self) -> float:
        return float(sum(w * self.fits[n].quality["rmse_log"] for n, w in self.weights.items()))

    def calibration(self, level: float = 0.9) -> Calibration:
        if level not in self.cals:
            rb = self.rolling
            self.cals[level] = calibrate(
                rb.dist,
                rb.span,
                rb.errors(),
                rb.form_spread(),
                rb.origin,
                level=level,
                noise=self.noise(),
                prior=self.prior if self.prior else False,
                span=span(self.X),
            )
        return self.cals[level]

    def point_log(self, Xt: dict) -> np.ndarray:
        return sum(w * self.fits[n].logpred(Xt) for n, w in self.weights.items())

    def boot_log(self, Xt: dict) -> np.ndarray | None:
        """(R, n) bootstrap log predictions of the chosen predictor (same resamples per form)."""
        B = [self.fits[n].boot_logpred(Xt) for n in self.weights]
        if any(b is None for b in B):
            return None
        return sum(wi * b for wi, b in zip(self.weights.values(), B, strict=True))

    def predict(self, Xt: dict, level: float = 0.9) -> dict:
        """Arrays over targets: loss, lo, hi, distance, the terms' half-widths, supported."""
        cal = self.calibration(level)
        w = self.weights
        pt = self.point_log(Xt)
        Pb = self.boot_log(Xt)
        if Pb is not None:
            with warnings.catch_warnings():  # a ladder's compute optimum may be undefined (NaN)
                warnings.simplefilter("ignore", RuntimeWarning)
                qlo, qhi = np.nanpercentile(Pb, [50 * (1 - level), 100 - 50 * (1 - level)], axis=0)
            h_param = 0.5 * (qhi - qlo)
        else:
            h_param = np.zeros_like(pt)
        spread = form_spread({n: self.fits[n].logpred(Xt) for n in w}, w)
        d = distance(Xt, self.X)
        ok = ~outside(Xt, self.onset)
        terms = [cal.terms(*a) for a in zip(d, h_param, spread, ok, strict=True)]
        tot = np.array([t["total"] for t in terms])
        return {
            "loss": np.exp(pt),
            "lo": np.exp(pt - tot),
            "hi": np.exp(pt + tot),
            "half_width_log": tot,
            "distance": d,
            "terms": terms,
            "supported": np.array([t["supported"] for t in terms]),
            "forms": {n: np.exp(self.fits[n].logpred(Xt)) for n in self.fits},
            "level": level,
        }

    def compute_optimal(self, C: float, level: float = 0.9) -> dict:
        """Loss-minimising (N, D = C/6N) of the point predictor, and its interval there."""
        N = np.sqrt(C / 6.0) * np.logspace(-3, 3, 1201)
        lp = self.point_log(design(N, C / (6.0 * N)))
        i = int(np.nanargmin(lp))
        Xt = design(N[i : i + 1], np.array([C / (6.0 * N[i])]))
        out = self.predict(Xt, level)
        out["N_opt"], out["D_opt"] = float(N[i]), float(C / (6.0 * N[i]))
        return out

    def cross_coverage(self, level: float = 0.9) -> dict:
        """Leave-one-origin-out coverage of the rolling back-tests: each origin's predictions
        against intervals calibrated on the other origins (and the prior). `prior_only`: how
        many were checked against the published-sweep prior alone (the other origins held too
        few back-tests to calibrate on: always so with 2 origins), which then tests the prior,
        not the study's own calibration."""
        if ("cross", level) in self.cals:
            return self.cals[("cross", level)]
        rb, inside, prior_only = self.rolling, [], 0
        err, f = rb.errors(), rb.form_spread()
        for k in np.unique(rb.origin):
            o = rb.origin != k
            try:
                cal = calibrate(
                    rb.dist[o],
                    rb.span[o],
                    err[o],
                    f[o],
                    rb.origin[o],
                    level=level,
                    noise=self.noise(),
                    prior=self.prior if self.prior else False,
                    span=float(rb.span[~o][0]),
                )
            except ValueError:
                continue
            for i in np.flatnonzero(~o):
                inside.append(abs(err[i]) <= cal.terms(rb.dist[i], 0.0, f[i])["total"])
                prior_only += cal.weight_user == 0.0
        out = {"inside": int(np.sum(inside)), "n": len(inside), "level": level}
        out["prior_only"] = int(prior_only)
        self.cals[("cross", level)] = out
        return out

    def frontier_loss(self, C: float, level: float = 0.9) -> dict | None:
        """L_opt(C) of the frontier form (fitted to each budget's lowest loss) with its
        bootstrap CI (parameter noise only); no CI (lo, hi None) with fewer than
        FRONTIER_MIN_CI budgets: resampling 4 points for a 3-parameter law mostly draws 3 or
        fewer distinct ones, and the CI it gives is degenerate."""
        if not self.frontier:
            return None
        f, X = self.frontier["fit"], frontier_design(np.array([C]))
        n = int(self.frontier["n_points"])
        lo = hi = None
        if n >= FRONTIER_MIN_CI:
            q = [50 * (1 - level), 100 - 50 * (1 - level)]
            lo, hi = (float(v) for v in np.nanpercentile(np.exp(f.boot_logpred(X)[:, 0]), q))
        return {
            "estimate": float(np.exp(f.logpred(X)[0])), "lo": lo, "hi": hi, "level": level,
            "out_of_sample_error": self.frontier["score"], "n_budgets": n,
        }  # fmt: skip

    def describe(self) -> str:
        return describe_choice(self.rolling)

    def to_json(self, level: float = 0.9) -> dict:
        fr = None
        if self.frontier:
            fr = self.frontier["fit"].to_json() | {
                "out_of_sample_error": self.frontier["score"],
                "n_budgets": self.frontier["n_points"],
            }
        return {
            "frontier": fr,
            "chosen": self.chosen,
            "weights": self.weights,
            "choice": self.describe(),
            "overfit_onset_epochs": self.onset,
            "forms": {n: f.to_json() for n, f in self.fits.items()},
            "rolling": self.rolling.to_json(),
            "calibration": self.calibration(level).to_json(),
            "cross_coverage": self.cross_coverage(level),
            "reliability": {
                str(lv): c["inside"] / c["n"] if c["n"] else None
                for lv in (0.5, 0.68, 0.8, 0.9, 0.95)
                for c in [self.cross_coverage(lv)]
            },
        }


def build_predictor(
    X: dict,
    L: np.ndarray,
    levels: np.ndarray,
    groups: np.ndarray,
    *,
    n_resamples: int = 100,
    seed: int = 0,
    prior: dict | None | bool = True,
    forms: list[str] | None = None,
    max_origins: int = 5,
) -> Predictor:
    """Fit all candidate forms (bootstrapped), back-test them from rolling origins, choose."""
    L = np.asarray(L, dtype=np.float64)
    names = forms or candidate_forms(X)
    fits = final_fits(X, L, names, groups, n_resamples, seed)
    if not fits:
        raise ValueError("no law form could be fitted to these data")
    rb = rolling_backtest(X, L, levels, forms=list(fits), warm=fits, max_origins=max_origins)
    if rb.row.size == 0 and len(fits) >= 2:  # no back-test: hedge over the forms equally
        rb.chosen, rb.weights = "stack", {n: 1.0 / len(fits) for n in fits}
    elif rb.chosen not in fits and rb.chosen != "stack":
        rb.chosen = min(fits, key=lambda n: fits[n].quality["aic"])
    # Runs past the epochs at which fitted runs overfit are outside every form: targets there are
    # flagged, so the intervals are calibrated on the back-tests of the other runs (the fits and
    # the choice of forms keep every run: leaving them out raised the held-out error, README).
    ep = onset(X, overfit_rows(X, L))
    if ep is not None:
        rb.restrict(~outside(subset(X, rb.row), ep))
    if prior is True:
        prior = load_prior()
    fr = frontier_track(X, L, levels, rb.origins, n_resamples, seed)
    return Predictor(X, L, fits, rb, prior or None, frontier=fr, onset=ep)


def frontier_track(
    X: dict, L: np.ndarray, levels: np.ndarray, origins: list, n_resamples: int, seed: int
) -> dict | None:
    """Approach 2's power law L_opt(C) = E + A C^-alpha fitted to the lowest loss of each compute
    level, bootstrapped over levels, and back-tested from the same rolling origins."""
    C, Lm = frontier_points(X["lnC"], L, levels)
    form = FORMS["frontier"]
    if C.size < 4:
        return None
    fit = fit_form(form, frontier_design(C), Lm)
    if fit is None:
        return None
    bootstrap_form(fit, frontier_design(C), Lm, np.arange(C.size), n_resamples=n_resamples,
                   seed=seed)  # fmt: skip
    errs = []
    for c in origins:
        m = C <= c * (1 + 1e-9)
        if m.sum() < 4 or m.all():
            continue
        f = fit_form(form, frontier_design(C[m]), Lm[m], extra_starts=fit.vec,
                     starts=form.starts()[::4], keep=4, max_iter=300)  # fmt: skip
        if f is not None:
            errs.append(float(np.mean(np.abs(f.logpred(frontier_design(C[~m])) - np.log(Lm[~m])))))
    return {"fit": fit, "score": float(np.mean(errs)) if errs else None, "n_points": int(C.size)}
