"""Where the law forms apply: runs whose loss rises with more training on the same data.

Every law form here is monotone: more parameters or more tokens never raise the predicted loss.
A run that repeats its data can break that: past some number of epochs a model overfits and its
loss rises with more training or more parameters (on Muennighoff et al.'s sweep a 1.1B model on
100M unique tokens reaches 4.1 at 27 epochs and 6.7 at 75). No form describes such a run.

``overfit_rows`` finds the runs no monotone law reaches: a run whose loss is above, by more than
``TOL`` (relative; seed-to-seed spread on that sweep is ~0.2%), the loss of another run on the same
unique data with no more parameters and no more tokens. ``onset`` is the fewest epochs at which
such a run repeated its data. A target repeating its data at least that often is outside what the
fitted runs can say (where the onset lies for larger models the small runs cannot tell; inside
Muennighoff's fitted runs, the onset seen below 1e19 FLOPs flags 13 of the 17 overfitting runs
above it, and 2 others): its prediction is flagged unsupported, its interval is at least the
published-sweep prior's, and the intervals are calibrated on the back-tests of the other runs.
The fits keep every run (leaving the overfitting ones out raised the held-out error: README,
Validation).
"""

from __future__ import annotations

import numpy as np

TOL = 0.01
MIN_RUNS = 2  # one pair of runs 1% apart could be noise: an onset needs two overfitting runs


def overfit_rows(X: dict, L: np.ndarray, tol: float = TOL) -> np.ndarray:
    """Bool mask of runs beaten by a cheaper run on the same unique data (repeated data only)."""
    L = np.asarray(L, dtype=np.float64)
    if "U" not in X or not np.any(X["R"] > 0):
        return np.zeros(L.size, dtype=bool)
    N, D, U = X["N"], X["D"], np.minimum(X["U"], X["D"])
    same = np.isclose(U[None, :], U[:, None], rtol=1e-6)
    cheaper = (N[None, :] <= N[:, None]) & (D[None, :] <= D[:, None]) & same
    lower = L[None, :] < L[:, None] * (1.0 - tol)
    return np.any(cheaper & lower, axis=1)


def onset(X: dict, mask: np.ndarray) -> float | None:
    """Fewest epochs (D / U) among the runs in ``mask`` that repeat data; None if fewer than
    ``MIN_RUNS`` of them do."""
    if "U" not in X:
        return None
    ep = X["D"] / np.minimum(X["U"], X["D"])
    rep = mask & (ep > 1.0 + 1e-9)
    return float(ep[rep].min()) if rep.sum() >= MIN_RUNS else None


def outside(Xt: dict, epochs: float | None) -> np.ndarray:
    """Targets repeating their data at least ``epochs`` times (without U: fresh data, never)."""
    if epochs is None or "U" not in Xt:
        return np.zeros(Xt["lnN"].size, dtype=bool)
    return Xt["D"] / np.minimum(Xt["U"], Xt["D"]) >= epochs * (1.0 - 1e-9)
