"""Sharding on 8 fake CPU devices: sharded == single-device, specs follow the rules, errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from scaling import fileio, sharding
from scaling.config import from_dict
from scaling.errors import UserError
from scaling.model import Transformer, cross_entropy

MODEL = dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, seq_len=16, d_ff=64)


def run_cfg(mesh=(2, 2, 2), batch=8, **model):
    return from_dict(
        {
            "model": {**MODEL, **model},
            "mesh": dict(zip(("data", "fsdp", "tensor"), mesh, strict=True)),
            "train": {"batch_size": batch},
        }
    )


def loss_fn(model, tokens):
    return cross_entropy(model(tokens[:, :-1]), tokens[:, 1:])[0]


@nnx.jit
def loss_and_grads(model, tokens):
    return nnx.value_and_grad(loss_fn)(model, tokens)


def test_sharded_equals_single_device():
    cfg = run_cfg()  # RoPE, GQA (4 q heads, 2 kv heads), tied embeddings, SwiGLU
    mesh = sharding.make_mesh(cfg)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    tokens = jax.random.randint(jax.random.key(1), (8, 17), 0, 64)

    def build():  # model and optimizer built together, both sharded from the start
        model = Transformer(cfg.model, rngs=nnx.Rngs(0))
        return model, nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)

    sharded, opt = sharding.create_sharded(build, mesh)
    # the same params, gathered onto one device
    graphdef, state = nnx.split(sharded)
    single = nnx.merge(graphdef, jax.device_put(state, jax.devices()[0]))
    assert len(single.embedding.get_value().devices()) == 1

    loss1, grads1 = loss_and_grads(single, tokens)
    with jax.set_mesh(mesh):
        loss8, grads8 = loss_and_grads(
            sharded, jax.device_put(tokens, sharding.batch_sharding(mesh))
        )
    assert float(loss8) == pytest.approx(float(loss1), rel=1e-6)
    flat1, flat8 = nnx.to_flat_state(grads1), nnx.to_flat_state(grads8)
    assert len(flat1) == len(flat8) > 10
    for (path, g1), (_, g8) in zip(flat1, flat8, strict=True):
        np.testing.assert_allclose(g8.get_value(), g1.get_value(), rtol=1e-4, atol=1e-7,
                                   err_msg=str(path))  # fmt: skip

    # params are laid out as the rules say
    spec = lambda v: v.get_value().sharding.spec  # noqa: E731
    assert spec(sharded.embedding) == P("tensor", "fsdp")
    assert spec(sharded.blocks[0].attn.wq) == P("fsdp", "tensor", None)
    assert spec(sharded.blocks[0].attn.wk) == P("fsdp", "tensor", None)
    assert spec(sharded.blocks[1].attn.wo) == P("tensor", None, "fsdp")
    assert spec(sharded.blocks[0].mlp.w_up) == P("fsdp", "tensor")
    assert spec(sharded.blocks[0].mlp.w_down) == P("tensor", "fsdp")
    assert sharded.final_norm.scale.get_value().sharding.is_fully_replicated
    # and really split: each device holds 1/4 of the embedding (tensor x fsdp)
    assert sharded.embedding.get_value().addressable_shards[0].data.shape == (32, 16)
    # Adam moments inherit the param names, hence the same layout; the counters replicate
    mu = opt.opt_state[0].mu
    assert mu["embedding"].get_value().sharding.spec == P("tensor", "fsdp")
    assert mu["blocks"][0]["mlp"]["w_down"].get_value().sharding.spec == P("tensor", "fsdp")
    assert sharding.state_shardings(nnx.state(opt), mesh)["step"].get_value().spec == P()


def test_untied_head_and_learned_positions_rules():
    cfg = run_cfg(pos="learned", tie_embeddings=False)
    mesh = sharding.make_mesh(cfg)
    abstract = nnx.state(nnx.eval_shape(lambda: Transformer(cfg.model, rngs=nnx.Rngs(0))))
    shardings = sharding.state_shardings(abstract, mesh)
    assert shardings["lm_head"].get_value().spec == P("fsdp", "tensor")
    assert shardings["pos_embedding"].get_value().spec == P(None, "fsdp")
    # raw optax state over an nnx.State keeps the Variables, so it shards the same way
    opt_state = jax.eval_shape(optax.adamw(1e-3).init, abstract)
    opt_sh = sharding.state_shardings(opt_state, mesh)
    assert opt_sh[0].nu["lm_head"].get_value().spec == P("fsdp", "tensor")
    assert opt_sh[0].count.spec == P()


def test_unknown_logical_name_raises():
    mesh = sharding.make_mesh(run_cfg())

    class Odd(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.zeros((4, 4)), out_sharding=("embed", "nope"),
                               eager_sharding=False)  # fmt: skip

    with pytest.raises(sharding.ShardingRuleError, match="'nope'"):
        sharding.create_sharded(Odd, mesh)

    class Unnamed(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.zeros((4, 4)), eager_sharding=False)

    with pytest.raises(sharding.ShardingRuleError, match="no logical axis names"):
        sharding.state_shardings(nnx.state(Unnamed()), mesh)


def _warnings(capsys: pytest.CaptureFixture) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line]


def test_non_divisible_dim_replicates_or_raises(capsys, monkeypatch):
    monkeypatch.setattr(fileio, "_warned", set())
    cfg = run_cfg(vocab_size=259)  # byte vocab: odd, tensor = 2 cannot split it
    mesh = sharding.make_mesh(cfg)
    abstract = nnx.state(nnx.eval_shape(lambda: Transformer(cfg.model, rngs=nnx.Rngs(0))))
    capsys.readouterr()
    shardings = sharding.state_shardings(abstract, mesh)
    (line,) = _warnings(capsys)
    assert line.startswith("warning: dim 'vocab' = 259 is not divisible by mesh axes"), line
    assert shardings["embedding"].get_value().spec == P(None, "fsdp")
    with pytest.raises(UserError, match=r"\['embedding'\].*'vocab' = 259"):
        sharding.state_shardings(abstract, mesh, strict=True)
    spec = sharding.logical_to_spec(("vocab",), (259,), dict(mesh.shape), what="head")
    assert spec == P(None) and _warnings(capsys) == [
        "warning: head: dim 'vocab' = 259 is not divisible by mesh axes ('tensor',) (size 2); "
        "replicating this dim"
    ]


def test_replication_warns_once_per_dim_in_one_line(capsys, monkeypatch):
    """A param and its two Adam moments replicate the same dim: one warning, naming all three
    (was: three warnings pointing into jax's tree_util); one `warning:` line, as every warning
    of the project (was: Python's two-line UserWarning with a file:line header)."""
    monkeypatch.setattr(fileio, "_warned", set())
    cfg = run_cfg(vocab_size=259)
    mesh = sharding.make_mesh(cfg)
    tx = optax.adamw(1e-3)
    abstract = nnx.state(nnx.eval_shape(lambda: Transformer(cfg.model, rngs=nnx.Rngs(0))))
    state = {"params": abstract, "opt": jax.eval_shape(tx.init, abstract)}
    capsys.readouterr()
    shardings = sharding.state_shardings(state, mesh)
    (msg,) = _warnings(capsys)
    assert msg.startswith("warning: ") and "'vocab' = 259" in msg and "in 3 arrays" in msg
    assert msg.index("['params']['embedding']") < msg.index("mu['embedding']")
    assert "choose model sizes or mesh sizes that divide" in msg
    assert shardings["opt"][0].mu["embedding"].get_value().spec == P(None, "fsdp")


def test_make_mesh_fills_and_validates():
    cfg = run_cfg(mesh=(-1, 1, 2))
    assert dict(sharding.make_mesh(cfg).shape) == {"data": 4, "fsdp": 1, "tensor": 2}
    with pytest.raises(UserError, match="devices"):
        sharding.make_mesh(run_cfg(mesh=(3, 1, 1), batch=24))
    bad_batch = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=6))
    with pytest.raises(UserError, match="batch_size"):
        sharding.make_mesh(bad_batch)


def test_batch_sharding_and_rules_table():
    mesh = sharding.make_mesh(run_cfg())
    assert sharding.batch_sharding(mesh).spec == P(("data", "fsdp"), None)
    for name, axes in sharding.LOGICAL_AXIS_RULES.items():
        flat = (axes,) if isinstance(axes, str) else axes or ()
        assert set(flat) <= set(sharding.MESH_AXES), name


def test_no_distributed_init_on_single_process(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert sharding.maybe_initialize_distributed() is False
