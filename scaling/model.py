"""Decoder-only transformer in Flax NNX, configured by `ModelConfig`.

Blocks are pre-norm: `x += attn(norm(x)); x += mlp(norm(x))`, then a final norm and the LM head
(tied: `logits = x @ embedding.T`). No biases in linear layers. Options: RMSNorm | LayerNorm,
RoPE | learned positions, SwiGLU | GELU MLP, tied | untied head, grouped-query attention.

Dtypes: parameters are stored in `cfg.param_dtype` (float32 by default) and cast to the compute
dtype (`compute_dtype(cfg)`) at use; norms, RoPE and the softmax run in float32; logits are
returned in float32. Attention goes through `jax.nn.dot_product_attention(is_causal=True)`,
which takes K/V with fewer heads natively (GQA) and uses cuDNN flash attention on GPU in bf16;
on CPU, without grouped K/V, the same computation as two plain einsums (`causal_attention`,
faster there; `attention_implementation` holds the rule).

Component masks (for ablation studies, `scaling.evals.ablate`): `model(tokens, head_mask=m_LN,
ffn_mask=m_L)` scales head n of layer l's output (before the output projection) by m_LN[l, n] and
the MLP block of layer l by m_L[l]. A 0 removes that head's or block's contribution to the
residual stream; all ones is bitwise the unmasked forward (on CPU). Leading batch axes are
allowed (m_BLN, m_BL: one mask per row, so one backward pass gives per-row gradients w.r.t.
the masks). Masks are small replicated arrays: they need no sharding rule.

Every parameter carries logical axis names (`out_sharding` metadata, e.g. `("embed", "mlp")`);
`scaling.sharding.LOGICAL_AXIS_RULES` maps them to mesh axes. Metadata is not applied eagerly, so
a model can be built anywhere; `scaling.sharding.create_sharded` builds it sharded.

`cfg.param = "mup"` (scaling.mup) rescales the init of each parameter by its logical axis names,
multiplies the logits by base_width / d_model and scales attention by 1/head_dim; under the
default "sp" none of that code runs.
"""

from __future__ import annotations

import math
import os
import warnings

import jax
import jax.numpy as jnp
from flax import nnx

from scaling import mup
from scaling.config import ModelConfig
from scaling.errors import UserError
from scaling.sharding import constrain

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(cfg: ModelConfig) -> jnp.dtype:
    """Activation/matmul dtype: cfg.compute_dtype, where "auto" is bf16 on GPU/TPU, f32 on CPU."""
    if cfg.compute_dtype == "auto":
        return jnp.dtype(jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16)
    return jnp.dtype(_DTYPES[cfg.compute_dtype])


ATTENTION_ENV = "SCALING_ATTENTION"
ATTENTION_IMPLS = ("xla", "cudnn", "einsum")


def forced_attention() -> str | None:
    """The kernel $SCALING_ATTENTION forces (None: unset, the automatic rule), or UserError for
    an unknown name. `scaling.train` calls it at setup, so a typo stops the run before compute."""
    raw = os.environ.get(ATTENTION_ENV, "")
    forced = raw.strip().lower()
    if forced and forced not in ATTENTION_IMPLS:
        raise UserError(
            f"{ATTENTION_ENV}={raw!r}: unknown attention implementation; use one of "
            f"{', '.join(ATTENTION_IMPLS)} (einsum only without grouped K/V), or unset it for "
            f"the automatic choice"
        )
    return forced or None


def attention_implementation(dtype: jnp.dtype, head_dim: int, grouped: bool = False) -> str:
    """The attention kernel for a shape on this backend (the small rule of issue 13):
    "cudnn" (flash attention) on GPU for bf16/fp16 with a supported head dim; "einsum" on CPU
    without grouped K/V (`causal_attention`: 1.2-2.2x faster than XLA's reference for the
    forward and backward pass at head dims 4-128, equal within float tolerance, tested); else
    "xla" (`jax.nn.dot_product_attention`'s reference implementation).

    Override with the environment variable SCALING_ATTENTION=xla|cudnn|einsum.
    """
    forced = forced_attention()
    if forced in ("xla", "cudnn") or (forced == "einsum" and not grouped):
        return forced
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    if jax.default_backend() == "gpu" and half and head_dim % 8 == 0 and head_dim <= 128:
        return "cudnn"
    if jax.default_backend() == "cpu" and not grouped:
        return "einsum"
    return "xla"


def causal_attention(
    q_BTNH: jax.Array, k_BTNH: jax.Array, v_BTNH: jax.Array, scale: float | None = None
) -> jax.Array:
    """The reference computation of `jax.nn.dot_product_attention(is_causal=True)` (scores in
    float32, the same large negative mask value, softmax in float32) written as two einsums in
    the [B, N, T, S] layout, without the reference's vmap over K/V head groups, whose layout
    changes dominate the time at tiny head dims on CPU. Same heads for q, k and v."""
    H = q_BTNH.shape[-1]
    logits_dtype = jnp.promote_types(q_BTNH.dtype, jnp.float32)
    scores_BNTS = jnp.einsum("btnh,bsnh->bnts", q_BTNH, k_BTNH, preferred_element_type=logits_dtype)
    scale = 1.0 / math.sqrt(H) if scale is None else scale
    scores_BNTS = scores_BNTS * jnp.array(scale, dtype=logits_dtype)
    T, S = scores_BNTS.shape[-2:]
    masked = jnp.asarray(-0.7 * float(jnp.finfo(jnp.float32).max), logits_dtype)
    scores_BNTS = jnp.where(jnp.tril(jnp.ones((T, S), bool)), scores_BNTS, masked)
    probs_BNTS = jax.nn.softmax(scores_BNTS.astype(jnp.float32), axis=-1).astype(k_BTNH.dtype)
    return jnp.einsum("bnts,bsnh->btnh", probs_BNTS, v_BTNH)


def attention(
    q_BTNH: jax.Array, k_BTKH: jax.Array, v_BTKH: jax.Array, scale: float | None = None
) -> jax.Array:
    """Causal softmax attention; K/V may have fewer heads (GQA: query head n uses kv head
    n // (N // K)). Scores are scaled by `scale` (None: 1/sqrt(head_dim)). Falls back to XLA if
    cuDNN rejects the shapes or version at trace time."""
    grouped = q_BTNH.shape[2] != k_BTKH.shape[2]
    impl = attention_implementation(q_BTNH.dtype, q_BTNH.shape[-1], grouped)
    if impl == "einsum":
        return causal_attention(q_BTNH, k_BTKH, v_BTKH, scale)
    if impl == "cudnn":
        try:
            return jax.nn.dot_product_attention(
                q_BTNH, k_BTKH, v_BTKH, scale=scale, is_causal=True, implementation="cudnn"
            )
        except (RuntimeError, ValueError, NotImplementedError) as e:
            warnings.warn(f"cuDNN attention unavailable ({e}); using XLA attention", stacklevel=2)
    return jax.nn.dot_product_attention(
        q_BTNH, k_BTKH, v_BTKH, scale=scale, is_causal=True, implementation="xla"
    )


def attention_probs(q_BTNH: jax.Array, k_BTKH: jax.Array, scale: float | None = None) -> jax.Array:
    """The causal attention weights [B, N, T(query), S(key)] that `attention` applies, in
    float32 (for analysis: `attention` itself never materialises them on the cuDNN path).
    Keep the scale in step with `attention` (jax.nn.dot_product_attention's default; pass
    `scale = mup.attention_scale(cfg)` for a muP model)."""
    N, K, H = q_BTNH.shape[2], k_BTKH.shape[2], q_BTNH.shape[3]
    k_BTNH = jnp.repeat(k_BTKH, N // K, axis=2)
    scores = jnp.einsum("btnh,bsnh->bnts", q_BTNH, k_BTNH, preferred_element_type=jnp.float32)
    T, S = scores.shape[-2:]
    causal_TS = jnp.tril(jnp.ones((T, S), bool))
    scores = scores / math.sqrt(H) if scale is None else scores * scale
    scores = jnp.where(causal_TS, scores, -jnp.inf)
    return jax.nn.softmax(scores, axis=-1)


def _layer_mask(mask: jax.Array | None, layer: int, *, heads: bool, dtype) -> jax.Array | None:
    """Layer `layer` of a [..., L, N] head mask as [B|1, 1, N, 1], or of a [..., L] FFN mask as
    [B|1, 1, 1]; None stays None (the unmasked path, no extra op)."""
    if mask is None:
        return None
    m = (mask[..., layer, :] if heads else mask[..., layer]).astype(dtype)
    return m.reshape((-1, 1, m.shape[-1], 1) if heads else (-1, 1, 1))


def _param(
    rngs: nnx.Rngs, shape: tuple[int, ...], std: float, names: tuple[str, ...], dtype
) -> nnx.Param:
    """A normal(0, std) parameter with logical axis names (applied later, not eagerly)."""
    value = std * jax.random.normal(rngs.params(), shape, dtype=jnp.float32)
    return nnx.Param(value.astype(dtype), out_sharding=names, eager_sharding=False)


def _const(value: float, shape: tuple[int, ...], names: tuple[str, ...], dtype) -> nnx.Param:
    return nnx.Param(jnp.full(shape, value, dtype), out_sharding=names, eager_sharding=False)


class Norm(nnx.Module):
    """RMSNorm (scale only) or LayerNorm (scale and bias), computed in float32."""

    def __init__(self, cfg: ModelConfig, param_dtype):
        self.kind = cfg.norm
        self.eps = 1e-6 if cfg.norm == "rmsnorm" else 1e-5
        self.scale = _const(1.0, (cfg.d_model,), ("norm",), param_dtype)
        if cfg.norm == "layernorm":
            self.bias = _const(0.0, (cfg.d_model,), ("norm",), param_dtype)

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        x = x_BTD.astype(jnp.float32)
        if self.kind == "layernorm":
            x = x - jnp.mean(x, axis=-1, keepdims=True)
        y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps)
        y = y * self.scale[...].astype(jnp.float32)
        if self.kind == "layernorm":
            y = y + self.bias[...].astype(jnp.float32)
        return y.astype(x_BTD.dtype)


def rope(x_BTNH: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding (rotate-half convention), positions 0..T-1, in float32."""
    _, T, _, H = x_BTNH.shape
    freqs_F = theta ** (-jnp.arange(0, H // 2, dtype=jnp.float32) / (H // 2))
    angles_TF = jnp.arange(T, dtype=jnp.float32)[:, None] * freqs_F[None, :]
    sin, cos = jnp.sin(angles_TF)[None, :, None, :], jnp.cos(angles_TF)[None, :, None, :]
    x = x_BTNH.astype(jnp.float32)
    x1, x2 = x[..., : H // 2], x[..., H // 2 :]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTNH.dtype)


class Attention(nnx.Module):
    """Causal multi-head attention with grouped K/V heads (n_kv_heads <= n_heads)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, param_dtype):
        D, N, K, H = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.head_dim
        std, out_std = cfg.init_std, cfg.init_std / math.sqrt(2 * cfg.n_layers)
        self.cfg = cfg
        self.wq = _param(rngs, (D, N, H), std, ("embed", "heads", "head_dim"), param_dtype)
        self.wk = _param(rngs, (D, K, H), std, ("embed", "kv_heads", "head_dim"), param_dtype)
        self.wv = _param(rngs, (D, K, H), std, ("embed", "kv_heads", "head_dim"), param_dtype)
        self.wo = _param(rngs, (N, H, D), out_std, ("heads", "head_dim", "embed"), param_dtype)

    def qkv(self, x_BTD: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Queries [B,T,N,H], keys and values [B,T,K,H] (RoPE applied) of normed input x."""
        dt = x_BTD.dtype
        q_BTNH = jnp.einsum("btd,dnh->btnh", x_BTD, self.wq[...].astype(dt))
        k_BTKH = jnp.einsum("btd,dkh->btkh", x_BTD, self.wk[...].astype(dt))
        v_BTKH = jnp.einsum("btd,dkh->btkh", x_BTD, self.wv[...].astype(dt))
        if self.cfg.pos == "rope":
            q_BTNH = rope(q_BTNH, self.cfg.rope_theta)
            k_BTKH = rope(k_BTKH, self.cfg.rope_theta)
        q_BTNH = constrain(q_BTNH, ("act_batch", "act_seq", "act_heads", "act_head_dim"))
        k_BTKH = constrain(k_BTKH, ("act_batch", "act_seq", "act_kv_heads", "act_head_dim"))
        v_BTKH = constrain(v_BTKH, ("act_batch", "act_seq", "act_kv_heads", "act_head_dim"))
        return q_BTNH, k_BTKH, v_BTKH

    def __call__(self, x_BTD: jax.Array, head_mask: jax.Array | None = None) -> jax.Array:
        """Attention output; `head_mask` ([B|1, 1, N, 1]) scales each head before `wo`."""
        scale = mup.attention_scale(self.cfg) if mup.is_mup(self.cfg) else None
        out_BTNH = attention(*self.qkv(x_BTD), scale)
        if head_mask is not None:
            out_BTNH = out_BTNH * head_mask
        return jnp.einsum("btnh,nhd->btd", out_BTNH, self.wo[...].astype(x_BTD.dtype))


class MLP(nnx.Module):
    """SwiGLU (`down(silu(gate x) * up x)`) or GELU (`down(gelu(up x))`)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, param_dtype):
        D, F = cfg.d_model, cfg.ff_dim
        std, out_std = cfg.init_std, cfg.init_std / math.sqrt(2 * cfg.n_layers)
        self.kind = cfg.mlp
        self.w_up = _param(rngs, (D, F), std, ("embed", "mlp"), param_dtype)
        if cfg.mlp == "swiglu":
            self.w_gate = _param(rngs, (D, F), std, ("embed", "mlp"), param_dtype)
        self.w_down = _param(rngs, (F, D), out_std, ("mlp", "embed"), param_dtype)

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        dt = x_BTD.dtype
        h_BTF = x_BTD @ self.w_up[...].astype(dt)
        if self.kind == "swiglu":
            h_BTF = jax.nn.silu(x_BTD @ self.w_gate[...].astype(dt)) * h_BTF
        else:
            h_BTF = jax.nn.gelu(h_BTF)
        h_BTF = constrain(h_BTF, ("act_batch", "act_seq", "act_mlp"))
        return h_BTF @ self.w_down[...].astype(dt)


class Block(nnx.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, param_dtype):
        self.attn_norm = Norm(cfg, param_dtype)
        self.attn = Attention(cfg, rngs=rngs, param_dtype=param_dtype)
        self.mlp_norm = Norm(cfg, param_dtype)
        self.mlp = MLP(cfg, rngs=rngs, param_dtype=param_dtype)

    def __call__(
        self,
        x_BTD: jax.Array,
        head_mask: jax.Array | None = None,
        ffn_mask: jax.Array | None = None,
    ) -> jax.Array:
        """`head_mask` [B|1, 1, N, 1] and `ffn_mask` [B|1, 1, 1] (see `_layer_mask`) or None."""
        x_BTD = x_BTD + self.attn(self.attn_norm(x_BTD), head_mask)
        x_BTD = constrain(x_BTD, ("act_batch", "act_seq", "act_embed"))
        mlp_BTD = self.mlp(self.mlp_norm(x_BTD))
        if ffn_mask is not None:
            mlp_BTD = mlp_BTD * ffn_mask
        x_BTD = x_BTD + mlp_BTD
        return constrain(x_BTD, ("act_batch", "act_seq", "act_embed"))


class Transformer(nnx.Module):
    """Decoder-only LM: `Transformer(cfg, rngs=nnx.Rngs(seed))(tokens_BT) -> float32 logits_BTV`."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        pd = _DTYPES[cfg.param_dtype]
        D, V = cfg.d_model, cfg.vocab_size
        self.cfg = cfg
        self.embedding = _param(rngs, (V, D), cfg.init_std, ("vocab", "embed"), pd)
        if cfg.pos == "learned":
            self.pos_embedding = _param(
                rngs, (cfg.seq_len, D), cfg.init_std, ("positions", "embed"), pd
            )
        self.blocks = nnx.List([Block(cfg, rngs=rngs, param_dtype=pd) for _ in range(cfg.n_layers)])
        self.final_norm = Norm(cfg, pd)
        if not cfg.tie_embeddings:
            self.lm_head = _param(rngs, (D, V), cfg.init_std, ("embed", "vocab"), pd)
        if mup.is_mup(cfg):
            mup.rescale_init(self, cfg)

    def __call__(
        self,
        tokens_BT: jax.Array,
        *,
        head_mask: jax.Array | None = None,
        ffn_mask: jax.Array | None = None,
    ) -> jax.Array:
        """float32 logits [B, T, V]. Optional masks: `head_mask` [(B,) n_layers, n_heads] and
        `ffn_mask` [(B,) n_layers] (leading axis: none, or one per row); see the module doc."""
        self._check_masks(head_mask, ffn_mask)
        dt = compute_dtype(self.cfg)
        x_BTD = self.embed(tokens_BT)
        for layer, block in enumerate(self.blocks):
            hm = _layer_mask(head_mask, layer, heads=True, dtype=dt)
            fm = _layer_mask(ffn_mask, layer, heads=False, dtype=dt)
            x_BTD = block(x_BTD, hm, fm)
        return self.logits(self.final_norm(x_BTD))

    def _check_masks(self, head_mask: jax.Array | None, ffn_mask: jax.Array | None) -> None:
        L, N = self.cfg.n_layers, self.cfg.n_heads
        hm, fm = head_mask, ffn_mask
        if hm is not None and (hm.ndim not in (2, 3) or tuple(hm.shape[-2:]) != (L, N)):
            raise ValueError(f"head_mask shape {hm.shape}: want [{L}, {N}] or [batch, {L}, {N}]")
        if fm is not None and (fm.ndim not in (1, 2) or fm.shape[-1] != L):
            raise ValueError(f"ffn_mask shape {fm.shape}: want [{L}] or [batch, {L}]")

    def embed(self, tokens_BT: jax.Array) -> jax.Array:
        """Token (+ learned position) embeddings: the residual stream entering block 0."""
        T = tokens_BT.shape[1]
        if T > self.cfg.seq_len and self.cfg.pos == "learned":
            raise ValueError(f"sequence length {T} exceeds model.seq_len = {self.cfg.seq_len}")
        dt = compute_dtype(self.cfg)
        # Gather from a replicated copy: a vocab-sharded gather makes GSPMD rematerialise badly.
        table_VD = constrain(self.embedding[...].astype(dt), (None, None))
        x_BTD = jnp.take(table_VD, tokens_BT, axis=0)
        if self.cfg.pos == "learned":
            x_BTD = x_BTD + self.pos_embedding[...][:T].astype(dt)[None]
        return constrain(x_BTD, ("act_batch", "act_seq", "act_embed"))

    def logits(self, x_BTD: jax.Array) -> jax.Array:
        """The LM head on the final-normed residual stream: float32 logits [B, T, V]."""
        dt = compute_dtype(self.cfg)
        if self.cfg.tie_embeddings:
            logits_BTV = jnp.einsum(
                "btd,vd->btv",
                x_BTD,
                self.embedding[...].astype(dt),
                preferred_element_type=jnp.float32,
            )
        else:
            logits_BTV = jnp.einsum(
                "btd,dv->btv",
                x_BTD,
                self.lm_head[...].astype(dt),
                preferred_element_type=jnp.float32,
            )
        logits_BTV = logits_BTV.astype(jnp.float32)
        if mup.is_mup(self.cfg):
            logits_BTV = logits_BTV * mup.logit_multiplier(self.cfg)
        return constrain(logits_BTV, ("act_batch", "act_seq", "act_vocab"))


def cross_entropy(
    logits_BTV: jax.Array, targets_BT: jax.Array, mask_BT: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Mean next-token cross-entropy in nats (float32) over unmasked positions, and their count."""
    logits = logits_BTV.astype(jnp.float32)
    logz_BT = jax.nn.logsumexp(logits, axis=-1)
    target_logit_BT = jnp.take_along_axis(logits, targets_BT[..., None].astype(jnp.int32), -1)[
        ..., 0
    ]
    nll_BT = logz_BT - target_logit_BT
    if mask_BT is None:
        mask = jnp.ones_like(nll_BT)
    else:
        mask = mask_BT.astype(jnp.float32)
    n_tokens = jnp.sum(mask)
    return jnp.sum(nll_BT * mask) / jnp.maximum(n_tokens, 1.0), n_tokens
