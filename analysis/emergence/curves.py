"""The emergence curve type and the flagger's constants: what every emergence module shares.

A `Curve` is one score-versus-scale curve of one (task, metric, shots, family); the constants
are the flagger's decisive thresholds (analysis/emergence/flagger.py documents the rules).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.emergence import stats as st

MARGIN = 0.03  # onset: lower 95% CI bound of the chance-normalised score must exceed this
JUMP_MARGIN = 0.05  # LFO: observed - predicted (chance-normalised) must be at least this
ALPHA = 0.05  # family-wise error rate (Holm across curves)
LFO_POINTS = 2  # LFO tests the onset point and the next one
MIN_PRE = 3  # points before the onset needed to test for a jump (trend + its scatter)
Z_DROP = 3.0  # a drop is real when z > Z_DROP, >= MARGIN and (binomial) Wilson CIs apart
FLAGGED = ("emergent", "emergent_metric_induced", "insufficient_resolution", "non_monotone")
VERDICTS = (
    "smooth",
    "emergent",
    "emergent_metric_induced",
    "flat_at_chance",
    "non_monotone",
    "insufficient_resolution",
    "not_tested",
)


@dataclass
class Curve:
    """One score-versus-scale curve. Arrays are per scale point (any order; sorted on use).

    n_items None (or chance None) marks an unbounded/continuous metric (logprob, BLEU): no
    binomial model, no chance, noise from the scatter of the curve itself. ``majority`` is the
    majority-label rate of a multiple-choice task (what "always answer the same label" scores);
    the chance level used is max(chance, majority), see ``chance_floor``.
    """

    task: str
    metric: str
    family: str
    scale: np.ndarray
    y: np.ndarray
    shots: int | None = None
    n_items: np.ndarray | None = None
    chance: float | None = None
    majority: float | None = None  # accuracy of always giving the most common gold label
    n_seeds: np.ndarray | None = None
    seed_var: np.ndarray | None = None  # variance of the seed-mean (0 with one seed)
    loss: np.ndarray | None = None
    loss_unit: str | None = None  # e.g. nats/byte; None when unknown or mixed
    companions: list[str] = field(default_factory=list)
    labels: list[str] | None = None
    higher_is_better: bool = True

    @property
    def key(self) -> tuple:
        return (self.task, self.shots, self.family)

    @property
    def bounded(self) -> bool:
        return self.chance is not None and self.n_items is not None


def chance_floor(c: Curve) -> tuple[float, str, bool]:
    """(chance level, why, inferred) of a bounded curve: see stats.chance_level."""
    if not c.higher_is_better:
        return float(c.chance), f"nominal chance {c.chance:g}", False
    return st.chance_level(c.chance, c.majority, np.asarray(c.y, float), c.n_items)
