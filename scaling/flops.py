"""Parameter counts, training FLOPs per token, and MFU. Pure Python: no JAX.

Notation: V vocab, D d_model, L n_layers, N query heads, K kv heads, H = D / N head dim,
F d_ff, T seq_len. The model (scaling.model) has no biases in linear layers.

Parameters
    attention per layer   D*N*H (q) + 2*D*K*H (k, v) + N*H*D (o) = 2*D^2 + 2*D*K*H
    MLP per layer         3*D*F (SwiGLU: gate, up, down) or 2*D*F (GELU: up, down)
    norms                 D per RMSNorm, 2*D per LayerNorm; 2 per layer + 1 final
    embedding             V*D tokens + T*D (learned positions) + D*V (untied head)
    non-embedding         L*(attention + MLP + 2 norms) + final norm

Training FLOPs per token (forward + backward = 3 x forward, 2 FLOPs per multiply-add)
    6 * matmul_params + 6 * L * T * D
matmul_params = L*(attention + MLP weights) + D*V (the LM head, counted even when tied; the
embedding and position lookups are gathers and count 0). The second term is causal attention:
QK^T and AV cost 2*T*D each per token and layer at full context, halved by the causal mask.
Evaluation (validation) is forward only: a third of that per token (`forward_flops_per_token`),
reported apart from the training budget (`flops_val` in result.json). MFU and FLOP/s figures use
these model FLOPs (`CONVENTION`), not XLA's own count of the compiled program.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scaling.config import ModelConfig


@dataclass(frozen=True)
class ParamCounts:
    """total = embedding + nonembedding."""

    total: int
    embedding: int
    nonembedding: int


def _attention_params(m: ModelConfig) -> int:
    return 2 * m.d_model * m.n_heads * m.head_dim + 2 * m.d_model * m.kv_heads * m.head_dim


def _mlp_params(m: ModelConfig) -> int:
    return (3 if m.mlp == "swiglu" else 2) * m.d_model * m.ff_dim


def _norm_params(m: ModelConfig) -> int:
    return (2 if m.norm == "layernorm" else 1) * m.d_model


def param_counts(m: ModelConfig) -> ParamCounts:
    """Exact parameter counts of `scaling.model.Transformer(m)` (see module docstring)."""
    embedding = m.vocab_size * m.d_model
    if m.pos == "learned":
        embedding += m.seq_len * m.d_model
    if not m.tie_embeddings:
        embedding += m.d_model * m.vocab_size
    per_layer = _attention_params(m) + _mlp_params(m) + 2 * _norm_params(m)
    nonembedding = m.n_layers * per_layer + _norm_params(m)
    return ParamCounts(embedding + nonembedding, embedding, nonembedding)


def matmul_params(m: ModelConfig) -> int:
    """Weights multiplied per token: L*(attention + MLP) + D*V for the LM head (tied or not)."""
    return m.n_layers * (_attention_params(m) + _mlp_params(m)) + m.d_model * m.vocab_size


def flops_per_token(m: ModelConfig) -> float:
    """Training FLOPs per token: 6 * matmul_params(m) + 6 * n_layers * seq_len * d_model."""
    return float(6 * matmul_params(m) + 6 * m.n_layers * m.seq_len * m.d_model)


def forward_flops_per_token(m: ModelConfig) -> float:
    """Evaluation (forward-only) FLOPs per token, same convention: a third of training,
    2 * matmul_params(m) + 2 * n_layers * seq_len * d_model."""
    return float(2 * matmul_params(m) + 2 * m.n_layers * m.seq_len * m.d_model)


def interval(every: int, steps: int, parts: int) -> int:
    """`every`, or about `parts` evenly spaced events per run when 0 (validations: `parts` is
    train.validations; checkpoints: 5)."""
    return every if every > 0 else max(1, math.ceil(steps / parts))


def n_validations(final_step: int, steps: int, every: int) -> int:
    """How many validations a run that stopped at `final_step` ran: one every `every` steps
    and one at the last step (`scaling.loop`), whatever the resumes in between."""
    n = final_step // every
    return n + (1 if final_step == steps and steps % every else 0)


# How `flops`, `C_exact`, FLOP/s and `mfu` count (stated in result.json and the bench).
CONVENTION = (
    "model FLOPs of scaling.flops: 6*N_matmul + 6*L*T*D per trained token (forward + backward, "
    "causal attention halved, embedding gathers 0); validation counted apart (flops_val, "
    "forward only: a third of that per token); XLA's cost_analysis() counts more (14-42% on the "
    "demo shapes), mostly the unhalved causal attention"
)


def flops_6nd(n_params: int | float, n_tokens: int | float) -> float:
    """The usual approximation C = 6 * N * D (N total or non-embedding params, D tokens)."""
    return 6.0 * float(n_params) * float(n_tokens)


# Dense (no sparsity) peak FLOP/s per device, from vendor data sheets. Keys: (substring of
# jax `device_kind`, lower case; dtype). The longest matching substring wins. NVIDIA "float32"
# is the TF32 tensor-core peak, because JAX's default matmul precision runs float32 dots as TF32
# on Ampere and newer; "float32_ieee" is the non-tensor-core peak (precision="highest").
# TPU float32 is left out: its speed depends on the matmul precision setting (no single peak).
_NVIDIA = {
    # pattern: (bf16 = fp16, tf32, fp32 non-tensor)
    "h100": (989e12, 494e12, 67e12),  # H100 SXM5 ("NVIDIA H100 80GB HBM3")
    "h100 pcie": (756e12, 378e12, 51e12),
    "h100 nvl": (835e12, 418e12, 60e12),
    "h200": (989e12, 494e12, 67e12),  # same compute as H100 SXM
    "gh200": (989e12, 494e12, 67e12),
    "a100": (312e12, 156e12, 19.5e12),  # SXM4 and PCIe, 40 and 80 GB
}
_TPU = {  # bf16 per chip (JAX device)
    "tpu v4": 275e12,
    "tpu v5 lite": 197e12,  # v5e
    "tpu v5e": 197e12,
    "tpu v5": 459e12,  # v5p reports "TPU v5"
    "tpu v5p": 459e12,
    "tpu v6 lite": 918e12,  # v6e (Trillium)
    "tpu v6e": 918e12,
}
PEAK_FLOPS: dict[tuple[str, str], float] = {}
for _kind, (_half, _tf32, _fp32) in _NVIDIA.items():
    PEAK_FLOPS[(_kind, "bfloat16")] = _half
    PEAK_FLOPS[(_kind, "float16")] = _half
    PEAK_FLOPS[(_kind, "float32")] = _tf32
    PEAK_FLOPS[(_kind, "tf32")] = _tf32
    PEAK_FLOPS[(_kind, "float32_ieee")] = _fp32
for _kind, _bf16 in _TPU.items():
    PEAK_FLOPS[(_kind, "bfloat16")] = _bf16

_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "f16": "float16", "half": "float16"}
_DTYPE_ALIASES |= {"f32": "float32", "fp32": "float32", "float": "float32"}


def _dtype_name(dtype: Any) -> str:
    """'bfloat16' from a string, a numpy/jax dtype, or a scalar type like jnp.bfloat16."""
    name = getattr(dtype, "name", None) if not isinstance(dtype, str) else dtype
    if not isinstance(name, str):
        name = getattr(dtype, "__name__", str(dtype))
    name = name.lower()
    return _DTYPE_ALIASES.get(name, name)


def peak_flops(device_kind: str, dtype: Any) -> float | None:
    """Dense peak FLOP/s of one device of `device_kind` (as jax reports it) at `dtype`;
    None for CPU or anything not in PEAK_FLOPS (never a guess)."""
    kind, name = device_kind.lower(), _dtype_name(dtype)
    matches = [pat for (pat, dt) in PEAK_FLOPS if dt == name and pat in kind]
    if not matches:
        return None
    return PEAK_FLOPS[(max(matches, key=len), name)]


def mfu(flops_per_s: float, device_kind: str, dtype: Any, n_devices: int) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s / (n_devices * peak); None when peak unknown."""
    peak = peak_flops(device_kind, dtype)
    if peak is None or n_devices <= 0:
        return None
    return float(flops_per_s) / (peak * n_devices)
