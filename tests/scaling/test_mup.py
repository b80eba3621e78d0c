"""muP (scaling.mup): init and per-parameter lr multipliers against closed forms, the readout and
attention scales, the axis-name rules, and the errors for bad input."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling import cli, mup, optim, sharding
from scaling import config as C
from scaling.errors import UserError
from scaling.model import Attention, Transformer

BASE = 32
SHAPE = dict(n_layers=2, vocab_size=61, seq_len=16)


def _cfg(width: int, param: str = "mup", base: int = BASE, **kw) -> C.ModelConfig:
    return C.ModelConfig(
        d_model=width, n_heads=width // 8, param=param, base_width=base if param == "mup" else 0,
        **SHAPE, **kw,
    )  # fmt: skip


def _params(model: nnx.Module) -> dict[str, nnx.Param]:
    return {"/".join(map(str, p)): v for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)}


@pytest.mark.parametrize("width", [64, 256])
def test_init_std_matches_closed_form(width: int) -> None:
    """Hidden matrices: SP std x sqrt(base/width) (exactly the SP draw rescaled, and the sample
    std within 3% of the closed form); embedding and norms: the SP values."""
    sp = _params(Transformer(_cfg(width, "sp"), rngs=nnx.Rngs(0)))
    mu = _params(Transformer(_cfg(width), rngs=nnx.Rngs(0)))
    f = math.sqrt(BASE / width)
    depth = 1 / math.sqrt(2 * SHAPE["n_layers"])
    hidden = {"wq": 0.02, "wk": 0.02, "wv": 0.02, "w_up": 0.02, "w_gate": 0.02}
    hidden |= {"wo": 0.02 * depth, "w_down": 0.02 * depth}
    for name, var in mu.items():
        leaf = name.rsplit("/", 1)[-1]
        if leaf in hidden:
            np.testing.assert_allclose(var[...], sp[name][...] * f, rtol=1e-6, atol=1e-9)
            assert float(jnp.std(var[...])) == pytest.approx(hidden[leaf] * f, rel=0.03), name
        else:  # embedding, norm scales
            np.testing.assert_array_equal(var[...], sp[name][...])
    assert set(hidden) <= {n.rsplit("/", 1)[-1] for n in mu}


@pytest.mark.parametrize("width", [64, 256])
def test_adam_lr_multipliers_match_closed_form(width: int) -> None:
    """First Adam update on unit gradients is ~1 per coordinate; the muP partition scales it by
    base/width for hidden matrices and leaves vector-like params at 1."""
    cfg = _cfg(width)
    params = nnx.state(Transformer(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    tx = optim.make_optimizer(C.TrainConfig(weight_decay=0.0, grad_clip=0.0), cfg)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    labels = mup.param_labels(params)
    got = {
        jax.tree_util.keystr(p): float(u.ravel()[0])
        for p, u in jax.tree_util.tree_leaves_with_path(updates)
    }
    want = {
        jax.tree_util.keystr(p): (BASE / width if lab == mup.HIDDEN else 1.0)
        for p, lab in jax.tree_util.tree_leaves_with_path(labels)
    }
    assert len(got) == len(want) == 20
    for key, value in want.items():
        assert got[key + ".value"] == pytest.approx(value, rel=1e-6), key
    assert sum(v != 1.0 for v in want.values()) == 14  # 7 hidden matrices per block


def test_logits_scale_as_base_over_width() -> None:
    """Same parameters, base widths 32 and 64 at d_model 64: multipliers 1/2 and 1."""
    m32 = Transformer(_cfg(64, base=32), rngs=nnx.Rngs(0))
    m64 = Transformer(_cfg(64, base=64), rngs=nnx.Rngs(0))
    nnx.update(m64, nnx.state(m32))
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 61)
    np.testing.assert_allclose(2.0 * m32(tokens), m64(tokens), rtol=1e-5, atol=1e-6)


def test_attention_uses_one_over_head_dim() -> None:
    cfg = _cfg(64, pos="learned")
    attn = Attention(cfg, rngs=nnx.Rngs(3), param_dtype=jnp.float32)
    x = jax.random.normal(jax.random.key(0), (2, 7, cfg.d_model))
    q = jnp.einsum("btd,dnh->btnh", x, attn.wq[...])
    k = jnp.einsum("btd,dkh->btkh", x, attn.wk[...])
    v = jnp.einsum("btd,dkh->btkh", x, attn.wv[...])
    s = jnp.einsum("bqnh,bknh->bnqk", q, k) / cfg.head_dim
    s = jnp.where(jnp.tril(jnp.ones((7, 7), bool)), s, -jnp.inf)
    ref = jnp.einsum("bnqk,bknh->bqnh", jax.nn.softmax(s, axis=-1), v)
    ref = jnp.einsum("btnh,nhd->btd", ref, attn.wo[...])
    np.testing.assert_allclose(attn(x), ref, atol=1e-5, rtol=1e-5)


def test_every_parameter_axis_of_the_sharding_table_has_a_mup_kind() -> None:
    names = {n for n in sharding.LOGICAL_AXIS_RULES if not n.startswith("act_")}
    assert names == set(mup.AXIS_KIND)
    assert mup.role(("embed", "mlp")) == mup.HIDDEN
    assert mup.role(("vocab", "embed")) == mup.VECTOR
    assert mup.role(("norm",)) == mup.VECTOR


def test_unknown_axis_name_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(mup.AXIS_KIND, "mlp")
    with pytest.raises(UserError, match="logical axis 'mlp'.*AXIS_KIND"):
        nnx.eval_shape(lambda: Transformer(_cfg(64), rngs=nnx.Rngs(0)))
    Transformer(_cfg(64, "sp"), rngs=nnx.Rngs(0))  # SP never consults the muP rules


@pytest.mark.parametrize("width", [0, -8])
def test_bad_base_width_exits_2_with_one_line(width: int, capsys, tmp_path) -> None:
    rc = cli.main(
        ["train", "tiny", "--set", "model.param=mup", "--set", f"model.base_width={width}",
         "--out", str(tmp_path / "run")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"error: model.base_width = {width}") and "base_width = 64" in err


def test_unknown_axis_name_via_cli_exits_2(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.delitem(mup.AXIS_KIND, "heads")
    rc = cli.main(
        ["train", "tiny", "--set", "model.param=mup", "--set", "model.base_width=32",
         "--set", "data.dataset=python_source/small", "--set", "eval.enabled=false",
         "--out", str(tmp_path / "run"), "--no-progress"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "'heads'" in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # failed before any training


def test_sp_config_hash_is_unchanged_by_the_new_fields() -> None:
    sp = C.load("tiny")
    mu = C.load("tiny", ["model.param=mup", "model.base_width=48"])
    assert C.config_hash(sp) != C.config_hash(mu)
    assert "param" in C.to_toml(sp) and C.config_hash(C.from_dict(_roundtrip(sp))) == (
        C.config_hash(sp)
    )


def _roundtrip(cfg: C.RunConfig) -> dict:
    import tomllib

    return tomllib.loads(C.to_toml(cfg))


def test_mup_run_checkpoints_and_resumes(tmp_path) -> None:
    """The optax partition's state goes through the sharded engine and the Orbax checkpoint."""
    from scaling.train import train

    cfg = C.load(
        "tiny",
        ["model.preset=cpu-3xs", "model.seq_len=32", "model.param=mup", "model.base_width=8",
         "train.batch_size=16", "train.steps=8", "train.checkpoint_every=4",
         "data.dataset=python_source/small", "data.val_tokens=2048", "data.task_mix=0.0",
         "eval.enabled=false"],
    )  # fmt: skip
    out = tmp_path / "run"
    assert train(cfg, out, progress=False, stop_after=4)["status"] == "stopped"
    result = train(cfg, out, progress=False)
    assert result["status"] == "done" and result["resumed_from_step"] == 4
    assert math.isfinite(result["final_val_loss"]) and result["config"]["model"]["param"] == "mup"


@pytest.mark.parametrize("width", [32, 256])
def test_weight_decay_is_width_independent(width: int) -> None:
    """The muP partition scaled the decay with the Adam direction, so a hidden matrix decayed by
    lr x wd x base/width: 8x less at d256 than at d32, and a wd tuned at the base width did not
    transfer. With zero gradients the update is now wd x p for every decayed matrix."""
    cfg = _cfg(width)
    params = nnx.state(Transformer(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    tx = optim.make_optimizer(C.TrainConfig(weight_decay=0.1, grad_clip=0.0), cfg)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    pairs = zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True)
    decayed = [(u, p) for u, p in pairs if p.ndim >= 2]
    assert len(decayed) == 15  # 7 hidden matrices per block, 2 blocks, and the embedding
    for u, p in decayed:
        np.testing.assert_allclose(u, 0.1 * p, rtol=1e-6)
