"""Per-size hyperparameters of a grid and its hyperparameter axes (the [hparams] table).

Rules, see `lr_for_width`, `batch_for` and `warmup_for`:
- lr = lr * (lr_width / d_model) ** lr_exp, capped at lr_max (Adam's best lr falls roughly as
  1 / width; lr_exp = 1 is the muP-style hidden-layer rule). With lr_exp = 0 (one lr for every
  width, the muP default) an lr above lr_max is an error, not a silent cap (`check_lr_cap`).
- batch: `batch_size`, halved (never below `min_batch_size`, default: no halving; always a
  multiple of `batch_multiple`) until a cell gets at least `min_steps` steps. With
  batch_per = "budget" (isoflop) every cell of a budget shares the batch that gives its largest
  model `min_steps`, so the batch grows with compute and is never confounded with N.
- warmup: "params" = warmup tokens equal to N_total (Porian et al. 2024: a short warmup for
  small models; long fixed warmups bias small-scale laws), capped at `warmup_max_frac` of the
  steps; an integer = fixed steps; a float in (0, 1) = fraction of the steps.

Axes (`parse_hparams`): `lr = [..]` (absolute peak lrs, the width rule off), `lr_factors = [..]`
(factors on the width rule's lr), `batch_size = [..]` (fixed batches, no halving) and
`warmup = [..]` (any mix of the rules above) multiply every cell of any grid kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from scaling.errors import UserError
from sweeps.tables import check_table, defaults_of, typed

AXIS_KEYS = ("lr", "batch_size", "warmup")  # keys of [hparams] that may be lists (grid axes)


@dataclass(frozen=True)
class Hparams:
    """[hparams] with one axis point's values: the per-size rules of the module docstring."""

    lr: float = 3e-3
    lr_width: float = 64.0
    lr_exp: float = 1.0
    lr_max: float = 1e-2
    batch_size: int = 32
    min_batch_size: int = 0
    batch_multiple: int = 1
    min_steps: int = 100
    batch_per: str = "cell"
    warmup: str | int | float = "params"  # "params", steps, or a fraction of the steps
    warmup_max_frac: float = 0.1


@dataclass(frozen=True)
class Point:
    """One point of the [hparams] axes: each field that is not None is that axis's value."""

    lr: float | None = None
    lr_factor: float | None = None
    batch_size: int | None = None
    warmup: str | int | float | None = None

    def items(self) -> list[tuple[str, Any]]:
        """(axis, value) of the axes the grid has, in the order of the cell label."""
        return [
            (f.name, getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not None
        ]

    def __bool__(self) -> bool:
        return bool(self.items())


def parse_hparams(table: Any) -> tuple[Hparams, tuple[Point, ...]]:
    """[hparams] as its scalar rules and the points of its axes ((Point(),) when it has none).

    The axes are `lr = [..]` (absolute), `lr_factors = [..]`, `batch_size = [..]` and
    `warmup = [..]`; the points are their cartesian product, in that order.
    """
    h = check_table(table, {**defaults_of(Hparams), "lr_factors": ()}, "hparams", AXIS_KEYS)
    axes: dict[str, list[Any]] = {}
    factors = h["lr_factors"]
    given = factors != ()  # the default; an explicit [] is an error in _axis_values
    if isinstance(h["lr"], list):
        if given:
            raise UserError(
                "grid [hparams]: give either lr = [..] (absolute lrs) or lr_factors = [..] "
                "(factors on the per-width lr), not both"
            )
        axes["lr"] = _axis_values("lr", h["lr"], [1e-3, 3e-3, 1e-2])
    elif given:
        axes["lr_factor"] = _axis_values("lr_factors", factors, [0.5, 1, 2])
    if isinstance(h["batch_size"], list):
        axes["batch_size"] = _axis_values("batch_size", h["batch_size"], [16, 32], integer=True)
    if isinstance(h["warmup"], list):
        if not h["warmup"]:
            raise UserError('grid [hparams] warmup = []: give at least one rule, e.g. ["params"]')
        axes["warmup"] = list(h["warmup"])
    for rule in axes.get("warmup", [h["warmup"]]):
        _check_warmup(rule)
    m = h["batch_multiple"]
    for b in axes.get("batch_size", [h["batch_size"]]):  # an axis batch is used as is
        if b % m:  # batch_for halves it, keeping the multiple only
            where = f" = {h['batch_size']}: {b}" if "batch_size" in axes else f" = {b}"
            raise UserError(
                f"grid [hparams] batch_size{where} is not a multiple of batch_multiple = {m}; "
                f"use {m * max(1, round(b / m))} or lower batch_multiple"
            )
    if h["batch_per"] not in ("cell", "budget"):
        raise UserError(f"grid [hparams] batch_per = {h['batch_per']!r}; use cell or budget")
    points = [Point()]
    for key, values in axes.items():
        points = [replace(p, **{key: v}) for p in points for v in values]
    scalar = defaults_of(Hparams)  # an axis key's scalar is never used: every point sets it
    scalars = {**h, **{k: scalar[k] for k in AXIS_KEYS if isinstance(h[k], list)}}
    return typed(Hparams, scalars), tuple(points)


def _axis_values(key: str, values: Any, example: list, integer: bool = False) -> list[Any]:
    if not isinstance(values, list) or not values:
        raise UserError(f"grid [hparams] {key} = {values!r}: give a non-empty list, e.g. {example}")
    for v in values:
        ok = not isinstance(v, bool) and isinstance(v, int | float) and v > 0
        if not ok or (integer and not float(v).is_integer()):
            kind = "positive integer" if integer else "positive number"
            raise UserError(f"grid [hparams] {key}: {v!r} is not a {kind}")
    if len(set(values)) != len(values):
        raise UserError(f"grid [hparams] {key} = {values}: remove the repeated value")
    return [int(v) if integer else float(v) for v in values]


def _check_warmup(rule: Any) -> None:
    """'params', a whole number of steps >= 0, or a fraction of the steps in (0, 1)."""
    if rule == "params":
        return
    if (
        isinstance(rule, bool)
        or not isinstance(rule, int | float)
        or not math.isfinite(rule)
        or rule < 0
        or (isinstance(rule, float) and rule >= 1)  # 1.0: one step, or all of them? say which
    ):
        raise UserError(
            f"grid [hparams] warmup = {rule!r}: use 'params', an integer number of steps (e.g. "
            f"{int(rule) if isinstance(rule, float) and math.isfinite(rule) and rule >= 1 else 100}"
            f") or a fraction of the steps in (0, 1) (e.g. 0.05)"
        )


def check_lr_cap(name: str, h: Hparams, points: tuple[Point, ...]) -> None:
    """With lr_exp = 0 (one lr for every width: the muP default) a cap below `lr` would replace
    it in every cell without a word; refuse that. An lr axis has no cap (`point_hparams`)."""
    if h.lr_exp == 0 and 0 < h.lr_max < h.lr and any(p.lr is None for p in points):
        raise UserError(
            f"grid {name!r}: [hparams] lr = {h.lr:g} is above lr_max = {h.lr_max:g} with "
            f"lr_exp = 0 (one lr for every width), so every cell would train at {h.lr_max:g}; "
            f"set lr_max >= {h.lr:g} (or 0: no cap) or lower lr"
        )


def point_hparams(h: Hparams, point: Point) -> Hparams:
    """[hparams] with one axis point's values in place of the lists. An absolute `lr` turns the
    width rule off; an axis `batch_size` is used as is (no halving, not shared per budget)."""
    if point.lr is not None:
        h = replace(h, lr=point.lr, lr_exp=0.0, lr_max=0.0)
    if point.batch_size is not None:
        b = point.batch_size
        h = replace(h, batch_size=b, min_batch_size=b, batch_multiple=1, batch_per="cell")
    if point.warmup is not None:
        h = replace(h, warmup=point.warmup)
    return h


def lr_for_width(h: Hparams, d_model: int) -> float:
    """Peak learning rate for a width: lr * (lr_width / d_model)^lr_exp, capped at lr_max."""
    lr = h.lr * (h.lr_width / d_model) ** h.lr_exp
    return min(lr, h.lr_max) if h.lr_max > 0 else lr


def min_batch(h: Hparams) -> int:
    """The smallest batch the rule may use (min_batch_size; 0 means batch_size: no halving)."""
    return max(h.min_batch_size or h.batch_size, h.batch_multiple)


def batch_for(h: Hparams, tokens: float, seq_len: int) -> int:
    """Batch size: halve `batch_size` (keeping `batch_multiple`) until >= min_steps steps."""
    batch, floor = h.batch_size, min_batch(h)
    while tokens / (batch * seq_len) < h.min_steps and batch // 2 >= floor:
        if (batch // 2) % h.batch_multiple:
            break
        batch //= 2
    return batch


def warmup_for(h: Hparams, n_total: int, steps: int, tokens_per_step: int) -> int:
    """Warmup steps (see the module docstring); at most steps - 2, so that the cosine ends at
    min_lr_ratio on the last step (`scaling.validation`)."""
    rule = h.warmup
    if rule == "params":
        warm = math.ceil(n_total / tokens_per_step)
        warm = min(warm, int(h.warmup_max_frac * steps))
    elif isinstance(rule, float) and 0 < rule < 1:
        warm = round(rule * steps)
    else:
        warm = int(rule)
    return max(0, min(warm, steps - 2))
