"""Model behaviour on CPU: causality, parameter counts vs closed forms, dtypes, loss."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling import flops
from scaling.config import ModelConfig
from scaling.errors import UserError
from scaling.model import MLP, Attention, Transformer, compute_dtype, cross_entropy

SMALL = dict(d_model=32, n_layers=2, n_heads=4, vocab_size=61, seq_len=16, d_ff=48)


@nnx.jit
def forward(model: nnx.Module, tokens_BT: jax.Array) -> jax.Array:
    return model(tokens_BT)


@pytest.fixture(scope="module")
def gqa_rope() -> Transformer:
    return Transformer(ModelConfig(**SMALL, n_kv_heads=2, pos="rope"), rngs=nnx.Rngs(0))


def count_params(model: nnx.Module) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize(
    "tie,pos,mlp,norm,kv", list(itertools.product([True, False], ["rope", "learned"],
                                                  ["swiglu", "gelu"], ["rmsnorm", "layernorm"],
                                                  [0, 2]))
)  # fmt: skip
def test_param_count_matches_closed_form(tie, pos, mlp, norm, kv):
    cfg = ModelConfig(**SMALL, tie_embeddings=tie, pos=pos, mlp=mlp, norm=norm, n_kv_heads=kv)
    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    assert count_params(model) == flops.param_counts(cfg).total


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_causal(pos, gqa_rope):
    cfg = ModelConfig(**SMALL, n_kv_heads=2, pos=pos)  # GQA on
    model = gqa_rope if pos == "rope" else Transformer(cfg, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, cfg.vocab_size)
    t = 9
    changed = tokens.at[:, t + 1 :].set((tokens[:, t + 1 :] + 7) % cfg.vocab_size)
    a, b = forward(model, tokens), forward(model, changed)
    np.testing.assert_allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-6, rtol=1e-6)
    assert np.abs(np.asarray(a[:, t + 1 :] - b[:, t + 1 :])).max() > 1e-3


def test_rope_is_position_dependent(gqa_rope):
    # With RoPE and no learned table, a repeated token still gets different outputs by position.
    logits = forward(gqa_rope, jnp.array([[5, 3, 5, 3, 5, 3, 5, 3, 5, 3, 5, 3, 5, 3, 5, 3]]))
    assert np.abs(np.asarray(logits[0, 2] - logits[0, 4])).max() > 1e-4


def test_gqa_attention_matches_naive_reference():
    cfg = ModelConfig(**SMALL, n_kv_heads=2, pos="learned")
    attn = Attention(cfg, rngs=nnx.Rngs(3), param_dtype=jnp.float32)
    x = jax.random.normal(jax.random.key(0), (2, 7, cfg.d_model))
    q = jnp.einsum("btd,dnh->btnh", x, attn.wq[...])
    k = jnp.einsum("btd,dkh->btkh", x, attn.wk[...])
    v = jnp.einsum("btd,dkh->btkh", x, attn.wv[...])
    group = cfg.n_heads // cfg.kv_heads
    k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)  # q head n -> kv n//G
    s = jnp.einsum("bqnh,bknh->bnqk", q, k) / math.sqrt(cfg.head_dim)
    s = jnp.where(jnp.tril(jnp.ones((7, 7), bool)), s, -jnp.inf)
    ref = jnp.einsum("bnqk,bknh->bqnh", jax.nn.softmax(s, axis=-1), v)
    ref = jnp.einsum("btnh,nhd->btd", ref, attn.wo[...])
    np.testing.assert_allclose(attn(x), ref, atol=1e-5, rtol=1e-5)


def test_depth_scaled_init():
    cfg = ModelConfig(d_model=64, n_layers=8, n_heads=4, vocab_size=64, init_std=0.02)
    attn = Attention(cfg, rngs=nnx.Rngs(0), param_dtype=jnp.float32)
    mlp = MLP(cfg, rngs=nnx.Rngs(1), param_dtype=jnp.float32)
    assert float(jnp.std(attn.wq[...])) == pytest.approx(0.02, rel=0.05)
    assert float(jnp.std(mlp.w_up[...])) == pytest.approx(0.02, rel=0.05)
    # output projections: init_std / sqrt(2 * n_layers) = 0.02 / 4
    assert float(jnp.std(attn.wo[...])) == pytest.approx(0.02 / 4, rel=0.05)
    assert float(jnp.std(mlp.w_down[...])) == pytest.approx(0.02 / 4, rel=0.05)


def test_tied_head_is_embedding_transpose(gqa_rope):
    model = gqa_rope
    assert not hasattr(model, "lm_head")
    tokens = jnp.arange(16)[None] % 61
    x = model.embedding[...][tokens]
    for block in model.blocks:
        x = block(x)
    expected = model.final_norm(x) @ model.embedding[...].T
    np.testing.assert_allclose(forward(model, tokens), expected, atol=1e-5)


def test_every_param_has_logical_names():
    cfg = ModelConfig(**SMALL, pos="learned", norm="layernorm", tie_embeddings=False)
    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        names = var.get_metadata().get("out_sharding")
        assert names and len(names) == len(var.get_value().shape), path


def test_dtypes(gqa_rope):
    auto = ModelConfig(**SMALL)
    assert compute_dtype(auto) == jnp.float32  # CPU
    bf16 = ModelConfig(**SMALL, n_kv_heads=2, compute_dtype="bfloat16")
    assert compute_dtype(bf16) == jnp.bfloat16
    tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, 61)
    m16 = Transformer(bf16, rngs=nnx.Rngs(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(m16, nnx.Param)))
    out16, out32 = forward(m16, tokens), forward(gqa_rope, tokens)
    assert out16.dtype == jnp.float32 and out32.dtype == jnp.float32
    np.testing.assert_allclose(out16, out32, atol=0.05)


def test_cross_entropy(gqa_rope):
    logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
    targets = jnp.array([[0, 1]])
    loss, n = cross_entropy(logits, targets)
    assert float(n) == 2
    assert float(loss) == pytest.approx((-math.log(0.5) - math.log(0.8)) / 2, rel=1e-6)
    loss, n = cross_entropy(logits, targets, jnp.array([[0, 1]]))
    assert float(n) == 1 and float(loss) == pytest.approx(-math.log(0.8), rel=1e-6)
    # an untrained model sits near ln(V)
    tokens = jax.random.randint(jax.random.key(0), (4, 17), 0, 61)
    loss, _ = cross_entropy(forward(gqa_rope, tokens[:, :-1]), tokens[:, 1:])
    assert abs(float(loss) - math.log(61)) < 0.1


def test_learned_positions_reject_long_input():
    cfg = ModelConfig(**SMALL, pos="learned")
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="seq_len"):
        model(jnp.zeros((1, 17), jnp.int32))


@pytest.mark.parametrize("head_dim", [4, 8, 16, 32, 64, 128])
def test_fast_causal_attention_equals_the_reference(head_dim, monkeypatch):
    """The CPU fast path (`causal_attention`) against jax.nn.dot_product_attention's XLA
    reference: outputs and gradients within float32 tolerance, causal, for head dims 4-128."""
    from scaling import model as M

    B, T, N = 2, 24, 3
    # inputs from numpy: an eager jax.random draw compiles a threefry program per new shape
    # (about 1 CPU-s each at every head dim), more than the attention itself
    rng = np.random.default_rng(head_dim)
    q, k, v, w = (
        jnp.asarray(rng.standard_normal((B, T, N, head_dim)), jnp.float32) for _ in "qkvw"
    )
    for scale in (None, 1.0 / head_dim):  # standard and muP scaling

        def ref(q, k, v, scale=scale):
            return jax.nn.dot_product_attention(
                q, k, v, scale=scale, is_causal=True, implementation="xla"
            )

        def fast(q, k, v, scale=scale):
            return M.causal_attention(q, k, v, scale)

        np.testing.assert_allclose(fast(q, k, v), ref(q, k, v), rtol=1e-5, atol=1e-6)
        grads = [
            jax.grad(lambda *a, f=f, w=w: jnp.sum(f(*a) * w), argnums=(0, 1, 2))(q, k, v)
            for f in (fast, ref)
        ]
        for g_fast, g_ref in zip(*grads, strict=True):
            np.testing.assert_allclose(g_fast, g_ref, rtol=1e-4, atol=1e-5)
    later = k.at[:, 10:].set(0.0), v.at[:, 10:].set(7.0)  # keys/values after position 9 changed
    np.testing.assert_array_equal(fast(q, k, v)[:, :10], fast(q, *later)[:, :10])
    # the rule: the fast path on CPU without grouped K/V; the reference otherwise or when forced
    monkeypatch.delenv("SCALING_ATTENTION", raising=False)
    assert M.attention_implementation(jnp.float32, head_dim) == "einsum"
    assert M.attention_implementation(jnp.float32, head_dim, grouped=True) == "xla"
    monkeypatch.setenv("SCALING_ATTENTION", "xla")
    assert M.attention_implementation(jnp.float32, head_dim) == "xla"
    monkeypatch.setenv("SCALING_ATTENTION", " Einsum ")  # case and spaces do not matter
    assert M.attention_implementation(jnp.float32, head_dim) == "einsum"
    monkeypatch.setenv("SCALING_ATTENTION", "flash")  # an unknown name is an error, not ignored
    with pytest.raises(UserError, match=r"SCALING_ATTENTION='flash'.*xla, cudnn, einsum"):
        M.attention_implementation(jnp.float32, head_dim)
