"""LoRA (and QLoRA) as an NNX wrapper around the projection weights of `scaling.model`.

`apply_lora(model, spec, rngs)` replaces each chosen projection weight W (an `nnx.Param` such as
`blocks[i].attn.wq`) by a `LoRA` module holding the frozen base and two adapters:

    W_eff = W + (alpha / r) * A @ B        A: [*in_dims, r], small init;  B: [r, *out_dims], zero

The model reads weights as `self.wq[...]`, and `LoRA.__getitem__` returns W_eff, so model.py
needs no change and every forward option (masks, GQA, dtypes) keeps working. With B = 0 the
output is exactly the base model's. A and B are `nnx.LoRAParam` (a Param subclass) with logical
axis names: the base weight's input names + "lora_rank", and "lora_rank" + its output names.

Projections: q, k, v, o (attention), gate, up, down (MLP; gate exists only with SwiGLU).
`quant="int8"|"nf4"` stores the base blockwise-quantised (scaling.quant) and dequantises it at
use: QLoRA. Freezing: `trainable_filter` selects what is trained (LoRAParam, or every Param for
full fine-tuning); scaling.evals.finetune differentiates only that sub-state and also routes the
rest through an optax partition that zeroes its updates.

Cost note: W_eff is formed once per step (r * d_in * d_out FLOPs, independent of the batch), so
optimiser state and checkpoints are adapter-sized, but the backward pass still computes the
d_in x d_out gradient of W_eff; the factored x A B form that also saves that matmul would need a
hook inside model.py.

`merge_lora` folds the adapters into the base in place (W <- W + s A B; a quantised base becomes
a float one) and `unmerge_lora` takes them out again; `strip_lora` returns the plain model with
W_eff baked in (same graph as an unadapted Transformer, so evaluation reuses its compilation).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.errors import UserError
from scaling.evals.finetune_spec import PROJECTIONS, LoRASpec, projection_dims, validate_spec
from scaling.quant import QuantizedWeight

__all__ = ["PROJECTIONS", "LoRA", "LoRASpec", "apply_lora", "merge_lora", "strip_lora"]


class LoRA(nnx.Module):
    """A frozen base weight plus a rank-r update; `self[...]` is the effective weight."""

    def __init__(self, base: nnx.Param, n_in: int, spec: LoRASpec, *, rngs: nnx.Rngs):
        w = base[...]
        names = tuple(base.get_metadata().get("out_sharding") or (None,) * w.ndim)
        in_shape, out_shape = w.shape[:n_in], w.shape[n_in:]
        d_in = math.prod(in_shape)
        self.n_in, self.rank, self.scale, self.merged = n_in, spec.rank, spec.scale, False
        self.names = names
        if spec.quant == "none":
            self.base = base
        else:
            self.base = QuantizedWeight(w, names, n_in, spec.quant)
        bound = 1.0 / math.sqrt(d_in)  # Kaiming-uniform-sized A, as in the reference LoRA code
        a = jax.random.uniform(rngs.params(), (*in_shape, spec.rank), jnp.float32, -bound, bound)
        self.lora_a = nnx.LoRAParam(
            a.astype(w.dtype), out_sharding=names[:n_in] + ("lora_rank",), eager_sharding=False
        )
        self.lora_b = nnx.LoRAParam(
            jnp.zeros((spec.rank, *out_shape), w.dtype),
            out_sharding=("lora_rank",) + names[n_in:],
            eager_sharding=False,
        )

    def base_weight(self) -> jax.Array:
        if isinstance(self.base, QuantizedWeight):
            return self.base.dequantize()
        return self.base[...]

    def delta(self) -> jax.Array:
        """(alpha / r) * A @ B in the base weight's shape."""
        ab = jnp.tensordot(self.lora_a[...], self.lora_b[...], axes=1)
        return self.scale * ab

    def weight(self) -> jax.Array:
        w = self.base_weight()
        if self.merged:
            return w
        return (w + self.delta()).astype(w.dtype)

    def __getitem__(self, index):
        return self.weight()[index]


def _sites(model: nnx.Module, targets: tuple[str, ...]):
    """(module, attribute, n_in, dotted path) for every adapted weight."""
    for i, block in enumerate(model.blocks):
        for name in targets:
            mod_name, attr, n_in = PROJECTIONS[name]
            yield getattr(block, mod_name), attr, n_in, f"blocks.{i}.{mod_name}.{attr}"


def apply_lora(model: nnx.Module, spec: LoRASpec, rngs: nnx.Rngs) -> list[str]:
    """Wrap the chosen projections of a `scaling.model.Transformer` in place; returns the names
    of the wrapped weights (e.g. "blocks.0.attn.wq")."""
    targets = validate_spec(spec, model.cfg.mlp, projection_dims(model.cfg))
    done = []
    for mod, attr, n_in, path in _sites(model, targets):
        base = getattr(mod, attr)
        if isinstance(base, LoRA):
            raise UserError(f"{path} already has a LoRA adapter; apply LoRA once")
        setattr(mod, attr, LoRA(base, n_in, spec, rngs=rngs))
        done.append(path)
    return done


def lora_modules(model: nnx.Module) -> list[LoRA]:
    return [m for _, m in nnx.iter_modules(model) if isinstance(m, LoRA)]


def merge_lora(model: nnx.Module) -> None:
    """Fold every adapter into its base in place: W <- W_eff (a quantised base becomes float)."""
    for m in lora_modules(model):
        if m.merged:
            continue
        w = m.weight()
        if isinstance(m.base, QuantizedWeight):
            m.base = nnx.Param(w, out_sharding=m.names, eager_sharding=False)
        else:
            m.base[...] = w
        m.merged = True


def unmerge_lora(model: nnx.Module) -> None:
    """Undo `merge_lora`: W <- W - s A B (exact up to float rounding), adapters active again."""
    for m in lora_modules(model):
        if m.merged:
            m.base[...] = (m.base[...] - m.delta()).astype(m.base[...].dtype)
            m.merged = False


def strip_lora(model: nnx.Module) -> nnx.Module:
    """Replace every LoRA wrapper by a plain Param holding its effective weight (in place) and
    return the model: an ordinary Transformer again."""
    for block in model.blocks:
        for mod_name, attr, _ in PROJECTIONS.values():
            mod = getattr(block, mod_name)
            w = getattr(mod, attr, None)
            if isinstance(w, LoRA):
                setattr(
                    mod, attr, nnx.Param(w.weight(), out_sharding=w.names, eager_sharding=False)
                )
    return model


def trainable_filter(method: str):
    """The nnx filter of what a method trains: every Param for "full", adapters otherwise."""
    return nnx.Param if method == "full" else nnx.LoRAParam


def count_params(state) -> int:
    return int(sum(x.size for x in jax.tree.leaves(state)))


def expected_adapter_params(model_cfg, spec: LoRASpec) -> int:
    """r * (d_in + d_out) summed over the adapted matrices (the formula the tests check)."""
    dims = projection_dims(model_cfg)
    targets = validate_spec(spec, model_cfg.mlp, dims)
    return model_cfg.n_layers * sum(spec.rank * sum(dims[t]) for t in targets)
