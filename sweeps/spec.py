"""The typed grid spec: a grid TOML (as a dict) -> frozen dataclasses, validated at load.

`parse_grid` checks every table of a grid (unknown keys, types, ranges, the shape rule, the
hyperparameter rules and axes, seeds, [base] and [[overrides]]) and raises `UserError` naming
the key and the fix; planning (sweeps.grid), the shape families (sweeps.family) and the
hyperparameter rules (sweeps.hparams) then work on typed values only.
The README's grid reference documents every key. No JAX.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

from scaling import config as C
from scaling.errors import UserError
from sweeps.family import ShapeSpec, parse_shapes
from sweeps.hparams import Hparams, Point, check_lr_cap, parse_hparams
from sweeps.tables import check_table, defaults_of, typed

KINDS = ("isoflop", "nxd", "ladder")
TOP_KEYS = {"name", "kind", "description", "seeds", "base", "shapes", "hparams", "overrides"}
PLANNED_KEYS = ("train.steps", "train.batch_size", "train.seed")  # not overridable per cell


@dataclass(frozen=True)
class Isoflop:
    """[isoflop]: every cell spends its budget, tokens = C / (training FLOPs per token)."""

    budgets: tuple[float, ...] = ()
    tolerance: float = 0.01
    center_tokens_per_param: float = 0.0  # > 0: per-budget shapes around N_opt (see family)
    window: float = 8.0


@dataclass(frozen=True)
class Nxd:
    """[nxd]: a Kaplan-style factorial, every shape x every token count D."""

    tokens: tuple[int, ...] = ()
    tolerance: float = 0.01


@dataclass(frozen=True)
class Ladder:
    """[ladder]: every shape trained on tokens_per_param x N_total tokens."""

    tokens_per_param: float = 20.0
    tolerance: float = 0.01


STUDIES: dict[str, type] = {"isoflop": Isoflop, "nxd": Nxd, "ladder": Ladder}


@dataclass(frozen=True)
class Override:
    """One [[overrides]] table: config fields (`"section.field" = value`) set on every cell
    whose coordinates match `where`."""

    where: dict[str, Any]
    values: dict[str, Any]


@dataclass(frozen=True)
class GridSpec:
    """A whole grid, validated. `raw` is the TOML as loaded (kept in plan.json)."""

    name: str
    kind: str
    study: Isoflop | Nxd | Ladder
    shapes: ShapeSpec
    hparams: Hparams
    points: tuple[Point, ...]
    seeds: tuple[int, ...]
    base: dict[str, dict[str, Any]]  # [base.<section>] tables of run-config fields
    base_model: C.ModelConfig  # [base.model] (GPT-3 block style for the gpt3 rule), no shape yet
    overrides: tuple[Override, ...]
    raw: dict[str, Any]


def parse_grid(raw: dict[str, Any]) -> GridSpec:
    """Validate a grid (its TOML as a dict, `name` filled in) into a GridSpec."""
    unknown = sorted(set(raw) - TOP_KEYS - set(KINDS))
    if unknown:
        raise UserError(f"grid: unknown key {unknown[0]!r}; valid: {', '.join(sorted(TOP_KEYS))}")
    name, kind = str(raw["name"]), raw.get("kind", "")
    if kind not in KINDS:
        raise UserError(f"grid {name!r}: kind = {kind!r}; choose one of {', '.join(KINDS)}")
    stray = [k for k in KINDS if k != kind and k in raw]
    if stray:  # its values would be silently ignored (e.g. budgets in a ladder grid)
        raise UserError(
            f"grid {name!r}: kind = {kind!r} but the grid has a [{stray[0]}] table, which only "
            f'kind = "{stray[0]}" reads; remove [{stray[0]}] or set kind = "{stray[0]}"'
        )
    study = _parse_study(kind, raw.get(kind, {}))
    shapes = parse_shapes(raw.get("shapes", {}))
    _check_centred(name, study, raw.get(kind, {}), shapes.rule)
    hparams, points = parse_hparams(raw.get("hparams", {}))
    if hparams.batch_per == "budget" and kind != "isoflop":  # it has no budgets to share
        raise UserError(
            f'grid {name!r}: [hparams] batch_per = "budget" shares one batch per compute '
            f'budget, which only kind = "isoflop" has; remove it (kind = {kind!r})'
        )
    base = _parse_base(raw)
    base_model = _base_model(base, shapes.rule)
    hparams = _mup_lr_rule(name, hparams, raw.get("hparams", {}), base_model.param)
    _check_mup_ff(name, shapes, base_model)
    check_lr_cap(name, hparams, points)
    return GridSpec(
        name=name,
        kind=kind,
        study=study,
        shapes=shapes,
        hparams=hparams,
        points=points,
        seeds=_parse_seeds(raw.get("seeds", [0]), name),
        base=base,
        base_model=base_model,
        overrides=_parse_overrides(raw.get("overrides", [])),
        raw=raw,
    )


def _check_mup_ff(name: str, shapes: Any, base_model: C.ModelConfig) -> None:
    """muP scales every width axis by one m = d_model / base_width (scaling.mup), so d_ff must
    grow with d_model: explicit shapes whose d_ff / d_model differ would mis-scale the MLP's
    down-projection (its fan-in does not grow as m says)."""
    if base_model.param != "mup" or shapes.rule != "list":
        return
    models = {s.label: replace(base_model, **s.fields()) for s in shapes.list}
    ratio = {k: m.ff_dim / m.d_model for k, m in models.items()}
    if len(set(ratio.values())) > 1:
        got = ", ".join(f"{k}: {v:g}" for k, v in ratio.items())
        raise UserError(
            f'grid {name!r}: model.param = "mup" needs one d_ff / d_model across the shapes, '
            f"since muP scales the MLP by d_model / base_width; the list has {got}: give every "
            f"shape d_ff = k x d_model (or leave d_ff out: 4 x d_model)"
        )


def _check_centred(name: str, study: Any, table: dict[str, Any], rule: str) -> None:
    """A centred isoflop grid places aspect-rule shapes around each budget's N_opt: `window`
    alone, or centring with a list/gpt3 rule (fixed shapes), would be silently ignored."""
    if not isinstance(study, Isoflop):
        return
    if study.center_tokens_per_param <= 0 and "window" in table:
        raise UserError(
            f"grid {name!r}: [isoflop] window = {study.window:g} is read only with "
            f"center_tokens_per_param > 0 (e.g. 20); set it or remove window"
        )
    if study.center_tokens_per_param > 0 and rule != "aspect":
        raise UserError(
            f"grid {name!r}: [isoflop] center_tokens_per_param places [shapes] rule = "
            f'"aspect" shapes around each budget; rule = {rule!r} has fixed shapes: remove '
            f"center_tokens_per_param or use the aspect rule"
        )


def _mup_lr_rule(name: str, h: Hparams, table: Any, param: str) -> Hparams:
    """Under muP the model scales each layer's lr by width itself (scaling.mup): the grid's
    width rule must not scale it again, so lr_exp defaults to 0 there and another value is
    refused (hidden-layer lr would fall as 1/d^2)."""
    if param != "mup":
        return h
    given = isinstance(table, dict) and "lr_exp" in table
    if given and h.lr_exp != 0:
        raise UserError(
            f'grid {name!r}: [hparams] lr_exp = {h.lr_exp} with model.param = "mup": muP '
            f"already scales each layer's lr by width (hidden layers x base_width / d_model), "
            f"so the width rule would scale it twice; set lr_exp = 0 (the default under muP) "
            f'or use model.param = "sp"'
        )
    return replace(h, lr_exp=0.0)


def _parse_study(kind: str, table: Any) -> Isoflop | Nxd | Ladder:
    """The kind's table ([isoflop], [nxd] or [ladder])."""
    table = check_table(table, defaults_of(STUDIES[kind]), kind)
    if kind == "isoflop":
        budgets = _positive_list(table, "budgets", kind)
        return typed(Isoflop, table, budgets=tuple(float(b) for b in budgets))
    if kind == "nxd":
        tokens = _positive_list(table, "tokens", kind)
        return typed(Nxd, table, tokens=tuple(int(d) for d in tokens))
    return typed(Ladder, table)


def _positive_list(spec: dict[str, Any], key: str, kind: str) -> list[float]:
    values = spec[key]
    if not isinstance(values, list) or not values:
        raise UserError(f"grid [{kind}] {key} is empty: give a list, e.g. {key} = [1e11, 3e11]")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1e30:
            raise UserError(
                f"grid [{kind}] {key}: {v!r} is not a positive finite number (below 1e30)"
            )
    return values


def _parse_seeds(seeds: Any, name: str) -> tuple[int, ...]:
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**63 for s in seeds)
    ):
        raise UserError(
            f"grid {name!r}: seeds = {seeds!r}; give a non-empty list of integers >= 0 "
            f"(and < 2^63, the PRNG key's range)"
        )
    return tuple(seeds)


def _parse_base(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """[base.<section>] tables, each field checked against its run-config section."""
    base = raw.get("base", {})
    if not isinstance(base, dict) or not all(isinstance(v, dict) for v in base.values()):
        raise UserError(
            f"grid [base] = {base!r}: expected tables of config fields, e.g. [base.model]"
        )
    base = copy.deepcopy(base)
    for section, values in base.items():
        try:
            C.check_section(section, values)
        except UserError as e:
            raise UserError(f"grid [base.{section}]: {e}") from None
    planned = sorted(set(base.get("train", {})) & {"steps", "batch_size", "seed", "lr"})
    if planned:
        raise UserError(
            f"grid [base.train] {planned[0]}: the plan sets it for every cell (steps/batch from "
            f"the budget or tokens and [hparams], lr from [hparams], seed from `seeds`); "
            f"remove it and change [hparams] or `seeds` instead"
        )
    return base


def _base_model(base: dict[str, dict[str, Any]], rule: str) -> C.ModelConfig:
    """[base.model] as a ModelConfig (its `preset` is ignored); the gpt3 rule defaults to the
    GPT-3 block style (LayerNorm, learned positions, GELU, tied embeddings)."""
    model = dict(base.get("model", {}))
    if rule == "gpt3":
        style = {k: C.PRESETS["gpt3-small"][k] for k in ("norm", "pos", "mlp", "tie_embeddings")}
        model = {**style, **model}
    model.pop("preset", None)
    return C.check_section("model", model)


def _parse_overrides(overrides: Any) -> tuple[Override, ...]:
    ok = isinstance(overrides, list) and all(
        isinstance(o, dict)
        and isinstance(o.get("where", {}), dict)
        and isinstance(o.get("set", {}), dict)
        for o in overrides
    )
    if not ok:
        raise UserError(
            "grid overrides: expected [[overrides]] tables, each with where = {...} and "
            'set = {"section.field" = value}'
        )
    for i, ov in enumerate(overrides):
        for key in ov.get("set", {}):
            section, _, fld = key.partition(".")
            if not fld or section == "model":
                raise UserError(
                    f"grid overrides[{i}] set {key!r}: use section.field keys outside "
                    f"[model] (shapes come from [shapes], so FLOPs stay exact)"
                )
            if key in PLANNED_KEYS:
                raise UserError(
                    f"grid overrides[{i}] set {key!r}: the plan derives it (steps and batch "
                    f"from the budget/tokens and [hparams], seed from `seeds`), so the cell's "
                    f"D and FLOPs would be wrong; change [hparams] or `seeds` instead"
                )
    return tuple(Override(dict(o.get("where", {})), dict(o.get("set", {}))) for o in overrides)
