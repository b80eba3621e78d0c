"""Checking a grid's tables against the typed defaults of its dataclasses: unknown keys, types,
finite numbers and their ranges, then the typed values. Shared by sweeps.spec, sweeps.family and
sweeps.hparams. No JAX.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from scaling.errors import UserError

# Bounds of the numeric grid keys (inclusive). `count` is bounded so that a typo (1e9) fails
# at once instead of enumerating a billion shapes.
_RANGES: dict[str, tuple[float, float]] = dict(
    aspect=(1e-9, math.inf),
    head_dim=(1, 65536),
    multiple=(0, 1 << 20),
    min_layers=(1, 10_000),
    ff_mult=(1e-9, 1e6),
    n_min=(0, 1e16),
    n_max=(0, 1e16),
    count=(1, 1000),
    scale=(1e-9, 1e6),
    depth_scale=(0, 1e6),
    lr=(1e-12, 1e6),
    lr_width=(1e-9, math.inf),
    lr_max=(0, 1e6),  # 0: no cap
    batch_size=(1, 1 << 24),
    min_batch_size=(0, 1 << 24),
    batch_multiple=(1, 1 << 24),
    min_steps=(0, 1e9),
    warmup_max_frac=(0, 1),
    tolerance=(0, 1),
    center_tokens_per_param=(0, 1e9),
    window=(1 + 1e-9, 1e12),
    tokens_per_param=(1e-9, 1e12),
)


def defaults_of(cls: type) -> dict[str, Any]:
    """A dataclass's fields and their defaults: the keys a grid table may set."""
    return {f.name: f.default for f in fields(cls)}


def check_table(
    table: Any, defaults: dict[str, Any], section: str, axes: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Reject unknown keys and out-of-range numbers of a grid table; fill in the defaults.
    A list for one of `axes` is a hyperparameter axis (checked by sweeps.hparams)."""
    if not isinstance(table, dict):
        raise UserError(
            f"grid [{section}] = {table!r}: expected a table, e.g. [{section}] with its keys"
        )
    unknown = sorted(set(table) - set(defaults))
    if unknown:
        raise UserError(
            f"grid [{section}]: unknown key {unknown[0]!r}; "
            f"valid keys: {', '.join(sorted(defaults))}"
        )
    for key, value in table.items():
        default = defaults[key]
        if isinstance(value, list) and key in axes:
            continue
        if isinstance(default, tuple) and not isinstance(value, list):
            raise UserError(f"grid [{section}] {key} = {value!r}: expected a list")
        if isinstance(default, bool) or not isinstance(default, int | float):
            continue  # strings, lists and mixed-type keys are checked where they are parsed
        _check_number(section, key, value, default)
    return {**defaults, **table}


def _check_number(section: str, key: str, value: Any, default: int | float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(
            f"grid [{section}] {key} = {value!r}: expected a number, e.g. {key} = {default!r}"
        )
    if not math.isfinite(value):
        raise UserError(
            f"grid [{section}] {key} = {value!r}: expected a finite number, "
            f"e.g. {key} = {default!r}"
        )
    lo, hi = _RANGES.get(key, (-math.inf, math.inf))
    if not lo <= value <= hi:
        raise UserError(f"grid [{section}] {key} = {value!r}: must be between {lo:g} and {hi:g}")
    if isinstance(default, int) and not float(value).is_integer():
        raise UserError(
            f"grid [{section}] {key} = {value!r}: expected an integer, e.g. {key} = {default}"
        )


def typed(cls: type, table: dict[str, Any], **parsed: Any) -> Any:
    """A dataclass from a checked table: numbers take their default's type (ints stay whole
    numbers, floats widen); `parsed` gives the fields parsed by hand."""
    kwargs = {}
    for f in fields(cls):
        value, default = table[f.name], f.default
        if f.name in parsed:
            value = parsed[f.name]
        elif isinstance(default, int) and not isinstance(default, bool):
            value = int(value)
        elif isinstance(default, float):
            value = float(value)
        kwargs[f.name] = value
    return cls(**kwargs)
