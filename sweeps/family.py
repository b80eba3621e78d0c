"""Model-shape families of sweep grids: the [shapes] table, typed (`ShapeSpec`), and its rules.

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

The per-size hyperparameters and their axes (the [hparams] table) live in sweeps.hparams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from scaling.config import PRESETS, ModelConfig
from scaling.errors import UserError
from sweeps.tables import check_table, defaults_of, typed

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
SHAPE_RULES = ("aspect", "list", "gpt3")
RULE_KEYS = {  # the [shapes] keys each rule reads (besides `rule`)
    "aspect": {"aspect", "head_dim", "multiple", "min_layers", "ff_mult", "n_min", "n_max"}
    | {"count", "count_by"},
    "list": {"list"},
    "gpt3": {"scale", "depth_scale", "sizes", "head_dim"},
}
SHAPE_KEYS = ("d_model", "n_layers", "n_heads", "d_ff")


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


@dataclass(frozen=True)
class ShapeSpec:
    """[shapes]: the family rule and its parameters (the module docstring documents the rules)."""

    rule: str = "aspect"
    aspect: float = 16.0
    head_dim: int = 8
    multiple: int = 0
    min_layers: int = 1
    ff_mult: float = 4.0
    n_min: float = 0.0
    n_max: float = 0.0
    count: int = 5
    count_by: str = "total"
    list: tuple[Shape, ...] = ()
    scale: float = 1.0
    depth_scale: float = 0.0
    sizes: tuple[str, ...] = ()


def parse_shapes(table: Any) -> ShapeSpec:
    """[shapes], with the parameters of its rule checked (the N range is checked where it is
    used: centred isoflop grids ignore n_min and n_max)."""
    given = set(table) if isinstance(table, dict) else set()
    table = check_table(table, defaults_of(ShapeSpec), "shapes")
    rule = table["rule"]
    if rule not in SHAPE_RULES:
        raise UserError(f"grid [shapes] rule = {rule!r}; choose aspect, list or gpt3")
    shapes, sizes = (), ()
    if rule == "aspect":
        _check_aspect(table)
    elif rule == "list":
        shapes = _list_shapes(table["list"])
    else:
        sizes = _gpt3_sizes(table)
    for key in sorted(given - RULE_KEYS[rule] - {"rule"}):  # it would be silently ignored
        owners = " or ".join(r for r in SHAPE_RULES if key in RULE_KEYS[r])
        raise UserError(
            f"grid [shapes] {key} = {table[key]!r}: rule = {rule!r} does not read it (only "
            f"rule = {owners} does); remove it or change the rule"
        )
    return typed(ShapeSpec, table, list=shapes, sizes=sizes)


def _check_aspect(table: dict[str, Any]) -> None:
    head_dim = int(table["head_dim"])
    multiple = int(table["multiple"]) or head_dim
    aspect, count_by = float(table["aspect"]), table["count_by"]
    if head_dim <= 0 or multiple % head_dim or aspect <= 0:
        raise UserError(
            f"grid [shapes]: multiple = {multiple} must be a positive multiple of head_dim = "
            f"{head_dim}, and aspect = {aspect} > 0, so that heads divide d_model"
        )
    if count_by not in ("total", "nonembed"):
        raise UserError(f"grid [shapes]: count_by = {count_by!r}; use 'total' or 'nonembed'")


def _list_shapes(items: list[Any]) -> tuple[Shape, ...]:
    """Explicit shapes from `[shapes] list = [{d_model, n_layers, n_heads[, d_ff]}, ...]`."""
    shapes = []
    for i, item in enumerate(items):
        ok = isinstance(item, dict) and set(SHAPE_KEYS[:3]) <= set(item) <= set(SHAPE_KEYS)
        if not ok or not all(isinstance(v, int) and not isinstance(v, bool) for v in item.values()):
            raise UserError(
                f"grid [shapes] list[{i}] = {item!r}: each shape needs integer d_model, "
                f"n_layers and n_heads (d_ff optional), and no other key"
            )
        shapes.append(Shape(*(int(item.get(k, 0)) for k in SHAPE_KEYS)))
    if not shapes:
        raise UserError("grid [shapes] rule = 'list' needs a non-empty `list` of shapes")
    return tuple(shapes)


def _gpt3_sizes(table: dict[str, Any]) -> tuple[str, ...]:
    """The GPT-3 sizes a gpt3 rule shrinks (all 8 when `sizes` is empty), scale checked."""
    scale = float(table["scale"])
    depth = float(table["depth_scale"]) or 1.0
    if not (0 < scale <= 1 and 0 < depth <= 1):
        raise UserError(
            f"grid [shapes]: scale = {scale:g} and depth_scale = {depth:g} must lie in (0, 1]"
        )
    names = [
        s if isinstance(s, str) and s.startswith("gpt3-") else f"gpt3-{s}" for s in table["sizes"]
    ]
    for name in names:
        if name not in GPT3_SIZES:
            raise UserError(f"grid [shapes] sizes: {name!r} is not one of {', '.join(GPT3_SIZES)}")
    return tuple(names) or GPT3_SIZES


def shapes_for(
    spec: ShapeSpec, base_model: ModelConfig, n_range: tuple[float, float]
) -> list[Shape]:
    """The shapes of `spec`'s rule; the aspect rule places them over `n_range` (min N, max N)."""
    if spec.rule == "list":
        return list(spec.list)
    if spec.rule == "gpt3":
        return gpt3_shapes(spec)
    return family_shapes(spec, base_model, n_range[0], n_range[1], spec.count)


def n_params(model: ModelConfig, count_by: str = "total") -> int:
    """N of a model: total or non-embedding parameters (scaling.flops conventions)."""
    from scaling.flops import param_counts

    counts = param_counts(model)
    return counts.total if count_by == "total" else counts.nonembedding


def family_shapes(
    spec: ShapeSpec, base_model: ModelConfig, n_min: float, n_max: float, count: int
) -> list[Shape]:
    """`count` shapes of the aspect-ratio family whose N is log-spaced over [n_min, n_max]."""
    head_dim = spec.head_dim
    multiple = spec.multiple or head_dim
    aspect, count_by = spec.aspect, spec.count_by
    if not 0 < n_min <= n_max or count < 1:
        raise UserError(
            f"grid [shapes]: need 0 < n_min <= n_max and count >= 1 "
            f"(got n_min = {n_min:g}, n_max = {n_max:g}, count = {count})"
        )
    candidates: list[tuple[float, Shape]] = []
    width = multiple
    while True:
        layers = max(spec.min_layers, round(width / aspect))
        shape = Shape(width, layers, width // head_dim, _ff(spec, width))
        n = n_params(replace(base_model, **shape.fields()), count_by)
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


def _ff(spec: ShapeSpec, width: int) -> int:
    return 0 if spec.ff_mult == 4.0 else max(1, round(spec.ff_mult * width))


def gpt3_shapes(spec: ShapeSpec) -> list[Shape]:
    """The GPT-3 paper's shapes shrunk uniformly in width (and optionally depth).

    d_model' = d_model * scale, rounded to a multiple of the head dim, whose size is the preset's
    head dim * scale (at least `head_dim`, default 8); d_ff' = 4 d_model'; n_layers' = n_layers *
    depth_scale (default 1: depth kept, so every size's non-embedding N shrinks by the same
    factor scale^2 and the ladder keeps its size ratios).
    """
    scale, depth = spec.scale, spec.depth_scale or 1.0
    shapes = []
    for name in spec.sizes:
        p = PRESETS[name]
        head = max(spec.head_dim, round(p["d_model"] / p["n_heads"] * scale / 2) * 2)
        d_model = max(head, round(p["d_model"] * scale / head) * head)
        layers = max(1, round(p["n_layers"] * depth))
        shapes.append(Shape(d_model, layers, d_model // head, 4 * d_model, name=name))
    return shapes
