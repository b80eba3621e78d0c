"""Grid files -> a validated plan of fully resolved runs (no training, no JAX).

A grid TOML (see the README's grid reference; sweeps.spec parses it) names a `kind`:
- `isoflop`: budgets x shapes; tokens per run = C / (training FLOPs per token), rounded to
  whole steps, so every cell's exact FLOPs land within `tolerance` (default 1%) of its budget.
  With `center_tokens_per_param` set, each budget gets its own shapes, log-spaced over a
  `window` (max N / min N) centred on N_opt = sqrt(C / (6 * tokens_per_param)).
- `nxd`: Kaplan-style factorial, shapes x `tokens` (D).
- `ladder`: shapes trained on `tokens_per_param` x N_total tokens each.
`seeds` adds an axis to any kind, and so do the [hparams] lists (`lr`, `lr_factors`,
`batch_size`, `warmup`; see sweeps.hparams): their cells carry the axis values
(`lr`, `lr_factor`, `batch`, `warmup`) and `hp_axes`, and their labels and run names show them.
Every cell becomes a `RunConfig`; its id is `config_hash`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaling import config as C
from scaling.errors import UserError
from scaling.overrides import apply as apply_overrides
from sweeps import family as F
from sweeps.hparams import (
    Hparams,
    Point,
    batch_for,
    lr_for_width,
    min_batch,
    point_hparams,
    warmup_for,
)
from sweeps.spec import GridSpec, Isoflop, Ladder, Nxd, parse_grid

GRID_DIR = Path(__file__).parent / "grids"


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


def load_grid(path_or_name: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> GridSpec:
    """Read a grid TOML, apply `[table.]key=value` overrides (e.g. seeds=[0,1],
    hparams.lr=0.003) and validate it into a GridSpec."""
    path = resolve_grid_path(path_or_name)
    raw = C.read_toml(path)
    apply_overrides(raw, overrides, "[table.]key=value", "hparams.lr=0.003", "the grid")
    raw.setdefault("name", path.stem)
    return parse_grid(raw)


def plan_grid(grid: GridSpec | dict[str, Any]) -> Plan:
    """Resolve every cell of a grid (a GridSpec, or a grid TOML's dict), or raise UserError
    naming the impossible cell and why."""
    spec = grid if isinstance(grid, GridSpec) else parse_grid(grid)
    cells: list[Cell] = []
    seen: dict[str, str] = {}
    for coords, shapes in _axes(spec):
        for point in spec.points:
            hp, pc = point_hparams(spec.hparams, point), coords
            if isinstance(spec.study, Isoflop):
                _check_budget_reachable(spec, coords["budget"], shapes, hp)
                if hp.batch_per == "budget":
                    pc = dict(coords, batch=_budget_batch(spec, coords["budget"], shapes, hp))
            for shape in shapes:
                for seed in spec.seeds:
                    cell = _make_cell(spec, hp, point, shape, pc, seed)
                    if cell.run_id in seen:
                        raise UserError(
                            f"grid {spec.name!r}: duplicate cell {cell.label} (same resolved "
                            f"config as {seen[cell.run_id]}); remove the repeated budget/shape/"
                            f"seed/tokens/hparams value"
                        )
                    seen[cell.run_id] = cell.label
                    cells.append(cell)
    _check_overrides_match(spec, [c.cell for c in cells])
    return Plan(name=spec.name, kind=spec.kind, cells=cells, grid=spec.raw)


def _check_overrides_match(spec: GridSpec, cells: list[dict[str, Any]]) -> None:
    """Every [[overrides]] table must match some cell: a typo in `where` (a key that is not a
    coordinate, a value no cell has) would otherwise leave every cell unchanged, silently."""
    for i, ov in enumerate(spec.overrides):
        if any(all(c.get(k) == v for k, v in ov.where.items()) for c in cells):
            continue
        keys = sorted({k for c in cells for k in c})
        bad = next((k for k in ov.where if k not in keys), None)
        if bad is not None:
            why = f"{bad!r} is not a cell coordinate (coordinates: {', '.join(keys)})"
        else:
            k = next((k for k in ov.where if all(c.get(k) != ov.where[k] for c in cells)), None)
            values = sorted({repr(c.get(k)) for c in cells}) if k else []
            why = f"{k} is one of {', '.join(values)}" if k else "no cell has all of these values"
        raise UserError(
            f"grid {spec.name!r} overrides[{i}] where = {ov.where}: matches no cell; {why}"
        )


def _axes(spec: GridSpec) -> list[tuple[dict[str, Any], list[F.Shape]]]:
    """(coordinates, shapes) of each budget (isoflop), token count (nxd) or of the ladder."""
    if isinstance(spec.study, Isoflop):
        return [(dict(budget=b), _shapes(spec, b)) for b in spec.study.budgets]
    shapes = _shapes(spec, None)
    if isinstance(spec.study, Nxd):
        return [(dict(tokens=d), shapes) for d in spec.study.tokens]
    return [({}, shapes)]


def _shapes(spec: GridSpec, budget: float | None) -> list[F.Shape]:
    """The grid's shapes; a centred isoflop grid places them around each budget's N_opt."""
    study, n_range = spec.study, (spec.shapes.n_min, spec.shapes.n_max)
    if budget is not None and isinstance(study, Isoflop) and study.center_tokens_per_param > 0:
        n_opt = math.sqrt(budget / (6.0 * study.center_tokens_per_param))
        half = math.sqrt(study.window)
        n_range = (n_opt / half, n_opt * half)
    return F.shapes_for(spec.shapes, spec.base_model, n_range)


def _model_config(base_model: C.ModelConfig, shape: F.Shape, where: str) -> C.ModelConfig:
    model = {**dataclasses.asdict(base_model), **shape.fields()}
    try:
        return C.from_dict({"model": model}).model
    except UserError as e:
        raise UserError(f"{where}: shape {shape.label} is invalid: {e}") from e


def _check_budget_reachable(
    spec: GridSpec, budget: float, shapes: list[F.Shape], hp: Hparams
) -> None:
    from scaling.flops import flops_per_token

    seq = spec.base_model.seq_len
    batch = min(min_batch(hp), hp.batch_size)
    costs = [
        (flops_per_token(_model_config(spec.base_model, s, f"grid {spec.name!r}")) * batch * seq, s)
        for s in shapes
    ]
    cheapest, shape = min(costs, key=lambda c: c[0])
    if budget < cheapest:
        raise UserError(
            f"grid {spec.name!r}: budget {budget:.3g} FLOPs is below one training step of the "
            f"smallest model {shape.label} (batch {batch} x seq {seq} costs {cheapest:.3g} FLOPs);"
            f" raise the budget to at least {100 * cheapest:.2g} for >= 100 steps"
        )


def _budget_batch(spec: GridSpec, budget: float, shapes: list[F.Shape], hp: Hparams) -> int:
    """The batch giving the budget's largest (most FLOPs per token) shape >= min_steps."""
    from scaling.flops import flops_per_token

    fpt = max(flops_per_token(_model_config(spec.base_model, s, "grid")) for s in shapes)
    return batch_for(hp, budget / fpt, spec.base_model.seq_len)


def _make_cell(
    spec: GridSpec, hp: Hparams, point: Point, shape: F.Shape, coords: dict[str, Any], seed: int
) -> Cell:
    """One run: its coordinates, model, steps and batch for the target tokens, lr and warmup
    from [hparams], and its RunConfig (with the matching [[overrides]])."""
    from scaling.flops import flops_per_token, param_counts

    label = _label(coords, shape, point, seed)
    where = f"grid {spec.name!r} cell {label}"
    model = _model_config(spec.base_model, shape, where)
    counts, fpt, seq = param_counts(model), flops_per_token(model), model.seq_len
    target_tokens = _target_tokens(spec, coords, counts.total, fpt)
    batch = coords["batch"] if "batch" in coords else batch_for(hp, target_tokens, seq)
    steps = _round_steps(spec.study.tolerance, target_tokens, batch, seq, where, spec.kind)
    tokens = steps * batch * seq
    lr = lr_for_width(hp, shape.d_model)
    if point.lr_factor is not None:
        lr *= point.lr_factor
    warmup = warmup_for(hp, counts.total, steps, batch * seq)
    cell = _coordinates(spec, coords, shape, seed)
    if point:
        cell |= _point_coords(point, lr, batch)
    train = dict(steps=steps, batch_size=batch, lr=lr, warmup_steps=warmup, seed=seed)
    cfg = _run_config(spec, cell, label, shape, train, where)
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


def _label(coords: dict[str, Any], shape: F.Shape, point: Point, seed: int) -> str:
    """E.g. `C=7.5e+10/d16-l2-h4/lr=0.01/seed0`."""
    parts = [f"C={coords['budget']:.3g}"] if "budget" in coords else []
    parts += [f"D={coords['tokens']:.3g}"] if "tokens" in coords else []
    return "/".join(parts + [shape.label] + _point_parts(point) + [f"seed{seed}"])


def _point_parts(point: Point) -> list[str]:
    """Label parts of an [hparams] axis point, e.g. ["lr=0.003", "B=32"]."""
    names = {"lr": "lr", "lr_factor": "lrx", "batch_size": "B", "warmup": "warmup"}
    return [
        f"{names[k]}={v:.4g}" if isinstance(v, float) else f"{names[k]}={v}"
        for k, v in point.items()
    ]


def _coordinates(
    spec: GridSpec, coords: dict[str, Any], shape: F.Shape, seed: int
) -> dict[str, Any]:
    """A cell's coordinates in the grid (plan.json's `cell`, what [[overrides]] match)."""
    cell = {"kind": spec.kind, **coords, "shape": shape.label, **shape.fields(), "seed": seed}
    if shape.name:
        cell["size"] = shape.name
    if isinstance(spec.study, Ladder):
        cell["tokens_per_param"] = spec.study.tokens_per_param
    return cell


def _point_coords(point: Point, lr: float, batch: int) -> dict[str, Any]:
    """Cell coordinates of an axis point: the resolved lr and batch, the factor/warmup rule."""
    axes = {"lr": "lr", "lr_factor": "lr", "batch_size": "batch", "warmup": "warmup"}
    out: dict[str, Any] = {"hp_axes": sorted({axes[k] for k, _ in point.items()})}
    if point.lr is not None or point.lr_factor is not None:
        out["lr"] = lr
    if point.lr_factor is not None:
        out["lr_factor"] = point.lr_factor
    if point.batch_size is not None:
        out["batch"] = batch
    if point.warmup is not None:
        out["warmup"] = point.warmup
    return out


def _target_tokens(spec: GridSpec, coords: dict[str, Any], n_total: int, fpt: float) -> float:
    """Tokens a cell should see: budget / FLOPs per token, D, or tokens_per_param x N."""
    if isinstance(spec.study, Isoflop):
        return coords["budget"] / fpt
    if isinstance(spec.study, Nxd):
        return float(coords["tokens"])
    return spec.study.tokens_per_param * n_total


def _round_steps(
    tolerance: float, target: float, batch: int, seq: int, where: str, kind: str
) -> int:
    """Whole steps of batch x seq tokens nearest the target, or UserError when fewer than one
    or when rounding misses the target by more than `tolerance`."""
    steps_f = target / (batch * seq)
    steps = round(steps_f)
    if steps < 1:
        raise UserError(
            f"{where}: steps < 1 ({steps_f:.2f} steps of batch {batch} x seq {seq} = "
            f"{target:.3g} tokens); drop this shape, raise the budget/tokens, or shrink "
            f"the batch"
        )
    rel = abs(steps * batch * seq - target) / target
    if rel > tolerance:
        raise UserError(
            f"{where}: rounding {steps_f:.2f} to {steps} steps of batch {batch} x seq {seq} "
            f"misses the target by {100 * rel:.1f}% (> {100 * tolerance:g}%); lower "
            f"hparams.batch_size (more, finer steps), raise [{kind}] tolerance, or raise the "
            f"budget/tokens"
        )
    return steps


def _run_config(
    spec: GridSpec,
    cell: dict[str, Any],
    label: str,
    shape: F.Shape,
    train: dict[str, Any],
    where: str,
) -> C.RunConfig:
    """[base] + the shape + the planned train fields + the [[overrides]] matching `cell`."""
    raw = copy.deepcopy(spec.base)
    raw["name"] = f"{spec.name}-{label.replace('/', '-')}"
    raw["model"] = {**dataclasses.asdict(spec.base_model), **shape.fields()}
    raw["train"] = {**raw.get("train", {}), **train}
    for ov in spec.overrides:
        if all(cell.get(k) == v for k, v in ov.where.items()):
            for key, value in ov.values.items():
                section, _, fld = key.partition(".")
                raw.setdefault(section, {})[fld] = value
    try:
        cfg = C.from_dict(raw)
    except UserError as e:
        raise UserError(f"{where}: {e}") from e
    C.warn_ignored(cfg)  # once per distinct line (`scaling.fileio.warn`), not once per cell
    return cfg
