"""Device mesh, the ONE logical-axis rules table, and sharded state creation.

Parameters name their axes logically (`("embed", "mlp")`); `LOGICAL_AXIS_RULES` maps each name to
a mesh axis of ("data", "fsdp", "tensor"), a tuple of them, or None (replicated). A parameter whose
name has no rule raises `ShardingRuleError`. A dimension that its mesh axes do not divide (e.g. a
byte vocab of 259 over tensor=2) is replicated along that dimension with a one-line `warning:` on
stderr (`scaling.fileio.warn`, once per distinct message and process); pass
`strict=True` to raise `UserError` instead.

Typical use (see `create_sharded`):

    mesh = make_mesh(cfg)
    optimizer = create_sharded(
        lambda: nnx.Optimizer(Transformer(cfg.model, rngs=nnx.Rngs(seed)), tx, wrt=nnx.Param), mesh)
    model = optimizer.model                       # sharded params, sharded Adam moments
    shardings = state_shardings(nnx.state(optimizer), mesh)   # for jit in/out_shardings

Tracing a step under `with jax.set_mesh(mesh):` also enables the activation constraints that
`constrain` places inside the model (batch over data+fsdp, heads/mlp/vocab over tensor).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from scaling import fileio
from scaling.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")
MeshAxes = str | tuple[str, ...] | None

# THE rules table: logical axis name -> mesh axes. Parameters first, then activations (act_*).
LOGICAL_AXIS_RULES: dict[str, MeshAxes] = {
    # parameters
    "vocab": "tensor",  # embedding rows / LM head columns
    "embed": "fsdp",  # d_model: FSDP (ZeRO-3) shards every weight along it
    "mlp": "tensor",  # d_ff: Megatron column/row parallel MLP
    "heads": "tensor",  # query heads
    "kv_heads": "tensor",  # key/value heads (config checks tensor divides them)
    "head_dim": None,
    "positions": None,  # learned position table rows
    "norm": None,  # norm scale/bias vectors (tiny, replicated)
    "lora_rank": None,  # LoRA adapter rank r (tiny): A and B shard along their other dims
    "quant_block": None,  # block axis of quantised-base scales (scaling.quant)
    # activations
    "act_batch": ("data", "fsdp"),
    "act_seq": None,
    "act_embed": None,
    "act_heads": "tensor",
    "act_kv_heads": "tensor",
    "act_head_dim": None,
    "act_mlp": "tensor",
    "act_vocab": "tensor",
}


class ShardingRuleError(ValueError):
    """A logical axis name has no entry in LOGICAL_AXIS_RULES (a code bug, not user input)."""


def _mesh_axes(name: str | None, rules: dict[str, MeshAxes]) -> tuple[str, ...]:
    if name is None:
        return ()
    if name not in rules:
        raise ShardingRuleError(
            f"logical axis {name!r} has no rule in scaling.sharding.LOGICAL_AXIS_RULES; "
            f"add one (known: {', '.join(rules)})"
        )
    axes = rules[name]
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def logical_to_spec(
    names: Sequence[str | None],
    shape: Sequence[int],
    mesh_shape: dict[str, int],
    *,
    what: str = "array",
    strict: bool = False,
    warn: bool = True,
    rules: dict[str, MeshAxes] | None = None,
    on_replicate: Callable[[str], None] | None = None,
) -> PartitionSpec:
    """PartitionSpec for an array with logical axis `names` and `shape` on a mesh.

    Mesh axes absent from `mesh_shape` are dropped. A dim not divisible by its mesh axes is
    replicated (a `warning:` line, or `on_replicate(reason)` when given), or raises UserError when
    `strict`.
    """
    rules = LOGICAL_AXIS_RULES if rules is None else rules
    if len(names) != len(shape):
        raise ShardingRuleError(f"{what}: {len(names)} axis names {names} for shape {shape}")
    used: set[str] = set()
    spec: list[Any] = []
    for name, dim in zip(names, shape, strict=True):
        axes = tuple(a for a in _mesh_axes(name, rules) if a in mesh_shape)
        if used & set(axes):
            raise ShardingRuleError(f"{what}: mesh axes {axes} used twice in {names}")
        size = 1
        for a in axes:
            size *= mesh_shape[a]
        if axes and dim % size:
            reason = f"dim {name!r} = {dim} is not divisible by mesh axes {axes} (size {size})"
            if strict:
                raise UserError(f"{what}: {reason}; change the model shape or the mesh sizes")
            if on_replicate is not None:
                on_replicate(reason)
            elif warn:
                fileio.warn(f"{what}: {reason}; replicating this dim")
            axes = ()
        used |= set(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def _names_of(var: nnx.Variable) -> tuple[str | None, ...] | None:
    names = var.get_metadata().get("out_sharding")
    return tuple(names) if names else None


def state_shardings(state: Any, mesh: Mesh, *, strict: bool = False) -> Any:
    """NamedShardings (same tree as `state`) for an nnx.State of a model or an nnx.Optimizer.

    Variables with logical names (params, and Adam moments of nnx.Optimizer, which inherit the
    names) follow the rules; unnamed non-Param variables (step counters, RNG state) are
    replicated; a Param without names, or a bare non-scalar array, raises ShardingRuleError.
    A dim its mesh axes do not divide is replicated: one warning per such dim size (a param and
    its Adam moments are one warning, not three), or UserError when `strict`.
    """
    mesh_shape = dict(mesh.shape)
    replicated: dict[str, list[str]] = {}  # reason -> the arrays it replicates a dim of

    def one(path, leaf):
        where = jax.tree_util.keystr(path)
        if isinstance(leaf, nnx.Variable):
            if not hasattr(leaf.get_value(), "shape"):  # optax.partition's MaskedNode: no array
                return leaf
            names = _names_of(leaf)
            shape = leaf.get_value().shape
            if names is not None:
                spec = logical_to_spec(
                    names,
                    shape,
                    mesh_shape,
                    what=where,
                    strict=strict,
                    on_replicate=lambda r: replicated.setdefault(r, []).append(where),
                )
            elif isinstance(leaf, nnx.Param) and len(shape) > 0:
                raise ShardingRuleError(f"param {where} has no logical axis names")
            else:
                spec = PartitionSpec()
            return leaf.replace(NamedSharding(mesh, spec))
        if getattr(leaf, "ndim", 0) == 0:
            return NamedSharding(mesh, PartitionSpec())
        raise ShardingRuleError(
            f"{where}: bare array of shape {leaf.shape} has no logical axis names; keep "
            f"optimizer state in nnx.Optimizer so it inherits the param names"
        )

    out = jax.tree_util.tree_map_with_path(
        one, state, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )
    for reason, wheres in replicated.items():
        wheres = sorted(wheres, key=len)  # the param before its longer-named Adam moments
        some = ", ".join(wheres[:3]) + (", ..." if len(wheres) > 3 else "")
        fileio.warn(
            f"{reason}: replicated along that dim, not sharded, in {len(wheres)} arrays "
            f"({some}); to shard it, choose model sizes or mesh sizes that divide"
        )
    return out


def create_sharded(fn: Callable[[], Any], mesh: Mesh, *, strict: bool = False) -> Any:
    """Build the nnx object `fn()` (model, optimizer, ...) directly sharded on `mesh`.

    eval_shape(fn) -> state_shardings -> jax.jit(init, out_shardings) -> nnx.merge. No full
    copy of the state ever lives on one device.
    """
    abstract = nnx.eval_shape(fn)
    graphdef, abs_state = nnx.split(abstract)
    shardings = state_shardings(abs_state, mesh, strict=strict)

    def init():
        return nnx.split(fn())[1]

    init = jax.jit(init, out_shardings=shardings)
    with jax.set_mesh(mesh):
        state = init()
    return nnx.merge(graphdef, state)


def make_mesh(cfg: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Mesh ("data", "fsdp", "tensor") over all devices (of every process), sized by cfg.mesh
    (-1 fills); UserError, before anything compiles, when the sizes do not fit."""
    from scaling.config import validate_mesh

    devices = list(jax.devices() if devices is None else devices)
    try:
        sizes = validate_mesh(cfg, len(devices))
    except UserError as e:
        if jax.process_count() == 1:
            raise
        raise UserError(  # say that the count is global, not this process's
            f"{e} (the mesh spans all {jax.process_count()} processes: {len(devices)} devices "
            f"in all, {jax.local_device_count()} in this one)"
        ) from None
    return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def batch_sharding(mesh: Mesh, stacked: bool = False) -> NamedSharding:
    """Token batches [B, T]: rows over data x fsdp, sequence replicated. `stacked`: a stack of
    batches [n, B, T] (one per step of a multi-step call), the step axis replicated."""
    spec = (None,) if stacked else ()
    return NamedSharding(mesh, PartitionSpec(*spec, ("data", "fsdp"), None))


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Sharding constraint on an activation by logical names, when traced under a mesh with our
    axes (`jax.set_mesh`); a no-op otherwise. Non-divisible dims stay replicated."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(MESH_AXES) <= set(mesh.axis_names):
        return x
    spec = logical_to_spec(names, x.shape, dict(mesh.shape), what="activation", warn=False)
    return jax.lax.with_sharding_constraint(x, spec)


def maybe_initialize_distributed() -> bool:
    """`jax.distributed.initialize()` when the environment says this is one of several processes
    (JAX_* env set by `scaling launch`, a multi-task srun step, mpirun, multi-host TPU); see
    `scaling.distributed`. Call before anything touches devices. True when multi-process."""
    from scaling import distributed

    return distributed.initialize(distributed.resolve())
