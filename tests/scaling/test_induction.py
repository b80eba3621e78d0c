"""Induction scores find the heads a repeated-sequence task needs.

A tiny model (2 layers x 4 heads) is trained for 1000 steps on repeated random sequences
`BOS r r` (16 random letters/digits, then the same 16 again), which it learns to continue
perfectly. On held-out sequences, the heads with the top prefix-matching scores are the ones the
task needs: removing them drops the second-copy accuracy towards chance, while removing as many
heads of low mask-gradient importance does not. (With a single period the heads may find "the
token after the earlier copy" by relative position, which RoPE makes easy, rather than by
content; a model trained on varied periods needs thousands of steps, too slow for a test. The
scores measure where a head attends and what it writes, whatever the mechanism.)

The fast test checks the score computations themselves on an untrained model.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling import config, engine, optim, sharding
from scaling.config import ModelConfig
from scaling.evals import importance as I
from scaling.model import Transformer, attention_probs

HALF, STEPS = 16, 1000


@pytest.fixture(scope="module")
def induction_model() -> Transformer:
    cfg = config.from_dict(
        {
            "model": {"d_model": 64, "n_layers": 2, "n_heads": 4, "seq_len": 2 * HALF},
            "train": {"steps": STEPS, "batch_size": 32, "lr": 3e-3, "warmup_steps": 20},
        }
    )
    mesh = sharding.make_mesh(cfg, jax.devices()[:1])  # one device: no collectives to stall
    eng = engine.engine(cfg, mesh)
    with jax.set_mesh(mesh):
        state = eng.init(jax.random.key(0))
        for s in range(STEPS):
            batch = engine.put(I.repeated_sequences(32, HALF, seed=1000 + s), eng.batch_sharding)
            state, _ = eng.step(state, batch, np.float32(optim.lr_at(cfg.train, s)))
    return nnx.merge(eng.graphdef, state["params"], state["other"])


def second_copy_accuracy(model, tokens, head_mask=None) -> float:
    """Next-token accuracy inside the second copy (positions whose next token is a repeat)."""
    hm = None if head_mask is None else jnp.asarray(head_mask)
    pred = np.asarray(jnp.argmax(model(jnp.asarray(tokens[:, :-1]), head_mask=hm), -1))
    return float((pred[:, HALF + 1 :] == tokens[:, HALF + 2 :]).mean())


@pytest.mark.slow
def test_top_induction_heads_are_the_ones_the_task_needs(induction_model):
    model = induction_model
    L, N = model.cfg.n_layers, model.cfg.n_heads
    tokens = I.repeated_sequences(64, HALF, seed=5)  # seeds >= 1000 were the training data
    chance = 1 / len(I.REPEAT_ALPHABET)
    base = second_copy_accuracy(model, tokens)
    assert base > 0.9
    ind = I.induction_scores(model, n_seq=16, half=HALF)
    score = ind["prefix"].ravel()
    imp, _ = I.sequence_mask_gradients(model, tokens, np.arange(HALF + 1, 2 * HALF))
    imp = imp.ravel()

    def without(heads) -> float:
        hm = np.ones(L * N, np.float32)
        hm[list(heads)] = 0.0
        return second_copy_accuracy(model, tokens, hm.reshape(L, N))

    k = max(1, int(np.sum(score > 0.3)))  # the clear induction heads
    top = np.argsort(-score)[:k]
    low = np.argsort(imp)[:k]
    # the top-k induction heads are (among) the k heads whose removal hurts most: compare with
    # every other set of k heads
    drops = {c: base - without(c) for c in itertools.combinations(range(L * N), k)}
    top_drop = base - without(top)
    print("prefix", score.round(3), "imp", imp.round(4), "k", k, "top drop", top_drop)
    assert top_drop >= np.quantile(list(drops.values()), 0.9) - 1e-9, sorted(drops.values())
    # removing the induction heads drops accuracy towards chance; as many unimportant heads: not
    assert without(top) < chance + 0.5 * (base - chance), (without(top), base)
    assert without(low) > base - 0.1, (without(low), base)
    # and the copying score of the top induction head is positive (it raises attended tokens)
    assert ind["copying"].ravel()[top[0]] > 0


def test_prefix_scores_read_the_attention_at_the_right_offset():
    model = Transformer(
        ModelConfig(d_model=32, n_layers=2, n_heads=4, seq_len=64), rngs=nnx.Rngs(0)
    )
    tokens = I.repeated_sequences(4, 10, seed=1)
    assert tokens.shape == (4, 21) and (tokens[:, 1:11] == tokens[:, 11:]).all()
    ind = I.induction_scores(model, n_seq=4, half=10, seed=1)
    x = model.embed(jnp.asarray(tokens))
    for layer, block in enumerate(model.blocks):
        probs = np.asarray(attention_probs(*block.attn.qkv(block.attn_norm(x))[:2]))
        # query 10 + i holds token i; the token after its first copy sits at i + 1
        want = np.mean([probs[:, :, 10 + i, i + 1] for i in range(1, 11)], axis=(0, 1))
        np.testing.assert_allclose(ind["prefix"][layer], want, rtol=1e-5, atol=1e-7)
        x = block(x)
    assert ind["copying"].shape == (2, 4) and np.isfinite(ind["copying"]).all()
