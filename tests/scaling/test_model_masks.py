"""Component masks in the decoder: all ones is bitwise the unmasked model, a zero removes exactly
one head's (or one MLP block's) contribution, per-row masks, and the sharded path under jit."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling import sharding
from scaling.config import ModelConfig, from_dict
from scaling.model import Transformer, attention, attention_probs

SMALL = dict(d_model=32, n_layers=2, n_heads=4, vocab_size=61, seq_len=16, d_ff=48)
L, N = SMALL["n_layers"], SMALL["n_heads"]


@nnx.jit
def forward(model, tokens, head_mask=None, ffn_mask=None):
    return model(tokens, head_mask=head_mask, ffn_mask=ffn_mask)


def tokens(b: int = 3, t: int = 16, seed: int = 1) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), (b, t), 0, SMALL["vocab_size"])


@pytest.mark.parametrize(
    "pos,mlp,norm,kv", [("rope", "swiglu", "rmsnorm", 2), ("learned", "gelu", "layernorm", 0)]
)
def test_all_ones_masks_are_bitwise_the_unmasked_model(pos, mlp, norm, kv):
    cfg = ModelConfig(**SMALL, pos=pos, mlp=mlp, norm=norm, n_kv_heads=kv)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    x = tokens()
    plain = np.asarray(forward(model, x))
    ones_h, ones_f = jnp.ones((L, N)), jnp.ones((L,))
    for hm, fm in [(ones_h, None), (None, ones_f), (ones_h, ones_f)]:
        np.testing.assert_array_equal(np.asarray(forward(model, x, hm, fm)), plain)
    # eager (no jit) too, and per-row masks of ones
    eager = np.asarray(model(x, head_mask=jnp.ones((3, L, N)), ffn_mask=jnp.ones((3, L))))
    np.testing.assert_array_equal(eager, np.asarray(model(x)))


def manual_forward(model: Transformer, x_BT, head_mask: np.ndarray, ffn_mask: np.ndarray):
    """The masked forward written out by hand from the model's parts, with attention computed
    from explicit softmax weights (`attention_probs`) instead of `attention`."""
    x = model.embed(x_BT)
    for layer, block in enumerate(model.blocks):
        q, k, v = block.attn.qkv(block.attn_norm(x))
        probs_BNTS = attention_probs(q, k)
        v_BSNH = jnp.repeat(v, q.shape[2] // v.shape[2], axis=2)
        heads_BTNH = jnp.einsum("bnts,bsnh->btnh", probs_BNTS, v_BSNH)
        # each head's own contribution to the residual stream, then a masked sum
        per_head_BTND = jnp.einsum("btnh,nhd->btnd", heads_BTNH, block.attn.wo[...])
        x = x + jnp.einsum("btnd,n->btd", per_head_BTND, head_mask[layer])
        x = x + ffn_mask[layer] * block.mlp(block.mlp_norm(x))
    return model.logits(model.final_norm(x))


def test_attention_probs_match_attention():
    model = Transformer(ModelConfig(**SMALL, n_kv_heads=2), rngs=nnx.Rngs(0))
    q, k, v = model.blocks[0].attn.qkv(model.blocks[0].attn_norm(model.embed(tokens())))
    probs = attention_probs(q, k)
    np.testing.assert_allclose(np.asarray(probs.sum(-1)), 1.0, rtol=1e-6)
    assert float(jnp.abs(jnp.triu(probs, 1)).max()) == 0.0  # causal
    want = jnp.einsum("bnts,bsnh->btnh", probs, jnp.repeat(v, 2, axis=2))
    np.testing.assert_allclose(np.asarray(attention(q, k, v)), np.asarray(want), atol=1e-6)


@pytest.mark.parametrize("layer,head", [(0, 1), (1, 3)])
def test_zeroing_a_head_removes_exactly_its_contribution(layer, head):
    model = Transformer(ModelConfig(**SMALL, n_kv_heads=2), rngs=nnx.Rngs(0))
    x = tokens()
    hm, fm = np.ones((L, N), np.float32), np.ones((L,), np.float32)
    hm[layer, head] = 0.0
    got = np.asarray(forward(model, x, jnp.asarray(hm), None))
    want = np.asarray(manual_forward(model, x, hm, fm))
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
    # and the head mattered: the output moved
    assert np.abs(got - np.asarray(forward(model, x))).max() > 1e-3
    # a fractional mask scales the contribution linearly (the manual sum is linear in it)
    hm[layer, head] = 0.5
    got = np.asarray(forward(model, x, jnp.asarray(hm), None))
    np.testing.assert_allclose(got, np.asarray(manual_forward(model, x, hm, fm)), atol=2e-5)


def test_zeroing_an_ffn_removes_exactly_that_block():
    model = Transformer(ModelConfig(**SMALL, mlp="gelu"), rngs=nnx.Rngs(0))
    x = tokens()
    hm, fm = np.ones((L, N), np.float32), np.array([1.0, 0.0], np.float32)
    got = np.asarray(forward(model, x, None, jnp.asarray(fm)))
    np.testing.assert_allclose(got, np.asarray(manual_forward(model, x, hm, fm)), atol=2e-5)
    assert np.abs(got - np.asarray(forward(model, x))).max() > 1e-3


def test_per_row_masks_equal_one_forward_per_row():
    model = Transformer(ModelConfig(**SMALL), rngs=nnx.Rngs(0))
    x = tokens(b=3)
    rng = np.random.default_rng(0)
    hm = (rng.random((3, L, N)) > 0.5).astype(np.float32)
    fm = (rng.random((3, L)) > 0.5).astype(np.float32)
    batched = np.asarray(forward(model, x, jnp.asarray(hm), jnp.asarray(fm)))
    for r in range(3):
        one = forward(model, x[r : r + 1], jnp.asarray(hm[r]), jnp.asarray(fm[r]))
        np.testing.assert_allclose(batched[r], np.asarray(one)[0], atol=1e-6)


def test_bad_mask_shapes_raise():
    model = Transformer(ModelConfig(**SMALL), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="head_mask"):
        model(tokens(), head_mask=jnp.ones((L, N + 1)))
    with pytest.raises(ValueError, match="ffn_mask"):
        model(tokens(), ffn_mask=jnp.ones((L + 1,)))


def test_masks_on_a_sharded_model_under_jit():
    cfg = from_dict(
        {
            "model": {**SMALL, "vocab_size": 64, "n_kv_heads": 2},
            "mesh": {"data": 2, "fsdp": 2, "tensor": 2},
            "train": {"batch_size": 8},
        }
    )
    mesh = sharding.make_mesh(cfg)
    sharded = sharding.create_sharded(lambda: Transformer(cfg.model, rngs=nnx.Rngs(0)), mesh)
    graphdef, state = nnx.split(sharded)
    single = nnx.merge(graphdef, jax.device_put(state, jax.devices()[0]))
    x = jax.random.randint(jax.random.key(2), (8, 16), 0, 64)
    hm = jnp.asarray(np.array(list(itertools.islice(itertools.cycle([1.0, 0.0, 1.0]), L * N))))
    hm, fm = hm.reshape(L, N), jnp.array([0.0, 1.0])

    def loss(model, x, hm, fm):  # the gradient w.r.t. the masks is what importance scores use
        return jnp.mean(jax.nn.log_softmax(model(x, head_mask=hm, ffn_mask=fm))[..., 0])

    grad = nnx.jit(jax.grad(loss, argnums=(2, 3)))
    want = forward(single, x, hm, fm)
    want_g = grad(single, x, hm, fm)
    with jax.set_mesh(mesh):
        xs = jax.device_put(x, sharding.batch_sharding(mesh))
        got = forward(sharded, xs, hm, fm)
        got_g = grad(sharded, xs, hm, fm)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
    for g, w in zip(got_g, want_g, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-6, rtol=1e-4)
