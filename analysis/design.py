"""What experiment a results table holds, and so which analyses it supports.

- ``isoflop``: runs grouped into compute budgets (a budget column, or C values that cluster),
  at least one budget with >= 3 model sizes covering at least half the runs. Supports the joint
  law, Approach 1 (envelope), the frontier L(C) and Approach 2 (IsoFLOP parabolas).
- ``ladder``: one token count per model size with D a fixed power of N (log D linear in log N
  within 0.05 dex, D not falling with N), e.g. 20 tokens per parameter at every size. N and D
  move together, so the joint law's separate N and D terms (and the allocation exponents) are
  not identified; the frontier L(C) is. No Approach 2.
- ``one_budget``: >= 2 model sizes, every run at one compute budget (declared, or C values that
  cluster into one, as for ``isoflop``), e.g. a first IsoFLOP sweep: D = C/(6N), so N and D move
  together (log D = log(C/6) - log N) and, as on a ladder, the joint law's N and D terms (and the
  allocation exponents, and any prediction at another budget) are not identified, nor is the
  frontier L(C) from final losses alone (one C). The joint law's fit of that one IsoFLOP curve
  and its parabola's minimum N_opt at that budget (Approach 2 without exponents) are.
- ``grid``: model sizes crossed with token counts (or tokens-per-parameter multiples), e.g. the
  OLMo ladder's 5 sizes x 5 lengths: the joint law, Approach 1 and the frontier. No IsoFLOP
  budgets, so no Approach 2.
- ``one_size``: every run has the same model size (only D varies): the joint law's N term is
  not identified, so neither is the allocation; the joint law, Approach 1 and the frontier.
- ``one_length``: every run has the same token count (only N varies): the D term is not
  identified, so neither is the allocation; the joint law, Approach 1 and the frontier.
- ``scattered``: none of these: the joint law, Approach 1 and the frontier.

Nothing is invented: a design without IsoFLOP budgets is never cut into budgets for Approach 2,
and ``--holdout largest`` there means the largest model size rather than the largest budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.tables import RunTable, infer_budgets

APPROACHES = {
    "isoflop": ("joint", "approach1", "frontier", "approach2", "allocation"),
    "grid": ("joint", "approach1", "frontier", "allocation"),
    "scattered": ("joint", "approach1", "frontier", "allocation"),
    "ladder": ("joint", "approach1", "frontier"),
    "one_budget": ("joint", "approach1", "frontier"),
    "one_size": ("joint", "approach1", "frontier"),
    "one_length": ("joint", "approach1", "frontier"),
}
# the joint law's parameters a design cannot tell apart: a ladder's N and D terms trade off; with
# one model size A/N^alpha is a constant that merges with E, with one token count B/D^beta does
UNIDENTIFIED = {
    "ladder": ("A", "B", "alpha", "beta"),
    "one_budget": ("A", "B", "alpha", "beta"),
    "one_size": ("E", "A", "alpha"),
    "one_length": ("E", "B", "beta"),
}
# each law form's parameters a design cannot identify (report.md's law-forms table). On a ladder
# the N and D terms trade off (kaplan's N_c/N and D_c/D, power_sum's A/N^alpha and B/D^beta), and
# with D/N fixed overtrain's a (M/C)^eta and b (MC)^-eta both go as C^-eta. With one model size a
# term in N alone is a constant (power_sum's A N^-alpha; kaplan's (N_c/N)^(alpha_N/alpha_D)), and
# overtrain's M/C = 1/(6N^2) makes a (M/C)^eta one that merges with E (one token count: MC = 6D^2)
FORM_UNIDENTIFIED = {
    "ladder": {
        "kaplan": ("N_c", "D_c", "alpha_N", "alpha_D"),
        "overtrain": ("a", "b"),
        "power_sum": ("A", "B", "alpha", "beta"),
    },
    "one_budget": {  # one C: every form's N and D terms are one curve in N (D = C/6N)
        "kaplan": ("N_c", "D_c", "alpha_N", "alpha_D"),
        "power_sum": ("A", "B", "alpha", "beta"),
    },
    "one_size": {
        "kaplan": ("N_c", "alpha_N"),
        "overtrain": ("E", "a"),
        "power_sum": ("A", "alpha"),
    },
    "one_length": {"overtrain": ("E", "b"), "power_sum": ("B", "beta")},
}
for _kind, _gone in UNIDENTIFIED.items():  # the chinchilla-parametrised forms: the joint law's
    FORM_UNIDENTIFIED[_kind].update(chinchilla=_gone, data_constrained=_gone)
# why a design identifies no compute-optimal allocation (the kinds without "allocation")
NO_ALLOCATION = {
    "ladder": "N and D move together",
    "one_budget": "every run is at one compute budget, where D = C/(6N) moves with N",
    "one_size": "every run has the same model size",
    "one_length": "every run has the same token count",
}
LEVEL_TOL_DEX = 0.03  # two values within 7% are one level (a size, a length)
LADDER_RESID_DEX = 0.05  # log D within this of a line in log N: D is a function of N
ONE_BUDGET_DEX = 0.2  # one budget's runs: N D within this (infer_budgets' widest cluster)
GRID_FILL = 0.75  # share of the size x length cells that must hold a run


@dataclass(frozen=True)
class Design:
    """The detected design: ``kind``, a one-line ``description`` and the analyses it supports."""

    kind: str
    description: str
    n_sizes: int

    @property
    def approaches(self) -> tuple[str, ...]:
        return APPROACHES[self.kind]

    def supports(self, approach: str) -> bool:
        return approach in self.approaches

    @property
    def exponents(self) -> tuple[str, ...]:
        """The joint law's exponents this design identifies (`fit_joint(identified=...)`)."""
        gone = UNIDENTIFIED.get(self.kind, ())
        return tuple(k for k in ("alpha", "beta") if k not in gone)

    @property
    def no_allocation(self) -> str | None:
        """Why the design identifies no compute-optimal allocation (None when it does)."""
        return None if self.supports("allocation") else NO_ALLOCATION[self.kind]

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "description": self.description,
            "n_sizes": self.n_sizes,
            "approaches": list(self.approaches),
            "no_allocation": self.no_allocation,
            "unidentified": list(UNIDENTIFIED.get(self.kind, ())),
        }


def levels(values: np.ndarray, tol_dex: float = LEVEL_TOL_DEX) -> np.ndarray:
    """Level index per value: sorted log10 values split wherever the gap exceeds ``tol_dex``."""
    lv = np.log10(values)
    order = np.argsort(lv)
    lab = np.empty(lv.size, dtype=int)
    lab[order] = np.concatenate([[0], np.cumsum(np.diff(lv[order]) > tol_dex)])
    return lab


def _isoflop(table: RunTable, sizes: np.ndarray) -> str | None:
    declared = bool(np.all(np.isfinite(table.budget)))
    b = table.budget if declared else infer_budgets(table)
    full = [c for c in np.unique(b) if np.unique(sizes[b == c]).size >= 3]
    covered = int(np.isin(b, full).sum())
    if not full or covered < 0.5 * len(table):
        return None
    how = "budget column" if declared else "C values clustered into budgets"
    k = len(full)
    return f"IsoFLOP sweep: {k} budget{'s' if k > 1 else ''} with >= 3 model sizes ({how})"


def _one_budget(table: RunTable, sizes: np.ndarray) -> str | None:
    """>= 2 model sizes and every run at one compute budget (the clustering `_isoflop` uses),
    their N D within ONE_BUDGET_DEX (a budget column that says one budget while N D varies is
    not believed: N and D do not then move together)."""
    declared = bool(np.all(np.isfinite(table.budget)))
    b = table.budget if declared else infer_budgets(table)
    n = int(sizes.max()) + 1
    if n < 2 or np.unique(b).size > 1 or np.ptp(np.log10(table.N * table.D)) > ONE_BUDGET_DEX:
        return None
    how = "budget column" if declared else "C values cluster into one budget"
    return f"one compute budget (C = {np.median(b):.3g}, {how}): {n} model sizes"


def _one_level(table: RunTable, sizes: np.ndarray) -> tuple[str, str] | None:
    """(kind, description) when every run has one model size or one token count."""
    n, m = int(sizes.max()) + 1, int(levels(table.D).max()) + 1
    if n == 1:
        return "one_size", f"one model size (N = {np.median(table.N):.3g}), {m} token count(s)"
    if m == 1:
        return "one_length", f"one token count (D = {np.median(table.D):.3g}), {n} model sizes"
    return None


def _ladder(table: RunTable, sizes: np.ndarray) -> str | None:
    n = int(sizes.max()) + 1
    if n < 2 or any(np.ptp(np.log10(table.D[sizes == i])) > LEVEL_TOL_DEX for i in range(n)):
        return None
    x, y = np.log10(table.N), np.log10(table.D)
    k, c = np.polyfit(x, y, 1)
    if k < 0 or np.max(np.abs(y - (k * x + c))) > LADDER_RESID_DEX:
        return None
    tpp = np.median(table.D / table.N)
    return (
        f"size ladder: {n} model sizes, one token count each (D ~ N^{k:.2f}, ~{tpp:.3g} tok/param)"
    )


def _grid(table: RunTable, sizes: np.ndarray) -> str | None:
    n = int(sizes.max()) + 1
    for name, other in (("token counts", table.D), ("tokens-per-parameter", table.D / table.N)):
        lab = levels(other)
        m = int(lab.max()) + 1
        cells = {(int(a), int(b)) for a, b in zip(sizes, lab, strict=True)}
        per_size = min(np.unique(lab[sizes == i]).size for i in range(n))
        if n >= 2 and m >= 2 and per_size >= 2 and len(cells) >= GRID_FILL * n * m:
            return f"N x D grid: {n} model sizes x {m} {name} ({len(cells)} of {n * m} cells)"
    return None


def detect_design(table: RunTable) -> Design:
    """Classify the table (see the module docstring); deterministic and cheap."""
    sizes = levels(table.N)
    n = int(sizes.max()) + 1
    if desc := _one_budget(table, sizes):
        return Design("one_budget", desc, n)
    declared = bool(np.all(np.isfinite(table.budget)))
    if declared and (desc := _isoflop(table, sizes)):
        return Design("isoflop", desc, n)
    if one := _one_level(table, sizes):
        return Design(*one, n)
    checks = (
        ("ladder", _ladder),
        ("grid", _grid),
        ("isoflop", _isoflop),
    )
    for kind, check in checks:
        desc = check(table, sizes)
        if desc:
            return Design(kind, desc, n)
    return Design("scattered", f"scattered runs: {n} model sizes, no IsoFLOP budgets or grid", n)


def identified_exponents(table: RunTable) -> tuple[str, ...]:
    """The joint law's exponents the runs' design identifies (`Design.exponents`)."""
    return detect_design(table).exponents


def largest_size_mask(table: RunTable) -> np.ndarray:
    """Rows at the largest model size (within the level tolerance)."""
    sizes = levels(table.N)
    return sizes == sizes.max()
