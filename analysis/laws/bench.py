"""Fitting benchmark (`make bench`): grid fit, fit + bootstrap, and a naive scipy loop.

Data: the 240 Epoch/Chinchilla points from ../shared/data when present (else a simulated sweep
of 240 runs, said so). The naive loop is scipy L-BFGS-B per start with finite-difference
gradients and default tolerances (as in Epoch's notebook); it is timed on a subset of starts and
extrapolated to 4,500, and the output says so. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    here = Path(__file__).resolve().parents[3] / "shared" / "data"
    f = here / "epoch_chinchilla_svg_extracted_data.csv"
    if f.is_file():
        rows = list(csv.DictReader(f.open()))
        N = np.array([float(r["Model Size"]) for r in rows])
        C = np.array([float(r["Training FLOP"]) for r in rows])
        L = np.array([float(r["loss"]) for r in rows])
        keep = np.argsort(L)[:-5]
        return N[keep], C[keep] / (6 * N[keep]), L[keep], f"Epoch Chinchilla points ({f})"
    from analysis.laws.simulate import isoflop_sweep

    sw = isoflop_sweep(budgets=tuple(np.geomspace(1e18, 1e22, 10)), n_sizes=24)
    return sw["N"], sw["D"], sw["loss"], "simulated 240-run sweep (../shared/data absent)"


def _naive_loop(N, D, L, starts: np.ndarray) -> float:
    """A plain per-start scipy loop: scalar numpy objective, no batching, no analytic gradient."""
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    lN, lD, lL = np.log(N), np.log(D), np.log(L)

    def huber_obj(x: np.ndarray) -> float:
        e, a, b, alpha, beta = x
        pred = logsumexp([a - alpha * lN, b - beta * lD, np.full_like(lN, e)], axis=0)
        r = np.abs(pred - lL)
        return float(np.sum(np.where(r <= 1e-3, 0.5 * r**2, 1e-3 * (r - 0.5e-3))))

    t0 = time.perf_counter()
    for x0 in starts:
        minimize(huber_obj, x0, method="L-BFGS-B")
    return time.perf_counter() - t0


def main(n_naive: int = 45, n_resamples: int = 4000) -> None:
    """Print fit time, fit + bootstrap time, and the speed-up against the naive loop."""
    from analysis.laws.bootstrap import bootstrap_fit
    from analysis.laws.fit import chinchilla_grid, fit_joint

    N, D, L, what = _data()
    print(f"data: {L.size} points, {what}")
    print(
        f"cpus visible: {os.cpu_count()}; numpy {np.__version__}; timings are wall-clock "
        "and noisy on a shared machine"
    )
    fit_joint(N, D, L)  # warm-up (imports, caches)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fit = fit_joint(N, D, L)
        times.append(time.perf_counter() - t0)
    t_fit = float(np.median(times))
    p = fit.params
    print(
        f"grid fit (4,500 starts, batched L-BFGS + polish): median {t_fit:.2f} s of 3 "
        f"(min {min(times):.2f} s); target < 2 s"
    )
    print(
        "  E={E:.6g} A={A:.6g} B={B:.6g} alpha={alpha:.6g} beta={beta:.6g}".format(**p)
        + f"  |grad|={fit.grad_norm:.1e}"
    )
    t0 = time.perf_counter()
    fit_joint(N, D, L, method="varpro")
    print(f"variable-projection fit: {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    fit = fit_joint(N, D, L)
    boot = bootstrap_fit(
        fit, [np.log(N), np.log(D)], np.log(L), np.arange(L.size), n_resamples=n_resamples
    )
    t_all = time.perf_counter() - t0
    print(
        f"fit + {n_resamples} bootstrap resamples: {t_all:.2f} s (bootstrap {boot.seconds:.2f} s,"
        f" {boot.n_unconverged} unconverged); target < 60 s"
    )
    grid = chinchilla_grid()
    sub = grid[np.linspace(0, grid.shape[0] - 1, n_naive).astype(int)]
    t_sub = _naive_loop(N, D, L, sub)
    t_naive = t_sub * grid.shape[0] / n_naive
    print(
        f"naive scipy loop: {t_sub:.2f} s for {n_naive} evenly spaced starts, extrapolated to "
        f"{t_naive:.0f} s for 4,500 (finite-difference gradients, default tolerances)"
    )
    print(f"speed-up of the grid fit over the naive loop: {t_naive / t_fit:.0f}x")


if __name__ == "__main__":
    main()
