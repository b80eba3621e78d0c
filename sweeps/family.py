"""Model-shape families and per-size hyperparameter rules for sweep grids.

A grid never lists hand-written shapes unless it wants to: a *family rule* turns a requested
parameter range [n_min, n_max] and a count into concrete (d_model, n_layers, n_heads) shapes.

Rules (the `[shapes]` table of a grid):
- `aspect` (default): d_model is a multiple of `multiple` (default: head_dim), n_heads =
  d_model / head_dim (fixed head dim), n_layers = max(min_layers, round(d_model / aspect))
  (fixed aspect ratio d_model / n_layers). Candidates are enumerated by width and the `count`
  shapes whose N (total or non-embedding, `count_by`) lie closest to log-spaced targets between
  n_min and n_max are kept.
- `list`: explicit shapes, `list = [{d_model = 64, n_layers = 2, n_heads = 4}, ...]`.
- `gpt3`: the 8 shapes of Brown et al. 2020 (Table 2.1) shrunk by `scale` (d_model, d_ff and
  the head dim times `scale`, head dim >= `head_dim`) and `depth_scale` (n_layers, default 1);
  `sizes` picks a subset by preset name.

Per-size hyperparameters (the `[hparams]` table), see `lr_for_width` and `warmup_for`:
- lr = lr * (lr_width / d_model) ** lr_exp, capped at lr_max (Adam's best lr falls roughly as
  1 / width; lr_exp = 1 is the muP-style hidden-layer rule).
- batch: `batch_size`, halved (never below `min_batch_size`, default: no halving; always a
  multiple of `batch_multiple`) until a cell gets at least `min_steps` steps. With
  batch_per = "budget" (isoflop) every cell of a budget shares the batch that gives its largest
  model `min_steps`, so the batch grows with compute and is never confounded with N.
- warmup: "params" = warmup tokens equal to N_total (Porian et al. 2024: a short warmup for
  small models; long fixed warmups bias small-scale laws), capped at `warmup_max_frac` of the
  steps; an integer = fixed steps; a float in (0, 1) = fraction of the steps.

Hyperparameter axes (sweeps.grid.hparam_points): `lr = [..]` (absolute peak lrs, the width rule
off), `lr_factors = [..]` (factors on the width rule's lr), `batch_size = [..]` (fixed batches,
no halving) and `warmup = [..]` (any mix of the rules above) multiply every cell of any grid kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scaling.config import PRESETS, ModelConfig
from scaling.errors import UserError

GPT3_SIZES = (
    "gpt3-small",
    "gpt3-medium",
    "gpt3-large",
    "gpt3-xl",
    "gpt3-2.7b",
    "gpt3-6.7b",
    "gpt3-13b",
    "gpt3-175b",
)
SHAPE_DEFAULTS: dict[str, Any] = dict(
    rule="aspect",
    aspect=16.0,
    head_dim=8,
    multiple=0,
    min_layers=1,
    ff_mult=4.0,
    n_min=0.0,
    n_max=0.0,
    count=5,
    count_by="total",
    list=[],
    scale=1.0,
    depth_scale=0.0,
    sizes=[],
)
HPARAM_DEFAULTS: dict[str, Any] = dict(
    lr=3e-3,
    lr_width=64.0,
    lr_exp=1.0,
    lr_max=1e-2,
    batch_size=32,
    min_batch_size=0,
    batch_multiple=1,
    min_steps=100,
    batch_per="cell",
    warmup="params",
    warmup_max_frac=0.1,
    lr_factors=[],
)
AXIS_KEYS = ("lr", "batch_size", "warmup")  # keys of [hparams] that may be lists (grid axes)


@dataclass(frozen=True)
class Shape:
    """Model dimensions chosen by a family rule (merged over the grid's base model)."""

    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int = 0
    name: str = ""  # e.g. the GPT-3 preset a shape was shrunk from

    @property
    def label(self) -> str:
        dims = f"d{self.d_model}-l{self.n_layers}-h{self.n_heads}"
        return f"{self.name}:{dims}" if self.name else dims

    def fields(self) -> dict[str, int]:
        return dict(
            d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads, d_ff=self.d_ff
        )


def n_params(model: ModelConfig, count_by: str = "total") -> int:
    """N of a model: total or non-embedding parameters (scaling.flops conventions)."""
    from scaling.flops import param_counts

    counts = param_counts(model)
    return counts.total if count_by == "total" else counts.nonembedding


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


def check_table(table: Any, defaults: dict[str, Any], section: str) -> dict[str, Any]:
    """Fill defaults and reject unknown keys and out-of-range numbers of a grid table."""
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
        if isinstance(value, list) and key in AXIS_KEYS and defaults is HPARAM_DEFAULTS:
            continue  # a hyperparameter axis, checked by sweeps.grid.hparam_points
        if isinstance(default, list) and not isinstance(value, list):
            raise UserError(f"grid [{section}] {key} = {value!r}: expected a list")
        if isinstance(default, bool) or not isinstance(default, int | float):
            continue  # strings, lists and mixed-type keys are checked where they are used
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
            raise UserError(
                f"grid [{section}] {key} = {value!r}: must be between {lo:g} and {hi:g}"
            )
        if isinstance(default, int) and not float(value).is_integer():
            raise UserError(
                f"grid [{section}] {key} = {value!r}: expected an integer, e.g. {key} = {default}"
            )
    return {**defaults, **table}


def family_shapes(
    spec: dict[str, Any], base_model: dict[str, Any], n_min: float, n_max: float, count: int
) -> list[Shape]:
    """`count` shapes of the aspect-ratio family whose N is log-spaced over [n_min, n_max]."""
    head_dim = int(spec["head_dim"])
    multiple = int(spec["multiple"]) or head_dim
    aspect, count_by = float(spec["aspect"]), spec["count_by"]
    if head_dim <= 0 or multiple % head_dim or aspect <= 0:
        raise UserError(
            f"grid [shapes]: multiple = {multiple} must be a positive multiple of head_dim = "
            f"{head_dim}, and aspect = {aspect} > 0, so that heads divide d_model"
        )
    if count_by not in ("total", "nonembed"):
        raise UserError(f"grid [shapes]: count_by = {count_by!r}; use 'total' or 'nonembed'")
    if not 0 < n_min <= n_max or count < 1:
        raise UserError(
            f"grid [shapes]: need 0 < n_min <= n_max and count >= 1 "
            f"(got n_min = {n_min:g}, n_max = {n_max:g}, count = {count})"
        )
    candidates: list[tuple[float, Shape]] = []
    width = multiple
    while True:
        layers = max(int(spec["min_layers"]), round(width / aspect))
        shape = Shape(width, layers, width // head_dim, _ff(spec, width))
        n = n_params(ModelConfig(**{**base_model, **shape.fields()}), count_by)
        candidates.append((n, shape))
        if n > 2 * n_max or len(candidates) > 4096:
            break
        width += multiple
    if count == 1:
        targets = [math.sqrt(n_min * n_max)]
    else:
        ratio = (n_max / n_min) ** (1 / (count - 1))
        targets = [n_min * ratio**i for i in range(count)]
    chosen: list[tuple[float, Shape]] = []
    for target in targets:
        free = [c for c in candidates if c not in chosen]
        if not free:
            break
        chosen.append(min(free, key=lambda c: abs(math.log(c[0] / target))))
    chosen.sort(key=lambda c: c[0])
    distinct = {c[1] for c in chosen}
    lo, hi = chosen[0][0], chosen[-1][0]
    spans = count == 1 or (lo <= 2 * n_min and hi >= n_max / 2)
    if len(distinct) < count or not spans:
        raise UserError(
            f"grid [shapes]: the aspect rule (aspect {aspect:g}, head_dim {head_dim}, d_model "
            f"multiple of {multiple}) cannot place {count} distinct shapes between N = "
            f"{n_min:.3g} and {n_max:.3g} ({count_by}); widen the range, lower `count` or "
            f"`multiple`"
        )
    return [c[1] for c in chosen]


def _ff(spec: dict[str, Any], width: int) -> int:
    mult = float(spec["ff_mult"])
    return 0 if mult == 4.0 else max(1, round(mult * width))


def list_shapes(spec: dict[str, Any]) -> list[Shape]:
    """Explicit shapes from `[shapes] list = [{d_model, n_layers, n_heads[, d_ff]}, ...]`."""
    shapes = []
    for i, item in enumerate(spec["list"]):
        try:
            shapes.append(
                Shape(
                    int(item["d_model"]),
                    int(item["n_layers"]),
                    int(item["n_heads"]),
                    int(item.get("d_ff", 0)),
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(
                f"grid [shapes] list[{i}] = {item!r}: each shape needs integer d_model, "
                f"n_layers and n_heads (d_ff optional)"
            ) from e
    if not shapes:
        raise UserError("grid [shapes] rule = 'list' needs a non-empty `list` of shapes")
    return shapes


def gpt3_shapes(spec: dict[str, Any]) -> list[Shape]:
    """The GPT-3 paper's shapes shrunk uniformly in width (and optionally depth).

    d_model' = d_model * scale, rounded to a multiple of the head dim, whose size is the preset's
    head dim * scale (at least `head_dim`, default 8); d_ff' = 4 d_model'; n_layers' = n_layers *
    depth_scale (default 1: depth kept, so every size's non-embedding N shrinks by the same
    factor scale^2 and the ladder keeps its size ratios).
    """
    scale = float(spec["scale"])
    depth = float(spec["depth_scale"]) or 1.0
    if not (0 < scale <= 1 and 0 < depth <= 1):
        raise UserError(
            f"grid [shapes]: scale = {scale:g} and depth_scale = {depth:g} must lie in (0, 1]"
        )
    names = [s if s.startswith("gpt3-") else f"gpt3-{s}" for s in spec["sizes"]] or list(GPT3_SIZES)
    shapes = []
    for name in names:
        if name not in GPT3_SIZES:
            raise UserError(f"grid [shapes] sizes: {name!r} is not one of {', '.join(GPT3_SIZES)}")
        p = PRESETS[name]
        head = max(int(spec["head_dim"]), round(p["d_model"] / p["n_heads"] * scale / 2) * 2)
        d_model = max(head, round(p["d_model"] * scale / head) * head)
        layers = max(1, round(p["n_layers"] * depth))
        shapes.append(Shape(d_model, layers, d_model // head, 4 * d_model, name=name))
    return shapes


def lr_for_width(h: dict[str, Any], d_model: int) -> float:
    """Peak learning rate for a width: lr * (lr_width / d_model)^lr_exp, capped at lr_max."""
    lr = float(h["lr"]) * (float(h["lr_width"]) / d_model) ** float(h["lr_exp"])
    return min(lr, float(h["lr_max"])) if float(h["lr_max"]) > 0 else lr


def min_batch(h: dict[str, Any]) -> int:
    """The smallest batch the rule may use (min_batch_size; 0 means batch_size: no halving)."""
    return max(int(h["min_batch_size"]) or int(h["batch_size"]), int(h["batch_multiple"]))


def batch_for(h: dict[str, Any], tokens: float, seq_len: int) -> int:
    """Batch size: halve `batch_size` (keeping `batch_multiple`) until >= min_steps steps."""
    mult = int(h["batch_multiple"])
    batch = int(h["batch_size"])
    floor = min_batch(h)
    while tokens / (batch * seq_len) < int(h["min_steps"]) and batch // 2 >= floor:
        if (batch // 2) % mult:
            break
        batch //= 2
    return batch


def warmup_for(h: dict[str, Any], n_total: int, steps: int, tokens_per_step: int) -> int:
    """Warmup steps (see module docstring); always < steps."""
    rule = h["warmup"]
    if rule == "params":
        warm = math.ceil(n_total / tokens_per_step)
        warm = min(warm, int(float(h["warmup_max_frac"]) * steps))
    elif (
        isinstance(rule, bool)
        or not isinstance(rule, int | float)
        or not math.isfinite(rule)
        or rule < 0
        or (rule >= 1 and rule != int(rule))
    ):
        raise UserError(
            f"grid [hparams] warmup = {rule!r}: use 'params', an integer number of steps or a "
            f"fraction in (0, 1)"
        )
    elif isinstance(rule, float) and 0 < rule < 1:
        warm = round(rule * steps)
    else:
        warm = int(rule)
    return max(0, min(warm, steps - 1))


def hparam_points(h: dict[str, Any]) -> list[dict[str, Any]]:
    """The [hparams] axes as the list of their grid points ([{}] when the grid has none).

    A point maps `lr` (absolute), `lr_factor`, `batch_size` and/or `warmup` to one value each;
    the points are the cartesian product of the axes.
    """
    axes: dict[str, list[Any]] = {}
    factors = h["lr_factors"]
    if not isinstance(factors, list):
        raise UserError(f"grid [hparams] lr_factors = {factors!r}: give a list, e.g. [0.5, 1, 2]")
    if isinstance(h["lr"], list):
        if factors:
            raise UserError(
                "grid [hparams]: give either lr = [..] (absolute lrs) or lr_factors = [..] "
                "(factors on the per-width lr), not both"
            )
        axes["lr"] = _axis_values("lr", h["lr"], [1e-3, 3e-3, 1e-2])
    elif factors:
        axes["lr_factor"] = _axis_values("lr_factors", factors, [0.5, 1, 2])
    if isinstance(h["batch_size"], list):
        axes["batch_size"] = _axis_values("batch_size", h["batch_size"], [16, 32], integer=True)
    if isinstance(h["warmup"], list):
        if not h["warmup"]:
            raise UserError('grid [hparams] warmup = []: give at least one rule, e.g. ["params"]')
        axes["warmup"] = list(h["warmup"])
    points: list[dict[str, Any]] = [{}]
    for key, values in axes.items():
        points = [{**p, key: v} for p in points for v in values]
    return points


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


def point_hparams(h: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    """[hparams] with one axis point's values in place of the lists. An absolute `lr` turns the
    width rule off; an axis `batch_size` is used as is (no halving, not shared per budget)."""
    out = dict(h)
    if "lr" in point:
        out.update(lr=point["lr"], lr_exp=0.0, lr_max=0.0)
    if "batch_size" in point:
        out.update(batch_size=point["batch_size"], min_batch_size=point["batch_size"])
        out.update(batch_multiple=1, batch_per="cell")
    if "warmup" in point:
        out["warmup"] = point["warmup"]
    return out
