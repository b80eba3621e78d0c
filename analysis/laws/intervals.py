"""Predictive intervals = parameter + form + calibrated extrapolation error (split-conformal).

The rolling back-tests (analysis/laws/rolling.py) give out-of-sample log errors e_i of the chosen
predictor at distances d_i (decades beyond the fitted compute), with the spread f_i of the
stacked forms there (weighted standard deviation of their log predictions). Errors grow with the
distance and shrink with the compute range the fit saw, less than proportionally: the scale is a
function of x = d / sqrt(span) (an origin fitted on 0.5 decades that extrapolates 1 decade is as
far out as a fit on 2 decades extrapolating 2). The scale is
s(x) = s0 + s1 x (weighted median regression of |e_i| on [1, x_i], each origin weighing the same,
s0 at least the fit's in-sample noise); the split-conformal factor q is the ceil((n+1) level)-th
smallest score z_i = |e_i| / sqrt(f_i^2 + s(x_i)^2). At a target at distance d from a fit that
spans `span` decades the half-width in log loss is

    h = max(h_param, sqrt((q f)^2 + (q s(d / sqrt(span)))^2))

with h_param the run-level bootstrap half-width of the chosen predictor (a floor: the back-test
errors already contain parameter noise) and f the spread of the stacked forms at the target.
Where the user's back-tests are few, a conservative prior learned from published sweeps
(analysis/laws/interval_prior.json, written by `make validate-prior`) shrinks the extrapolation
term on the log scale: h_x = h_user^w h_prior^(1-w), w = n_origins / (n_origins + 3), with
h_prior(x) = q_prior (p0 + p1 x); with no usable back-test, w = 0. These choices (median
regression, prior strength 3, the geometric blend, the bootstrap as a floor) were compared
leave-one-data-set-out on the published sweeps (see README, Validation). Beyond the largest
distance the user's back-tests reach plus half a decade the data cannot support the
extrapolation, nor past the number of epochs at which the fitted runs overfit
(analysis/laws/domain.py): the interval is then at least the prior's and the prediction says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import linprog

PRIOR_PATH = Path(__file__).with_name("interval_prior.json")
PRIOR_STRENGTH = 3.0  # origins' worth of weight on the prior (chosen leave-one-data-set-out)
MIN_PAIRS = 10  # fewer back-test predictions than this: no calibration of the user's own
MIN_ORIGINS = 2
SUPPORT_MARGIN = 0.5  # decades past the furthest back-test still considered supported
LEVELS = (0.5, 0.68, 0.8, 0.9, 0.95, 0.99)
SPAN_POWER = 0.5  # x = d / span^0.5 (1 fitted the sims' growing misspecification worse, 0 the
# published sweeps: compared leave-one-data-set-out, see README Validation)


def relative_distance(d, span):
    """Extrapolation distance relative to the decades of compute the fit covered."""
    return np.asarray(d, dtype=np.float64) / np.power(span, SPAN_POWER)


def scale_fit(x: np.ndarray, abs_err: np.ndarray, w: np.ndarray, floor: float = 0.0) -> tuple:
    """(s0, s1) >= 0 with s(x) = s0 + s1 x: weighted median regression of |errors| on [1, x]
    (a linear programme), so one diverged run cannot set the scale."""
    n = x.size
    A = np.column_stack([np.ones(n), x])
    cost = np.r_[0.0, 0.0, w, w]  # min sum w |e - A s| with e - A s = u+ - u-
    res = linprog(
        cost, A_eq=np.hstack([A, np.eye(n), -np.eye(n)]), b_eq=abs_err,
        bounds=[(0, None)] * (2 + 2 * n), method="highs",
    )  # fmt: skip
    s0, s1 = res.x[:2] if res.success else (float(np.median(abs_err)), 0.0)
    return max(float(s0), floor, 1e-4), float(s1)


def origin_weights(origin: np.ndarray) -> np.ndarray:
    """Each origin's predictions share a unit weight (origins count equally, not points)."""
    w = np.ones(origin.size)
    for k in np.unique(origin):
        w[origin == k] = 1.0 / np.sum(origin == k)
    return w


def conformal_q(z: np.ndarray, level: float) -> float:
    """Split-conformal quantile: the ceil((n+1) level)-th smallest score (inf if n is too small)."""
    n = z.size
    k = math.ceil((n + 1) * level)
    return float("inf") if k > n else float(np.sort(z)[k - 1])


@dataclass
class Calibration:
    """Everything needed to turn a point prediction at distance d into an interval."""

    level: float
    s0: float
    s1: float
    q: float
    n_pairs: int
    n_origins: int
    d_max: float  # furthest distance reached by the user's back-tests
    span: float  # decades of compute covered by the final fit (scale of the relative distance)
    prior: dict | None
    weight_user: float
    coverage_in_backtests: float  # share of back-test errors inside their own interval

    def prior_h(self, x: float) -> float:
        if not self.prior:
            return float("nan")
        qp = float(np.interp(self.level, self.prior["levels"], self.prior["q"]))
        return qp * (self.prior["s0"] + self.prior["s1"] * x)

    def supported(self, d: float) -> bool:
        return d <= self.d_max + SUPPORT_MARGIN

    def terms(self, d: float, h_param: float, spread: float, in_domain: bool = True) -> dict:
        """Half-widths (log loss) of each term and the total at distance d; ``in_domain`` False
        marks a target where the fitted runs overfit (analysis/laws/domain.py): unsupported too."""
        w, x = self.weight_user, float(relative_distance(d, self.span))
        user_x = self.q * (self.s0 + self.s1 * x) if w > 0 else 1.0
        prior_x = self.prior_h(x) if self.prior else 1.0
        h_x = user_x**w * prior_x ** (1.0 - w)  # shrinkage on the log scale
        h_f = (self.q if w > 0 else 1.0) ** w * spread
        ok = self.supported(d) and bool(in_domain)
        if not ok and self.prior:
            h_x = max(h_x, prior_x)
        # the back-test errors already contain parameter noise: the bootstrap is a floor
        total = max(h_param, math.sqrt(h_f**2 + h_x**2))
        return {
            "distance_decades": float(d),
            "relative_distance": float(x),
            "param": float(h_param),
            "form": float(h_f),
            "extrapolation": float(h_x),
            "total": float(total),
            "supported": bool(ok),
            "why_unsupported": "" if ok else ("overfitting" if not in_domain else "distance"),
        }

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "prior"} | {
            "prior_source": (self.prior or {}).get("source")
        }


def unsupported_reason(t: dict) -> str:
    """Why a prediction's terms (Calibration.terms) say the data cannot support it."""
    if t.get("why_unsupported") == "overfitting":
        return "the fitted runs overfit at this many epochs"
    return "the data cannot support this distance"


def load_prior(path: Path = PRIOR_PATH) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def calibrate(
    dist: np.ndarray,
    spans: np.ndarray,
    err: np.ndarray,
    spread: np.ndarray,
    origin: np.ndarray,
    *,
    level: float = 0.9,
    noise: float = 0.0,
    prior: dict | None | bool = True,
    span: float = 1.0,
) -> Calibration:
    """Calibrate the extrapolation term from back-test errors (log pred - log actual) at
    distances ``dist`` from origins whose fits covered ``spans`` decades; ``span`` is the final
    fit's. The scale is a function of the relative distance x = d / span."""
    if prior is True:
        prior = load_prior()
    prior = prior or None
    ok = np.isfinite(err)
    d, e, f, o = dist[ok], np.abs(err[ok]), spread[ok], origin[ok]
    x = relative_distance(d, spans[ok])
    n_orig = int(np.unique(o).size)
    if e.size >= MIN_PAIRS and n_orig >= MIN_ORIGINS:
        s0, s1 = scale_fit(x, e, origin_weights(o), floor=noise)
        z = e / np.sqrt(f**2 + (s0 + s1 * x) ** 2)
        q = conformal_q(z, level)
    else:
        s0, s1, q = max(noise, 1e-4), 0.0, float("inf")
    w = n_orig / (n_orig + PRIOR_STRENGTH) if np.isfinite(q) else 0.0
    if prior is None and w == 0.0:
        raise ValueError("no calibration possible: too few back-tests and no prior")
    if prior is None:
        w = 1.0
    cal = Calibration(
        level,
        s0,
        s1,
        q if np.isfinite(q) else 0.0,
        int(e.size),
        n_orig,
        float(d.max()) if d.size else 0.0,
        float(span),
        prior,
        float(w),
        float("nan"),
    )
    if e.size:
        back = span**SPAN_POWER  # terms() takes a distance at the final fit's span
        h = [cal.terms(xi * back, 0.0, fi)["total"] for xi, fi in zip(x, f, strict=True)]
        cal.coverage_in_backtests = float(np.mean(e <= h))
    return cal


def derive_prior(pairs: dict[str, tuple[np.ndarray, np.ndarray]], source: str) -> dict:
    """Prior from back-test (relative distance, log error) pairs of several data sets, each
    weighted equally: s(x) by NNLS on weighted rows, q at each level by weighted quantile."""
    ds, es, ws = [], [], []
    for d, e in pairs.values():
        ok = np.isfinite(e)
        ds.append(d[ok])
        es.append(np.abs(e[ok]))
        ws.append(np.full(int(ok.sum()), 1.0 / max(int(ok.sum()), 1)))
    d, e, w = np.concatenate(ds), np.concatenate(es), np.concatenate(ws)
    s0, s1 = scale_fit(d, e, w)
    z = e / (s0 + s1 * d)
    order = np.argsort(z)
    cw = np.cumsum(w[order]) / w.sum()
    q = [float(z[order][min(np.searchsorted(cw, lv), z.size - 1)]) for lv in LEVELS]
    return {
        "source": source,
        "datasets": sorted(pairs),
        "n_pairs": int(e.size),
        "s0": s0,
        "s1": float(s1),
        "levels": list(LEVELS),
        "q": q,
        "meaning": "half-width of log(pred/actual) at relative distance x = d / sqrt(decades "
        "fitted) = q[level] * (s0 + s1 * x)",
    }
