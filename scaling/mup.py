"""Maximal-update parametrisation (muP, Yang et al. 2022) through logical axis names.

`model.param = "mup"` with `model.base_width` makes the best hyperparameters of a base-width model
(learning rate, init scale) stay best as d_model grows. Every parameter is classified by its
logical axis names (the names `scaling.sharding.LOGICAL_AXIS_RULES` maps to mesh axes) through
`AXIS_KIND`, never by a list of parameter names:

- an axis is `width` (grows with d_model: embed, mlp, heads, kv_heads, head_dim, norm) or `fixed`
  (vocab, positions);
- a *hidden* parameter has ndim >= 2 and only width axes (attention q/k/v/o, MLP up/gate/down);
- every other parameter is *vector-like* (embedding, LM head, learned positions, norm vectors).

With width multiplier m = d_model / base_width (every hidden fan-in here is proportional to
d_model: d_model itself, n_heads * head_dim = d_model, or d_ff = ff_mult * d_model):

    hidden: init std x 1/sqrt(m) (i.e. proportional to 1/sqrt(fan_in)), Adam lr x 1/m
    vector: init std and Adam lr unchanged (width-independent)
    logits x 1/m (the readout multiplier, tied or untied head)
    attention scores x 1/head_dim instead of 1/sqrt(head_dim)

At m = 1 muP equals SP except for the attention scale. The per-parameter lr is an optax
partition (`optax.partition`, formerly multi_transform) over the labels that `param_labels`
derives from axis names. A parameter with an axis name that `AXIS_KIND` does not know is a
`UserError` under muP.
`model.param = "sp"` (the default) never calls into this module, so SP stays bitwise unchanged.
This module never imports JAX at import time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from scaling.errors import UserError

HIDDEN, VECTOR = "hidden", "vector"

# logical axis name -> "width" (scales with d_model) | "fixed" (vocab, sequence positions)
AXIS_KIND: dict[str, str] = {
    "embed": "width",
    "mlp": "width",
    "heads": "width",
    "kv_heads": "width",
    "head_dim": "width",
    "norm": "width",
    "vocab": "fixed",
    "positions": "fixed",
    "lora_rank": "fixed",  # LoRA adapter rank (scaling.lora): set by the user, not by width
    "quant_block": "fixed",  # block axis of a quantised base's scales (scaling.quant)
}


def is_mup(model_cfg: Any) -> bool:
    return getattr(model_cfg, "param", "sp") == "mup"


def width_mult(model_cfg: Any) -> float:
    """m = d_model / base_width (1 under SP)."""
    if not is_mup(model_cfg):
        return 1.0
    return model_cfg.d_model / model_cfg.base_width


def role(names: Sequence[str | None], what: str = "parameter") -> str:
    """HIDDEN or VECTOR from a parameter's logical axis names; UserError for an unknown name."""
    kinds = []
    for name in names:
        if name not in AXIS_KIND:
            raise UserError(
                f"muP: {what} has logical axis {name!r}, which scaling.mup.AXIS_KIND does not "
                f"classify; add it there as 'width' or 'fixed', or use model.param = \"sp\""
            )
        kinds.append(AXIS_KIND[name])
    return HIDDEN if len(kinds) >= 2 and all(k == "width" for k in kinds) else VECTOR


def init_multiplier(model_cfg: Any, names: Sequence[str | None], what: str = "parameter") -> float:
    """Factor on the SP init std: 1/sqrt(m) for hidden matrices, 1 for vector-like params."""
    return 1.0 / math.sqrt(width_mult(model_cfg)) if role(names, what) == HIDDEN else 1.0


def lr_multiplier(model_cfg: Any, names: Sequence[str | None], what: str = "parameter") -> float:
    """Factor on the peak Adam lr: 1/m for hidden matrices, 1 for vector-like params."""
    return 1.0 / width_mult(model_cfg) if role(names, what) == HIDDEN else 1.0


def logit_multiplier(model_cfg: Any) -> float:
    """Readout multiplier base_width / d_model on the logits."""
    return 1.0 / width_mult(model_cfg)


def attention_scale(model_cfg: Any) -> float:
    """1/head_dim (muP attention)."""
    return 1.0 / model_cfg.head_dim


def _names(var: Any) -> tuple[str | None, ...]:
    names = var.get_metadata().get("out_sharding")
    return tuple(names) if names else ()


def param_labels(params: Any) -> Any:
    """A prefix tree of `params` (an nnx.State of nnx.Param) with each variable replaced by its
    role label; the `param_labels` of `optax.partition` (formerly multi_transform)."""
    import jax  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415

    def label(path: Any, var: Any) -> str:
        return role(_names(var), f"parameter {jax.tree_util.keystr(path)}")

    return jax.tree_util.tree_map_with_path(
        label, params, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )


def lr_partition(model_cfg: Any) -> Any:
    """optax transform that scales the update of each hidden matrix by 1/m (vector-like: 1)."""
    import optax  # noqa: PLC0415

    return optax.partition(
        {HIDDEN: optax.scale(1.0 / width_mult(model_cfg)), VECTOR: optax.identity()},
        param_labels,
    )


def rescale_init(model: Any, model_cfg: Any) -> None:
    """Multiply every nnx.Param of `model` (drawn with the SP std) by its `init_multiplier`, in
    place. Raises UserError for an unknown axis name, so a bad model fails at construction
    (under eval_shape: before any compute)."""
    from flax import nnx  # noqa: PLC0415

    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param):
            where = "parameter " + "/".join(str(p) for p in path)
            factor = init_multiplier(model_cfg, _names(var), where)
            if factor != 1.0:
                value = var.get_value()
                var.set_value((value * factor).astype(value.dtype))
