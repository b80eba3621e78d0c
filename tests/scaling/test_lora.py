"""LoRA / QLoRA wrapper: exactness at B = 0, merge/unmerge, freezing, counts, quantised base."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling import lora, quant, sharding
from scaling.config import ModelConfig, RunConfig, TrainConfig
from scaling.errors import UserError
from scaling.evals import finetune as F
from scaling.evals.finetune_spec import Settings, parse_method
from scaling.model import Transformer

CFG = ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, seq_len=48)
SMALL = ModelConfig(d_model=16, n_layers=1, n_heads=2, seq_len=48)  # training tests: fast compile
X = (jnp.arange(2 * 24).reshape(2, 24) * 7) % 256


def _model(cfg=CFG, seed=0):
    return Transformer(cfg, rngs=nnx.Rngs(seed))


def _randomise_b(model, seed=1):
    for i, m in enumerate(lora.lora_modules(model)):
        shape = m.lora_b[...].shape
        m.lora_b[...] = 0.05 * jax.random.normal(jax.random.key(seed + i), shape)


def test_zero_b_gives_exactly_the_base_output():
    model = _model()
    y0 = model(X)
    wrapped = lora.apply_lora(model, lora.LoRASpec(rank=4), nnx.Rngs(3))
    assert len(wrapped) == 2 * 7 and "blocks.1.attn.wo" in wrapped
    assert jnp.array_equal(model(X), y0)  # bitwise, not approximately
    assert all(jnp.abs(m.lora_a[...]).max() > 0 for m in lora.lora_modules(model))


def test_merged_unmerged_and_stripped_agree():
    model = _model()
    lora.apply_lora(model, lora.LoRASpec(rank=3, alpha=6.0), nnx.Rngs(3))
    _randomise_b(model)
    y = model(X)
    assert not jnp.allclose(y, _model()(X), atol=1e-3)  # the adapters do something
    lora.merge_lora(model)
    assert all(m.merged for m in lora.lora_modules(model))
    np.testing.assert_allclose(model(X), y, atol=2e-5, rtol=1e-5)
    lora.unmerge_lora(model)
    np.testing.assert_allclose(model(X), y, atol=2e-5, rtol=1e-5)
    plain = lora.strip_lora(model)
    assert not lora.lora_modules(plain)
    np.testing.assert_allclose(plain(X), y, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("targets", [(), ("q", "v"), ("o", "down")])
def test_trainable_count_is_r_times_din_plus_dout(targets):
    r = 4
    model = _model()
    dims = {}
    for i, block in enumerate(model.blocks):
        for name, (mod, attr, n_in) in lora.PROJECTIONS.items():
            w = getattr(getattr(block, mod), attr)[...]
            dims[(i, name)] = (int(np.prod(w.shape[:n_in])), int(np.prod(w.shape[n_in:])))
    lora.apply_lora(model, lora.LoRASpec(rank=r, targets=targets), nnx.Rngs(0))
    _, adapters, _ = nnx.split(model, nnx.LoRAParam, ...)
    names = targets or tuple(lora.PROJECTIONS)
    want = sum(r * (din + dout) for (_, n), (din, dout) in dims.items() if n in names)
    assert lora.count_params(adapters) == want
    assert lora.expected_adapter_params(CFG, lora.LoRASpec(rank=r, targets=targets)) == want


def test_adapters_carry_logical_names_that_the_rules_shard():
    model = _model()
    lora.apply_lora(model, lora.LoRASpec(rank=4, quant="int8"), nnx.Rngs(0))
    mesh = jax.make_mesh((2, 2, 2), sharding.MESH_AXES)
    state = nnx.state(model)
    sh = sharding.state_shardings(state, mesh)  # raises on a name without a rule
    wq = model.blocks[0].attn.wq
    assert wq.lora_a.get_metadata()["out_sharding"] == ("embed", "lora_rank")
    assert wq.lora_b.get_metadata()["out_sharding"] == ("lora_rank", "heads", "head_dim")
    b_spec = sh["blocks"][0]["attn"]["wq"]["lora_b"].get_value().spec
    assert tuple(b_spec) == (None, "tensor", None)


@pytest.mark.parametrize("kind", ["int8", "nf4"])
def test_quantised_base_dequantises_within_the_stated_error(kind):
    w = 0.02 * jax.random.normal(jax.random.key(0), (128, 4, 16))
    q = quant.QuantizedWeight(w, ("embed", "heads", "head_dim"), 1, kind)
    deq = q.dequantize(jnp.float32)
    err = jnp.abs(deq - w)
    assert deq.shape == w.shape and q.block == 64
    assert bool(jnp.all(err <= q.max_error_bound() * (1 + 1e-5) + 1e-9))
    stated = 1 / 254 if kind == "int8" else quant.NF4_MAX_HALF_GAP
    assert float((err / jnp.abs(w).max()).max()) <= stated
    # measured storage: codes + float32 scales versus the float32 matrix
    ratio = q.nbytes() / w.nbytes
    assert ratio == pytest.approx((1.0 if kind == "int8" else 0.5) / 4 + 1 / 64, rel=1e-6)


def test_nf4_levels_match_the_published_table():
    assert quant.NF4_LEVELS[0] == -1 and quant.NF4_LEVELS[-1] == 1 and 0 in quant.NF4_LEVELS
    np.testing.assert_allclose(quant.NF4_LEVELS[[1, 8, 14]], [-0.6962, 0.0796, 0.7230], atol=1e-4)


def _base(cfg: ModelConfig) -> F.Base:
    run = RunConfig(model=cfg, train=TrainConfig(batch_size=16))
    mesh = sharding.make_mesh(run)
    graphdef, params, other = nnx.split(_model(cfg), nnx.Param, ...)
    return F.Base(run, mesh, graphdef, params, other, 0)


@pytest.mark.parametrize("method", ["lora:r=2", "qlora:r=2"])
def test_a_step_changes_only_adapter_leaves(method):
    base = _base(SMALL)
    before = {k: np.asarray(v) for k, v in nnx.to_flat_state(base.params)}
    s = dataclasses.replace(Settings(), steps=2, save=False, lr=1e-2)
    tuned, info = F.finetune(base, "upper", parse_method(method), 16, s)
    assert info["steps"] == 2 and np.isfinite(info["train_loss_last"])
    assert info["trainable_params"] == lora.expected_adapter_params(SMALL, lora.LoRASpec(rank=2))
    _, adapters, others = nnx.split(tuned, nnx.LoRAParam, ...)
    for m in lora.lora_modules(tuned):
        assert jnp.abs(m.lora_b[...]).max() > 0  # B moved away from zero: the adapter trained
    flat = {k: v.get_value() for k, v in nnx.to_flat_state(others)}
    n_same = 0
    for path, value in flat.items():
        key = tuple(p for p in path if p != "base")  # the base Param now sits inside LoRA
        if key in before and value.dtype == before[key].dtype:
            assert np.array_equal(np.asarray(value), before[key]), path  # bitwise
            n_same += 1
    # embedding + 3 norms, plus the 7 float projection bases for lora (qlora stores them as codes)
    assert n_same == (4 if method.startswith("qlora") else 11)
    if method.startswith("qlora"):
        assert isinstance(tuned.blocks[0].attn.wq.base, quant.QuantizedWeight)
        assert info["base_weight_bytes"] < 0.3 * F.base_weight_bytes(base.model())


@pytest.mark.slow  # tests/scaling/test_finetune.py covers full fine-tuning through the CLI
def test_full_finetuning_trains_every_param_and_lowers_the_loss():
    base = _base(SMALL)
    s = dataclasses.replace(Settings(), steps=6, save=False, lr=1e-2)
    tuned, info = F.finetune(base, "upper", parse_method("full"), 32, s)
    assert info["trainable_params"] == lora.count_params(base.params)
    assert info["train_loss_last"] < info["train_loss_first"]
    assert not jnp.array_equal(
        tuned.blocks[0].attn.wq[...], base.params["blocks"][0]["attn"]["wq"][...]
    )


def test_bad_lora_specs_raise_user_errors():
    with pytest.raises(UserError, match="unknown projection 'qq'"):
        parse_method("lora:r=4,targets=q+qq")
    with pytest.raises(UserError, match="rank r = 0"):
        parse_method("lora:r=0")
    gelu = dataclasses.replace(CFG, mlp="gelu")
    with pytest.raises(UserError, match="unknown projection 'gate'"):
        lora.apply_lora(_model(gelu), lora.LoRASpec(targets=("gate",)), nnx.Rngs(0))
    # a rank above the smallest adapted matrix's min(d_in, d_out) adds nothing: refused, named
    dims = lora.projection_dims(CFG)
    small = min(min(d) for d in dims.values())
    lora.apply_lora(_model(), lora.LoRASpec(rank=small), nnx.Rngs(0))
    with pytest.raises(UserError, match=f"r = {small + 1} exceeds min.d_in, d_out. = {small}"):
        lora.apply_lora(_model(), lora.LoRASpec(rank=small + 1), nnx.Rngs(0))


def test_one_method_has_one_label():
    """`lora:r=4,alpha=8` is `lora:r=4` (alpha defaults to 2r) and targets are a set: spelled
    differently they made different row ids (fine-tuned twice) and split one law into two."""
    assert parse_method("lora:r=4,alpha=8").label == "lora:r=4"
    assert parse_method("lora:r=4,alpha=8").spec.scale == parse_method("lora:r=4").spec.scale
    assert parse_method("lora:r=4,alpha=4").label == "lora:r=4,alpha=4"
    same = {parse_method(t).label for t in ("lora:r=2,targets=v+q", "lora:r=2,targets=q+v+q")}
    assert same == {"lora:r=2,targets=q+v"}
    assert parse_method("qlora:r=2,alpha=4,quant=int8").label == "qlora:r=2,quant=int8"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--rank", "0"], "LoRA rank r = 0: must be a positive integer"),
        (["--rank", "99"], "LoRA rank r = 99 exceeds min(d_in, d_out) = 16"),
        (["--batch", "0"], "train.batch_size = 0: must be a positive integer"),
        (["--heads", "3"], "model.n_heads = 3 does not divide model.d_model = 16"),
    ],
)
def test_finetune_bench_bad_flags_exit_2_before_any_step(capsys, monkeypatch, flags, message):
    """`python -m scaling.evals.finetune_bench --rank 0` ended in a UserError traceback after
    the full fine-tuning step had been compiled and run; --batch 0 measured an empty batch."""
    from scaling.evals import finetune_bench

    def measure(*a, **k):
        raise AssertionError("a step ran: bad flags must exit before any compute")

    monkeypatch.setattr(finetune_bench, "measure", measure)
    shape = ["--d-model", "16", "--layers", "1", "--heads", "2", "--seq-len", "48", "--batch", "2"]
    assert finetune_bench.main([*shape, *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_full_finetuning_of_a_mup_run_keeps_its_hidden_lr_multiplier():
    """Full fine-tuning built its optimiser without the model, so a muP run lost the 1/m
    scaling of its hidden matrices' updates (pre-training has it): the same fine-tuning lr
    meant a different step size at every width. Adam's first step moves each weight by ~lr."""
    cfg = dataclasses.replace(SMALL, param="mup", base_width=4)  # width multiplier m = 4
    base = _base(cfg)
    s = dataclasses.replace(Settings(), steps=1, save=False, lr=1e-2)
    tuned, _ = F.finetune(base, "upper", parse_method("full"), 16, s)
    moved = lambda new, old: float(jnp.abs(new[...] - old[...]).max()) / s.lr  # noqa: E731
    hidden = moved(tuned.blocks[0].attn.wq, base.params["blocks"][0]["attn"]["wq"])
    vector = moved(tuned.embedding, base.params["embedding"])
    assert hidden == pytest.approx(1 / 4, rel=0.05) and vector == pytest.approx(1, rel=0.05)
