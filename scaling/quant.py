"""Blockwise quantised storage of frozen weight matrices (the QLoRA base): int8 and 4-bit NF4.

A weight of shape (*in_dims, *out_dims) is viewed as a matrix [d_in, d_out] and cut into blocks
of `block` consecutive rows along d_in (block = gcd(d_in, 64), so 64 as in QLoRA whenever 64
divides d_in). Each block of each output column stores one float32 absmax scale, and every
element one code:

  int8  code = round(127 * w / absmax) in int8; |w - dequant(w)| <= absmax / 254
  nf4   code = index of the nearest of the 16 NormalFloat4 levels to w / absmax (Dettmers et al.
        2023: quantiles of N(0, 1) scaled to [-1, 1], with an exact 0), two codes per uint8;
        |w - dequant(w)| <= absmax * NF4_MAX_HALF_GAP (half the widest gap between levels)

`dequantize` returns the weight in its original shape and the requested dtype; the LoRA wrapper
calls it inside the forward pass, so only codes and scales are stored. Scales are not themselves
quantised (QLoRA's "double quantisation" would save another ~0.37 bits per parameter).

Codes and scales are `QuantState` variables (not `nnx.Param`: never trained, never in the
optimiser state) with logical axis names: codes keep the names of the first input and first
output dim, the scales' block axis is "quant_block" (see scaling.sharding).
"""

from __future__ import annotations

import math
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scaling.errors import UserError
from scaling.evals.finetune_spec import QUANT_KINDS

MAX_BLOCK = 64


def _nf4_levels() -> np.ndarray:
    """The 16 NF4 levels, built from their definition (8 positive and 7 negative normal
    quantiles between offset 0.9677 and 1/2, plus 0, scaled to max |level| = 1)."""
    nd, offset = statistics.NormalDist(), 0.9677083
    pos = [nd.inv_cdf(p) for p in np.linspace(offset, 0.5, 9)[:-1]]
    neg = [-nd.inv_cdf(p) for p in np.linspace(offset, 0.5, 8)[:-1]]
    levels = np.sort(np.array(pos + [0.0] + neg))
    return (levels / np.abs(levels).max()).astype(np.float32)


NF4_LEVELS = _nf4_levels()
NF4_MAX_HALF_GAP = float(np.max(np.diff(NF4_LEVELS)) / 2)  # 0.152: worst-case relative error


class QuantState(nnx.Variable):
    """Frozen quantised storage (codes or scales): not a Param, so never trained."""


def block_size(d_in: int) -> int:
    return math.gcd(d_in, MAX_BLOCK)


class QuantizedWeight(nnx.Module):
    """Blockwise int8 / NF4 storage of one frozen weight; `dequantize(dtype)` rebuilds it."""

    def __init__(self, w: jax.Array, names: tuple[str | None, ...], n_in: int, kind: str):
        if kind not in QUANT_KINDS:
            raise UserError(f"quant = {kind!r}: choose one of {', '.join(QUANT_KINDS)}")
        self.kind, self.shape, self.dtype = kind, tuple(w.shape), jnp.dtype(w.dtype).name
        d_in = math.prod(w.shape[:n_in])
        d_out = math.prod(w.shape[n_in:])
        self.block = block_size(d_in)
        if kind == "nf4" and d_in % 2:
            raise UserError(
                f"nf4 packs two codes per byte along the input dim, which is odd ({d_in}) for a "
                f"weight of shape {w.shape}; use quant=int8 for this model"
            )
        w2 = w.astype(jnp.float32).reshape(d_in // self.block, self.block, d_out)
        absmax = jnp.max(jnp.abs(w2), axis=1)  # [n_blocks, d_out]
        safe = jnp.where(absmax > 0, absmax, 1.0)[:, None, :]
        x = (w2 / safe).reshape(d_in, d_out)
        if kind == "int8":
            codes = jnp.round(x * 127.0).astype(jnp.int8)
        else:
            idx = jnp.argmin(jnp.abs(x[..., None] - jnp.asarray(NF4_LEVELS)), axis=-1)
            idx = idx.astype(jnp.uint8)
            codes = idx[0::2] | (idx[1::2] << 4)  # [d_in / 2, d_out]
        in_name, out_name = names[0], names[n_in]
        self.codes = QuantState(codes, out_sharding=(in_name, out_name), eager_sharding=False)
        self.scales = QuantState(
            absmax.astype(jnp.float32), out_sharding=("quant_block", out_name), eager_sharding=False
        )

    def dequantize(self, dtype=None) -> jax.Array:
        codes, scales = self.codes[...], self.scales[...]
        if self.kind == "int8":
            x = codes.astype(jnp.float32) / 127.0
        else:
            lo, hi = codes & 0xF, codes >> 4
            idx = jnp.stack([lo, hi], axis=1).reshape(-1, codes.shape[-1])
            x = jnp.asarray(NF4_LEVELS)[idx]
        d_in, d_out = x.shape
        w = x.reshape(d_in // self.block, self.block, d_out) * scales[:, None, :]
        return w.reshape(self.shape).astype(dtype or self.dtype)

    def max_error_bound(self) -> jax.Array:
        """The stated worst-case |w - dequantize(w)| per element, in the weight's shape."""
        rel = 1.0 / 254.0 if self.kind == "int8" else NF4_MAX_HALF_GAP
        d_in = math.prod(self.shape) // self.scales.shape[-1]
        per = jnp.repeat(self.scales[...], self.block, axis=0).reshape(d_in, -1)
        return (per * rel).reshape(self.shape)

    def nbytes(self) -> int:
        """Bytes actually stored (codes + scales)."""
        return int(self.codes[...].nbytes + self.scales[...].nbytes)
