"""Compiled training machinery: sharded state init, the jitted train and eval steps, a cache.

An `Engine` holds everything compiled for one (model config, batch shape, mesh, static optimizer
settings) combination. `engine(cfg, mesh)` returns the cached one, so every run of a sweep with
the same shapes shares one compilation; the learning rate is a traced input of the step.
`steps` runs several steps in one call (a loop over stacked batches, `scaling.loop`): its body
is `step`, so results do not depend on how many steps a call runs.

State layout (a plain dict pytree, also what is checkpointed):
  params  nnx.State of the model's nnx.Param variables (sharded by the logical-axis rules)
  other   nnx.State of any other model variables (empty for scaling.model.Transformer)
  opt     optax state (Adam count, mu and nu, which inherit the params' logical names/shardings)
  step    int32 scalar, number of updates applied
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from scaling import compile_cache, optim, sharding
from scaling.config import RunConfig
from scaling.data.sources import default_data_dir
from scaling.data.tokenizer import PAD
from scaling.model import Transformer, cross_entropy


@dataclass
class Engine:
    """Everything compiled for one (model, batch shape, mesh, optimizer) combination."""

    mesh: Any
    graphdef: Any
    abstract_state: Any  # pytree of ShapeDtypeStruct with shardings (checkpoint restore target)
    state_shardings: Any
    batch_sharding: NamedSharding
    init: Any  # key -> state
    step: Any  # (state, batch, lr) -> (state, metrics); state donated
    steps: Any  # (state, batches_N, lrs_N, k) -> (state, metrics_N): k <= N steps in one call
    chunk_sharding: NamedSharding  # of the stacked batches [N, B, T+1]
    eval: Any  # (params, other, batch) -> (sum_nll, n_tokens)
    eval_many: Any  # (params, other, batches_M) -> (sum_nll_M, n_tokens_M): one call for all


_CACHE: dict[tuple, Engine] = {}


def engine(cfg: RunConfig, mesh: Any) -> Engine:
    """The cached compiled engine for this run's shapes (built on first use). Turns on the
    persistent compilation cache first (`scaling.compile_cache`)."""
    compile_cache.enable(default_data_dir(cfg.data))
    key = (cfg.model, cfg.train.batch_size, mesh, optim.static_hparams(cfg.train))
    if key not in _CACHE:
        _CACHE[key] = _build(cfg, mesh)
    return _CACHE[key]


def _build(cfg: RunConfig, mesh: Any) -> Engine:
    """Trace the state's shapes, derive its shardings from the rules table, and jit init, the
    step, the multi-step call and the two evals with those shardings."""
    tx = optim.make_optimizer(cfg.train, cfg.model)
    graphdef, init = _state_fns(cfg, tx)
    abstract = jax.eval_shape(init, jax.random.key(0))
    state_sh = sharding.state_shardings(abstract, mesh)
    abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh
    )
    batch_sh = sharding.batch_sharding(mesh)
    scalar_sh = NamedSharding(mesh, PartitionSpec())
    train_step, multi_step, eval_step = _step_fns(graphdef, tx)
    step = jax.jit(
        train_step,
        in_shardings=(state_sh, batch_sh, scalar_sh),
        out_shardings=(state_sh, scalar_sh),
        donate_argnums=(0,),
    )
    chunk_sh = sharding.batch_sharding(mesh, stacked=True)
    steps = jax.jit(
        multi_step,
        in_shardings=(state_sh, chunk_sh, scalar_sh, scalar_sh),
        out_shardings=(state_sh, scalar_sh),
        donate_argnums=(0,),
    )
    evaluate = jax.jit(
        eval_step,
        in_shardings=(state_sh["params"], state_sh["other"], batch_sh),
        out_shardings=(scalar_sh, scalar_sh),
    )
    evaluate_many = jax.jit(
        lambda params, other, batches_MBT1: jax.lax.map(
            lambda b: eval_step(params, other, b), batches_MBT1
        ),
        in_shardings=(state_sh["params"], state_sh["other"], chunk_sh),
        out_shardings=(scalar_sh, scalar_sh),
    )
    init_jit = jax.jit(init, out_shardings=state_sh, compiler_options=_init_options())
    return Engine(
        mesh,
        graphdef,
        abstract_state,
        state_sh,
        batch_sh,
        init_jit,
        step,
        steps,
        chunk_sh,
        evaluate,
        evaluate_many,
    )


def _state_fns(cfg: RunConfig, tx: optax.GradientTransformation) -> tuple[Any, Any]:
    """The model's graphdef (from an abstract model: nothing is allocated) and `init(key)`, which
    builds a fresh state pytree (layout in the module doc)."""
    abstract_model = nnx.eval_shape(lambda: Transformer(cfg.model, rngs=nnx.Rngs(0)))
    graphdef, _, _ = nnx.split(abstract_model, nnx.Param, ...)

    def init(key: jax.Array) -> dict[str, Any]:
        model = Transformer(cfg.model, rngs=nnx.Rngs(params=key))
        _, params, other = nnx.split(model, nnx.Param, ...)
        step = jnp.zeros((), jnp.int32)
        return {"params": params, "other": other, "opt": tx.init(params), "step": step}

    return graphdef, init


def _step_fns(graphdef: Any, tx: optax.GradientTransformation) -> tuple[Any, Any, Any]:
    """The un-jitted step functions: `train_step(state, batch, lr)`, `multi_step(state, batches,
    lrs, k)` (k single steps in a loop) and `eval_step(params, other, batch)` (sum NLL, count)."""

    def loss_fn(params, other, batch_BT1):
        tokens_BT, targets_BT = batch_BT1[:, :-1], batch_BT1[:, 1:]
        model = nnx.merge(graphdef, params, other)
        return cross_entropy(model(tokens_BT), targets_BT, targets_BT != PAD)

    def train_step(state, batch_BT1, lr):
        def f(params):
            return loss_fn(params, state["other"], batch_BT1)[0]

        loss, grads = jax.value_and_grad(f)(state["params"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        params = jax.tree.map(lambda p, u: (p - lr * u).astype(p.dtype), state["params"], updates)
        new = {"params": params, "other": state["other"], "opt": opt, "step": state["step"] + 1}
        return new, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    def multi_step(state, batches_NBT1, lrs_N, k):
        """Steps 0..k-1 of a chunk (k <= N, traced: one compile serves every chunk length);
        metrics [N] (NaN past k). The loop body is the single step, bitwise."""

        def body(i, carry):
            st, loss_N, gnorm_N = carry
            st, m = train_step(st, batches_NBT1[i], lrs_N[i])
            return st, loss_N.at[i].set(m["loss"]), gnorm_N.at[i].set(m["grad_norm"])

        nan_N = jnp.full(lrs_N.shape, jnp.nan, jnp.float32)
        state, loss_N, gnorm_N = jax.lax.fori_loop(0, k, body, (state, nan_N, nan_N))
        return state, {"loss": loss_N, "grad_norm": gnorm_N}

    def eval_step(params, other, batch_BT1):
        mean, n = loss_fn(params, other, batch_BT1)
        return mean * n, n

    return train_step, multi_step, eval_step


def _init_options() -> dict[str, Any] | None:
    """Compile the one-off init cheaply: on CPU, LLVM -O1 instead of -O3 cuts its compile from
    about 11 to 3.5 CPU-s (the unrolled threefry of every parameter is most of its code) and
    gives bitwise the same parameters (checked on the 8 demo shapes;
    tests/scaling/test_compile_cache.py); -O0 would not. Other backends compile it as before."""
    return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None


# ----------------------------------------------------------------------------- host helpers


def put(batch: np.ndarray, sh: NamedSharding) -> jax.Array:
    """Host batch (identical on every process) -> global array sharded over (data, fsdp)."""
    if jax.process_count() == 1:
        return jax.device_put(batch, sh)
    return jax.make_array_from_callback(batch.shape, sh, lambda idx: batch[idx])


def to_host(x: Any) -> np.ndarray:
    """A jax.Array as numpy, on every process. Reading an array that spans devices of other
    processes fails with np.asarray; such arrays are all-gathered first (replicated ones are
    read locally). Single-process arrays are plain np.asarray."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(x)
    from jax.experimental import multihost_utils  # noqa: PLC0415

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def replicated_inputs(like: Any, arrays: list[np.ndarray]) -> list[Any]:
    """Host arrays (identical on every process) as jit inputs next to the sharded pytree `like`:
    unchanged with one process, global replicated arrays on its mesh with several."""
    if jax.process_count() == 1:
        return arrays
    leaf = next(x for x in jax.tree.leaves(like) if isinstance(x, jax.Array))
    sh = NamedSharding(leaf.sharding.mesh, PartitionSpec())
    return [put(a, sh) for a in arrays]


def val_loss(eng: Engine, state: dict[str, Any], val: list[jax.Array] | jax.Array) -> float:
    """Mean NLL (nats/token) over the fixed validation batches: a list of [B, T+1] batches (one
    call each), or all of them stacked [M, B, T+1] on `eng.chunk_sharding` (one call, the same
    per-batch sums); one host sync at the end, the sums added on the host in batch order."""
    p, o = state["params"], state["other"]
    with jax.set_mesh(eng.mesh):
        if isinstance(val, list):
            parts = jax.device_get([eng.eval(p, o, b) for b in val])
            sums, counts = [s for s, _ in parts], [n for _, n in parts]
        else:
            sums, counts = jax.device_get(eng.eval_many(p, o, val))
    total = sum(float(s) for s in sums)
    count = sum(float(n) for n in counts)
    return total / max(count, 1.0)


def pad_rows(batch: np.ndarray, rows: int) -> np.ndarray:
    """Pad a short validation batch with PAD rows (masked out of the loss) to `rows`."""
    if batch.shape[0] == rows:
        return batch.astype(np.int32)
    pad = np.full((rows - batch.shape[0], batch.shape[1]), PAD, np.int32)
    return np.concatenate([batch.astype(np.int32), pad])
