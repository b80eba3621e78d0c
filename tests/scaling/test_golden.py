"""Golden outputs of the model and the train step under the default (standard) parametrisation.

Any change to the model, the optimiser or the run id of a default config shows up here: logits of
two fixed models (tied/RoPE/SwiGLU/RMSNorm and untied/learned/GELU/LayerNorm), three jitted train
steps on 8 fake devices (losses and final params), the config hash of the built-in `tiny`
config and the run ids of the built-in grids' plans (what existing sweep directories are keyed by).

The comparison is rtol 1e-5 on the stored sample values, not bitwise: XLA's CPU code depends on
the host's instruction set, so two CI machines of the same platform and JAX version differed in
the last bits (the sha256 of the float32 bytes is still stored, for a same-machine check by hand).
Regenerate deliberately with `SCALING_REGEN_GOLDEN=1 pytest tests/scaling/test_golden.py` and say
why in the commit message.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling import config as C
from scaling import engine, sharding
from scaling.model import Transformer

GOLDEN = Path(__file__).parent / "golden" / "sp_model.json"
SMALL = dict(d_model=32, n_layers=2, n_heads=4, vocab_size=61, seq_len=16, d_ff=48)
VARIANTS = {
    "tied_rope_swiglu_rms": dict(SMALL, n_kv_heads=2),
    "untied_learned_gelu_ln": dict(
        SMALL, tie_embeddings=False, pos="learned", mlp="gelu", norm="layernorm"
    ),
}


def _digest(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(np.asarray(a, np.float32))
    flat = a.ravel()
    picks = flat[:: max(1, flat.size // 8)][:8]
    return {
        "sha256": hashlib.sha256(a.tobytes()).hexdigest(),
        "samples": [float(x) for x in picks],
        "sum": float(np.sum(flat, dtype=np.float64)),
    }


def _params_digest(state) -> dict:
    leaves = [np.asarray(x, np.float32).ravel() for x in jax.tree.leaves(state)]
    return _digest(np.concatenate(leaves))


def _compute() -> dict:
    out: dict = {
        "platform": jax.default_backend(),
        "jax": jax.__version__,
        "tiny_config_hash": C.config_hash(C.load("tiny")),
    }
    tokens = jax.random.randint(jax.random.key(7), (2, 16), 0, 61)
    for name, kw in VARIANTS.items():
        model = Transformer(C.ModelConfig(**kw), rngs=nnx.Rngs(0))
        out[f"{name}/logits"] = _digest(nnx.jit(lambda m, t: m(t))(model, tokens))
    cfg = C.from_dict(
        {
            "model": VARIANTS["tied_rope_swiglu_rms"],
            "train": {"steps": 10, "batch_size": 8, "lr": 1e-2, "warmup_steps": 0},
        }
    )
    mesh = sharding.make_mesh(cfg)
    eng = engine.engine(cfg, mesh)
    batch = np.asarray(jax.random.randint(jax.random.key(3), (8, 17), 0, 61), np.int32)
    with jax.set_mesh(mesh):
        state = eng.init(jax.random.key(0))
        losses = []
        for lr in (1e-2, 5e-3, 2e-3):
            state, m = eng.step(state, engine.put(batch, eng.batch_sharding), jnp.float32(lr))
            losses.append(float(m["loss"]))
    out["train/losses"] = losses
    out["train/params"] = _params_digest(state["params"])
    return out


def test_standard_parametrisation_golden_outputs() -> None:
    got = _compute()
    if os.environ.get("SCALING_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        got["grid_run_ids_sha256"] = _grid_ids()
        GOLDEN.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
        pytest.skip(f"regenerated {GOLDEN}")
    want = json.loads(GOLDEN.read_text())
    assert got["tiny_config_hash"] == want["tiny_config_hash"], "run ids of default configs moved"
    for key, w in want.items():
        if key in ("platform", "jax", "tiny_config_hash", "grid_run_ids_sha256"):
            continue
        g = got[key]
        if key == "train/losses":
            np.testing.assert_allclose(g, w, rtol=1e-5, err_msg=key)
        else:
            np.testing.assert_allclose(g["samples"], w["samples"], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(g["sum"], w["sum"], rtol=1e-5, atol=1e-5)


def _grid_ids() -> dict[str, str]:
    from sweeps.grid import load_grid, plan_grid

    out = {}
    for name in ("demo", "cpu-small", "gpt3-ladder", "h100-isoflop"):
        # the demo's first seed: the second seed (2026-12-04) added runs, it moved none
        sets = ["seeds=[0]"] if name == "demo" else []
        ids = " ".join(c.run_id for c in plan_grid(load_grid(name, sets)).cells)
        out[name] = hashlib.sha256(ids.encode()).hexdigest()[:16]
    return out


def test_builtin_grids_keep_their_run_ids() -> None:
    """Planning the built-in grids gives the same run ids as before muP and the hparam axes."""
    assert _grid_ids() == json.loads(GOLDEN.read_text())["grid_run_ids_sha256"]
