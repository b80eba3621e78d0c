"""Grid files -> a validated plan of fully resolved runs (no training, no JAX).

A grid TOML (see the README's grid reference) names a `kind`:
- `isoflop`: budgets x shapes; tokens per run = C / (training FLOPs per token), rounded to
  whole steps, so every cell's exact FLOPs land within `tolerance` (default 1%) of its budget.
  With `center_tokens_per_param` set, each budget gets its own shapes, log-spaced over a
  `window` (max N / min N) centred on N_opt = sqrt(C / (6 * tokens_per_param)).
- `nxd`: Kaplan-style factorial, shapes x `tokens` (D).
- `ladder`: shapes trained on `tokens_per_param` x N_total tokens each.
`seeds` adds an axis to any kind, and so do the [hparams] lists (`lr`, `lr_factors`,
`batch_size`, `warmup`; see sweeps.family.hparam_points): their cells carry the axis values
(`lr`, `lr_factor`, `batch`, `warmup`) and `hp_axes`, and their labels and run names show them.
Every cell becomes a `RunConfig`; its id is `config_hash`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaling import config as C
from scaling.errors import UserError
from scaling.overrides import apply as apply_overrides
from sweeps import family as F

GRID_DIR = Path(__file__).parent / "grids"
KINDS = ("isoflop", "nxd", "ladder")
_PLANNED_KEYS = ("train.steps", "train.batch_size", "train.seed")  # not overridable
TOP_KEYS = {"name", "kind", "description", "seeds", "base", "shapes", "hparams", "overrides"}
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "isoflop": dict(budgets=[], tolerance=0.01, center_tokens_per_param=0.0, window=8.0),
    "nxd": dict(tokens=[], tolerance=0.01),
    "ladder": dict(tokens_per_param=20.0, tolerance=0.01),
}


@dataclass(frozen=True)
class Cell:
    """One planned run: grid coordinates, resolved config and its FLOPs accounting."""

    run_id: str
    label: str
    cell: dict[str, Any]
    config: C.RunConfig
    n_total: int
    n_nonembed: int
    tokens: int
    flops_per_token: float
    c_6nd: float
    c_exact: float
    steps: int
    batch: int
    lr: float
    warmup: int

    def summary(self) -> dict[str, Any]:
        """JSON-able description (stored in plan.json)."""
        return dict(
            run_id=self.run_id,
            label=self.label,
            cell=self.cell,
            config=self.config.to_dict(),
            N_total=self.n_total,
            N_nonembed=self.n_nonembed,
            D=self.tokens,
            C_6ND=self.c_6nd,
            C_exact=self.c_exact,
            steps=self.steps,
            batch=self.batch,
            lr=self.lr,
            warmup=self.warmup,
        )


@dataclass(frozen=True)
class Plan:
    name: str
    kind: str
    cells: list[Cell]
    grid: dict[str, Any] = field(default_factory=dict)

    @property
    def total_flops(self) -> float:
        return sum(c.c_exact for c in self.cells)

    def by_id(self) -> dict[str, Cell]:
        return {c.run_id: c for c in self.cells}


def resolve_grid_path(path_or_name: str | Path) -> Path:
    """A grid TOML path, or a built-in grid name (sweeps/grids/NAME.toml)."""
    return C.resolve_toml(path_or_name, GRID_DIR, "grid")


def load_grid(path_or_name: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Read a grid TOML and apply `table.key=value` overrides (e.g. shapes.scale=0.125)."""
    path = resolve_grid_path(path_or_name)
    raw = C.read_toml(path)
    apply_overrides(raw, overrides, "table.key=value", "shapes.scale=0.25", "the grid")
    raw.setdefault("name", path.stem)
    return raw


def plan_grid(raw: dict[str, Any]) -> Plan:
    """Resolve every cell of a grid, or raise UserError naming the impossible cell and why."""
    unknown = sorted(set(raw) - TOP_KEYS - set(KINDS))
    if unknown:
        raise UserError(f"grid: unknown key {unknown[0]!r}; valid: {', '.join(sorted(TOP_KEYS))}")
    name, kind = str(raw["name"]), raw.get("kind", "")
    if kind not in KINDS:
        raise UserError(f"grid {name!r}: kind = {kind!r}; choose one of {', '.join(KINDS)}")
    kspec = F.check_table(raw.get(kind, {}), KIND_DEFAULTS[kind], kind)
    shapes_spec = F.check_table(raw.get("shapes", {}), F.SHAPE_DEFAULTS, "shapes")
    hp = F.check_table(raw.get("hparams", {}), F.HPARAM_DEFAULTS, "hparams")
    seeds = raw.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        raise UserError(f"grid {name!r}: seeds = {seeds!r}; give a non-empty list of integers >= 0")
    _check_shapes_of_tables(raw)
    base = copy.deepcopy(raw.get("base", {}))
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
    base_model = _base_model(base, shapes_spec)

    if kind == "isoflop":
        budgets = _positive_list(kspec, "budgets", "isoflop")
        axes = [
            (dict(budget=float(b)), _shapes_for(shapes_spec, base_model, kspec, b)) for b in budgets
        ]
    elif kind == "nxd":
        tokens = _positive_list(kspec, "tokens", "nxd")
        shapes = _shapes_for(shapes_spec, base_model, kspec, None)
        axes = [(dict(tokens=int(d)), shapes) for d in tokens]
    else:
        axes = [({}, _shapes_for(shapes_spec, base_model, kspec, None))]

    cells: list[Cell] = []
    seen: dict[str, str] = {}
    points = F.hparam_points(hp)
    for coords, shapes in axes:
        for point in points:
            hpp, pc = F.point_hparams(hp, point), coords
            if kind == "isoflop":
                _check_budget_reachable(name, coords["budget"], shapes, base_model, hpp)
                if hpp["batch_per"] == "budget":
                    pc = dict(
                        coords, batch=_budget_batch(coords["budget"], shapes, base_model, hpp)
                    )
            for shape in shapes:
                for seed in seeds:
                    cell = _make_cell(
                        name, kind, kspec, hpp, base, base_model, shape, pc, seed, raw, point
                    )
                    if cell.run_id in seen:
                        raise UserError(
                            f"grid {name!r}: duplicate cell {cell.label} (same resolved config as "
                            f"{seen[cell.run_id]}); remove the repeated budget/shape/seed/tokens/"
                            f"hparams value"
                        )
                    seen[cell.run_id] = cell.label
                    cells.append(cell)
    return Plan(name=name, kind=kind, cells=cells, grid=raw)


def _point_parts(point: dict[str, Any]) -> list[str]:
    """Label parts of an [hparams] axis point, e.g. ["lr=0.003", "B=32"]."""
    names = {"lr": "lr", "lr_factor": "lrx", "batch_size": "B", "warmup": "warmup"}
    return [
        f"{names[k]}={v:.4g}" if isinstance(v, float) else f"{names[k]}={v}"
        for k, v in point.items()
    ]


def _point_coords(point: dict[str, Any], lr: float, batch: int) -> dict[str, Any]:
    """Cell coordinates of an axis point: the resolved lr and batch, the factor/warmup rule."""
    axes = {"lr": "lr", "lr_factor": "lr", "batch_size": "batch", "warmup": "warmup"}
    out: dict[str, Any] = {"hp_axes": sorted({axes[k] for k in point})}
    if "lr" in point or "lr_factor" in point:
        out["lr"] = lr
    if "lr_factor" in point:
        out["lr_factor"] = point["lr_factor"]
    if "batch_size" in point:
        out["batch"] = batch
    if "warmup" in point:
        out["warmup"] = point["warmup"]
    return out


def _check_shapes_of_tables(raw: dict[str, Any]) -> None:
    """UserError unless [base] is a table of tables and `overrides` a list of {where, set}."""
    base = raw.get("base", {})
    if not isinstance(base, dict) or not all(isinstance(v, dict) for v in base.values()):
        raise UserError(
            f"grid [base] = {base!r}: expected tables of config fields, e.g. [base.model]"
        )
    overrides = raw.get("overrides", [])
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


def _base_model(base: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    model = dict(base.get("model", {}))
    if spec["rule"] == "gpt3":  # GPT-3 block style unless the grid says otherwise
        style = {k: C.PRESETS["gpt3-small"][k] for k in ("norm", "pos", "mlp", "tie_embeddings")}
        model = {**style, **model}
    model.pop("preset", None)
    return model


def _shapes_for(
    spec: dict[str, Any], base_model: dict[str, Any], kspec: dict[str, Any], budget: float | None
) -> list[F.Shape]:
    rule = spec["rule"]
    if rule == "list":
        return F.list_shapes(spec)
    if rule == "gpt3":
        return F.gpt3_shapes(spec)
    if rule != "aspect":
        raise UserError(f"grid [shapes] rule = {rule!r}; choose aspect, list or gpt3")
    tpp = float(kspec.get("center_tokens_per_param", 0.0))
    if budget is not None and tpp > 0:
        n_opt = math.sqrt(budget / (6.0 * tpp))
        half = math.sqrt(float(kspec["window"]))
        return F.family_shapes(spec, base_model, n_opt / half, n_opt * half, int(spec["count"]))
    return F.family_shapes(
        spec, base_model, float(spec["n_min"]), float(spec["n_max"]), int(spec["count"])
    )


def _model_config(base_model: dict[str, Any], shape: F.Shape, where: str) -> C.ModelConfig:
    try:
        return C.from_dict({"model": {**base_model, **shape.fields()}}).model
    except UserError as e:
        raise UserError(f"{where}: shape {shape.label} is invalid: {e}") from e


def _check_budget_reachable(
    name: str, budget: float, shapes: list[F.Shape], base_model: dict, hp: dict
) -> None:
    from scaling.flops import flops_per_token

    seq = int(base_model.get("seq_len", C.ModelConfig().seq_len))
    batch = min(F.min_batch(hp), int(hp["batch_size"]))
    costs = [
        (flops_per_token(_model_config(base_model, s, f"grid {name!r}")) * batch * seq, s)
        for s in shapes
    ]
    cheapest, shape = min(costs, key=lambda c: c[0])
    if budget < cheapest:
        raise UserError(
            f"grid {name!r}: budget {budget:.3g} FLOPs is below one training step of the "
            f"smallest model {shape.label} (batch {batch} x seq {seq} costs {cheapest:.3g} FLOPs);"
            f" raise the budget to at least {100 * cheapest:.2g} for >= 100 steps"
        )


def _budget_batch(budget: float, shapes: list[F.Shape], base_model: dict, hp: dict) -> int:
    """The batch giving the budget's largest (most FLOPs per token) shape >= min_steps."""
    from scaling.flops import flops_per_token

    seq = int(base_model.get("seq_len", C.ModelConfig().seq_len))
    fpt = max(flops_per_token(_model_config(base_model, s, "grid")) for s in shapes)
    return F.batch_for(hp, budget / fpt, seq)


def _make_cell(
    name: str,
    kind: str,
    kspec: dict[str, Any],
    hp: dict[str, Any],
    base: dict[str, Any],
    base_model: dict[str, Any],
    shape: F.Shape,
    coords: dict[str, Any],
    seed: int,
    raw: dict[str, Any],
    point: dict[str, Any] | None = None,
) -> Cell:
    from scaling.flops import flops_per_token, param_counts

    cell = {"kind": kind, **coords, "shape": shape.label, **shape.fields(), "seed": seed}
    if shape.name:
        cell["size"] = shape.name
    parts = [f"C={coords['budget']:.3g}"] if "budget" in coords else []
    parts += [f"D={coords['tokens']:.3g}"] if "tokens" in coords else []
    point = point or {}
    label = "/".join(parts + [shape.label] + _point_parts(point) + [f"seed{seed}"])
    where = f"grid {name!r} cell {label}"
    model = _model_config(base_model, shape, where)
    counts = param_counts(model)
    fpt = flops_per_token(model)
    seq = model.seq_len
    if kind == "isoflop":
        target_tokens = coords["budget"] / fpt
    elif kind == "nxd":
        target_tokens = float(coords["tokens"])
    else:
        target_tokens = float(kspec["tokens_per_param"]) * counts.total
        cell["tokens_per_param"] = float(kspec["tokens_per_param"])
    if "batch" in coords:  # isoflop with batch_per = "budget"
        batch = coords["batch"]
    elif hp["batch_per"] in ("cell", "budget"):
        batch = F.batch_for(hp, target_tokens, seq)
    else:
        raise UserError(f"grid [hparams] batch_per = {hp['batch_per']!r}; use cell or budget")
    steps_f = target_tokens / (batch * seq)
    steps = round(steps_f)
    if steps < 1:
        raise UserError(
            f"{where}: steps < 1 ({steps_f:.2f} steps of batch {batch} x seq {seq} = "
            f"{target_tokens:.3g} tokens); drop this shape, raise the budget/tokens, or shrink "
            f"the batch"
        )
    tokens = steps * batch * seq
    rel = abs(tokens - target_tokens) / target_tokens
    if rel > float(kspec["tolerance"]):
        raise UserError(
            f"{where}: rounding {steps_f:.2f} to {steps} steps of batch {batch} x seq {seq} "
            f"misses the target by {100 * rel:.1f}% (> {100 * float(kspec['tolerance']):g}%); "
            f"lower hparams.min_batch_size or raise the budget/tokens"
        )
    lr = F.lr_for_width(hp, shape.d_model)
    if "lr_factor" in point:
        lr *= point["lr_factor"]
    warmup = F.warmup_for(hp, counts.total, steps, batch * seq)
    if point:
        cell |= _point_coords(point, lr, batch)
    cfg_raw = copy.deepcopy(base)
    cfg_raw["name"] = f"{name}-{label.replace('/', '-')}"
    cfg_raw["model"] = {**base_model, **shape.fields()}
    cfg_raw["train"] = {
        **cfg_raw.get("train", {}),
        "steps": steps,
        "batch_size": batch,
        "lr": lr,
        "warmup_steps": warmup,
        "seed": seed,
    }
    for i, ov in enumerate(raw.get("overrides", [])):
        where_ok = all(cell.get(k) == v for k, v in ov.get("where", {}).items())
        if where_ok:
            for key, value in ov.get("set", {}).items():
                section, _, fld = key.partition(".")
                if not fld or section == "model":
                    raise UserError(
                        f"grid overrides[{i}] set {key!r}: use section.field keys outside "
                        f"[model] (shapes come from [shapes], so FLOPs stay exact)"
                    )
                if key in _PLANNED_KEYS:
                    raise UserError(
                        f"grid overrides[{i}] set {key!r}: the plan derives it (steps and batch "
                        f"from the budget/tokens and [hparams], seed from `seeds`), so the cell's "
                        f"D and FLOPs would be wrong; change [hparams] or `seeds` instead"
                    )
                cfg_raw.setdefault(section, {})[fld] = value
    try:
        cfg = C.from_dict(cfg_raw)
    except UserError as e:
        raise UserError(f"{where}: {e}") from e
    return Cell(
        run_id=C.config_hash(cfg),
        label=label,
        cell=cell,
        config=cfg,
        n_total=counts.total,
        n_nonembed=counts.nonembedding,
        tokens=tokens,
        flops_per_token=fpt,
        c_6nd=6.0 * counts.total * tokens,
        c_exact=fpt * tokens,
        steps=steps,
        batch=batch,
        lr=cfg.train.lr,
        warmup=cfg.train.warmup_steps,
    )
