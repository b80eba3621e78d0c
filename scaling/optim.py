"""Optimiser and learning-rate schedule for `scaling.train`.

AdamW, written as an optax chain WITHOUT the learning rate:

    clip_by_global_norm(grad_clip) -> scale_by_adam(b1, b2, eps) [-> muP lr_partition]
    -> add_decayed_weights(weight_decay, mask = params with ndim >= 2)

The train step applies `params -= lr * update`, with `lr` a traced scalar computed on the host
by `lr_at(train_cfg, step)`. So one compiled step serves every learning rate, warmup and run
length (a sweep of same-shaped runs compiles once), and the lr logged is exactly the lr used.
Weight decay is decoupled and scaled by lr, as in `optax.adamw`; norm scales/biases (1-D) and
scalars are not decayed. Embedding and head matrices are (2-D).

Schedule (step s = 0 .. steps-1 is the s-th update):
  warmup  s <  W:  lr * (s + 1) / W                      (linear, reaches lr at s = W-1)
  decay   s >= W:  min + (lr - min) * (1 + cos(pi * p)) / 2,  p = (s - W) / max(1, steps-1-W)
with min = min_lr_ratio * lr, so the last update uses exactly min.
Automatic warmup (train.warmup_steps = -1): W = min(steps // 10, 1000).

Under muP (`model.param = "mup"`) `scaling.mup.lr_partition`, an optax partition, follows Adam:
it multiplies the Adam direction of each hidden matrix by base_width / d_model (its effective
peak lr shrinks with width); vector-like parameters keep 1. The decay comes after it, so lr x wd
is the same at every width and a weight decay tuned at the base width transfers (the mup
package's MuAdam does the same with lr / m and wd x m).
"""

from __future__ import annotations

import math

import jax
import optax

from scaling import mup
from scaling.config import ModelConfig, TrainConfig

AUTO_WARMUP_FRACTION = 10  # W = steps // 10 ...
AUTO_WARMUP_CAP = 1000  # ... capped at 1000 updates


def warmup_steps(t: TrainConfig) -> int:
    """Resolved warmup length: `t.warmup_steps`, or min(steps // 10, 1000) when it is -1."""
    if t.warmup_steps >= 0:
        return t.warmup_steps
    return min(t.steps // AUTO_WARMUP_FRACTION, AUTO_WARMUP_CAP)


def lr_at(t: TrainConfig, step: int) -> float:
    """Learning rate of update `step` (0-based): linear warmup, then cosine to min_lr_ratio*lr."""
    w = warmup_steps(t)
    if step < w:
        return t.lr * (step + 1) / w
    lo = t.min_lr_ratio * t.lr
    p = min(1.0, (step - w) / max(1, t.steps - 1 - w))
    return lo + (t.lr - lo) * 0.5 * (1.0 + math.cos(math.pi * p))


def decay_mask(params: object) -> object:
    """True for leaves that get weight decay: matrices/embeddings (ndim >= 2)."""
    return jax.tree.map(lambda x: x.ndim >= 2, params)


def static_hparams(t: TrainConfig) -> tuple[float, ...]:
    """The optimiser settings baked into a compiled step (part of the compile-cache key)."""
    return (t.b1, t.b2, t.eps, t.weight_decay, t.grad_clip)


def make_optimizer(
    t: TrainConfig, model: ModelConfig | None = None
) -> optax.GradientTransformation:
    """AdamW direction without the lr (see module docstring); grad_clip <= 0 disables clipping.
    With a muP `model`, per-parameter lr multipliers (scaling.mup.lr_partition) scale the Adam
    direction, not the decay: a weight decay tuned at the base width transfers, as with the mup
    package's MuAdam (lr / m and wd x m on hidden matrices)."""
    parts = []
    if t.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(t.grad_clip))
    parts.append(optax.scale_by_adam(b1=t.b1, b2=t.b2, eps=t.eps))
    if model is not None and mup.is_mup(model):  # before the decay: it scales the Adam direction
        parts.append(mup.lr_partition(model))  # only, so lr x wd is the same at every width
    if t.weight_decay > 0:
        parts.append(optax.add_decayed_weights(t.weight_decay, mask=decay_mask))
    return optax.chain(*parts)
