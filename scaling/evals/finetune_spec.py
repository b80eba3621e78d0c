"""Fine-tuning methods and settings, JAX-free: what `scaling finetune` checks before any compute.

Methods: `full`, `lora:r=4[,alpha=8][,targets=q+v]`, `qlora:r=4[,quant=int8]` (see
scaling.evals.finetune). Settings have per-method defaults (`DEFAULTS`) and `--set KEY=VALUE`
(every method) or `--set METHOD.KEY=VALUE` overrides. `LoRASpec` and the projection table
are used by scaling.lora.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from scaling.config import TrainConfig, parse_value
from scaling.errors import UserError
from scaling.fileio import warn

QUANT_KINDS = ("int8", "nf4")

# projection name -> (submodule of a Block, weight attribute, number of input dims)
PROJECTIONS: dict[str, tuple[str, str, int]] = {
    "q": ("attn", "wq", 1),
    "k": ("attn", "wk", 1),
    "v": ("attn", "wv", 1),
    "o": ("attn", "wo", 2),
    "gate": ("mlp", "w_gate", 1),
    "up": ("mlp", "w_up", 1),
    "down": ("mlp", "w_down", 1),
}


@dataclass(frozen=True)
class LoRASpec:
    """Which projections get adapters, their rank and scale, and the base storage."""

    rank: int = 4
    alpha: float = 0.0  # 0: alpha = 2 * rank (scale 2)
    targets: tuple[str, ...] = ()  # empty: every projection the model has
    quant: str = "none"  # none | int8 | nf4

    @property
    def scale(self) -> float:
        return (self.alpha or 2.0 * self.rank) / self.rank


def projection_dims(model_cfg: Any) -> dict[str, tuple[int, int]]:
    """(d_in, d_out) of each projection LoRA can adapt, for a `ModelConfig`."""
    D, F = model_cfg.d_model, model_cfg.ff_dim
    NH, KH = model_cfg.n_heads * model_cfg.head_dim, model_cfg.kv_heads * model_cfg.head_dim
    dims = {"q": (D, NH), "k": (D, KH), "v": (D, KH), "o": (NH, D)}
    return dims | {"gate": (D, F), "up": (D, F), "down": (F, D)}


def validate_spec(
    spec: LoRASpec, mlp: str = "swiglu", dims: dict[str, tuple[int, int]] | None = None
) -> tuple[str, ...]:
    """The resolved target names, or UserError (rank, unknown projection, quant kind; with the
    model's `projection_dims`, a rank above the smallest adapted matrix's min(d_in, d_out))."""
    if not isinstance(spec.rank, int) or spec.rank <= 0:
        raise UserError(f"LoRA rank r = {spec.rank}: must be a positive integer, e.g. r=4")
    if not (math.isfinite(spec.alpha) and spec.alpha >= 0):
        raise UserError(
            f"LoRA alpha = {spec.alpha}: must be a finite number > 0 (or 0 for 2 * r), e.g. "
            f"alpha={2 * spec.rank}"
        )
    if spec.quant not in ("none", *QUANT_KINDS):
        raise UserError(f"quant = {spec.quant!r}: choose one of none, {', '.join(QUANT_KINDS)}")
    have = [p for p in PROJECTIONS if p != "gate" or mlp == "swiglu"]
    for name in spec.targets:
        if name not in have:
            raise UserError(
                f"unknown projection {name!r} for LoRA; this model has: {', '.join(have)}"
            )
    targets = tuple(spec.targets) or tuple(have)
    if dims:
        name = min(targets, key=lambda t: min(dims[t]))
        if spec.rank > min(dims[name]):
            raise UserError(
                f"LoRA rank r = {spec.rank} exceeds min(d_in, d_out) = {min(dims[name])} of the "
                f"{name!r} projection {dims[name]}: a higher rank adds nothing; use "
                f"r <= {min(dims[name])}"
            )
    return targets


def example_tokens(task: str, item: Any) -> tuple[bytes, bytes]:
    """A fine-tuning example of `task` as bytes (one token each): the zero-shot prompt with the
    instruction, and the target; the row is BOS + prompt + target."""
    from scaling.evals import tasks as T

    prompt = T.format_prompt(task, [], item, instruction=True).encode("ascii")
    return prompt, T.format_target(item).encode("ascii")


def longest_example(task: str, d_f: int, seed: int) -> int:
    """Tokens (BOS included) of the longest of the first `d_f` training examples of `task`."""
    from scaling.evals import tasks as T

    return max(1 + sum(map(len, example_tokens(task, it))) for it in T.train_items(task, d_f, seed))


METHOD_KINDS = ("full", "lora", "qlora")


@dataclass(frozen=True)
class Method:
    kind: str  # full | lora | qlora
    spec: LoRASpec | None
    label: str  # canonical text, e.g. "lora:r=4"


def parse_method(text: str) -> Method:
    """`full`, `lora:r=4`, `qlora:r=4,quant=int8`, `lora:r=8,alpha=16,targets=q+v`."""
    kind, _, opts = text.strip().partition(":")
    if kind not in METHOD_KINDS:
        raise UserError(
            f"--method {text!r}: unknown method {kind!r}; use full, lora:r=4, qlora:r=4"
        )
    values: dict[str, Any] = {}
    for part in filter(None, opts.split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in ("r", "alpha", "targets", "quant") or kind == "full":
            raise UserError(
                f"--method {text!r}: bad option {part!r}; {kind} takes "
                + ("no options" if kind == "full" else "r=INT, alpha=NUM, targets=q+k+..., quant")
            )
        values[key] = value
    if kind == "full":
        return Method("full", None, "full")
    try:
        rank = int(values.get("r", 4))
        alpha = float(values.get("alpha", 0.0))
    except ValueError as e:
        raise UserError(f"--method {text!r}: r must be an integer and alpha a number") from e
    quant = values.get("quant", "nf4" if kind == "qlora" else "none")
    if kind == "lora" and quant != "none":
        raise UserError(f"--method {text!r}: a quantised base is the qlora method (qlora:r=...)")
    if kind == "qlora" and quant == "none":
        raise UserError(f"--method {text!r}: qlora needs quant=nf4 or quant=int8")
    targets = tuple(t for t in values.get("targets", "").split("+") if t)
    validate_spec(LoRASpec(rank, alpha, targets, quant))  # rank <= 0, unknown projection names
    # one method, one label (so one row id and one law group): alpha = 2r is the default, and
    # targets are a set, written in PROJECTIONS order ("v+q" is "q+v")
    alpha = 0.0 if alpha == 2.0 * rank else alpha
    targets = tuple(t for t in PROJECTIONS if t in targets)
    spec = LoRASpec(rank=rank, alpha=alpha, targets=targets, quant=quant)
    label = f"{kind}:r={rank}"
    label += f",alpha={alpha:g}" if alpha else ""
    label += f",targets={'+'.join(targets)}" if targets else ""
    label += f",quant={quant}" if kind == "qlora" and quant != "nf4" else ""
    return Method(kind, spec, label)


@dataclass(frozen=True)
class Settings:
    """Fine-tuning hyper-parameters (per-method defaults in DEFAULTS; `--set` overrides)."""

    lr: float = 3e-3
    epochs: float = 4.0
    steps: int = 0  # 0: ceil(epochs * D_f / batch_size)
    batch_size: int = 16
    warmup_steps: int = -1  # -1: steps // 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    eval_items: int = 128
    save: bool = True  # checkpoint the trained sub-state (adapters for LoRA) at the end


DEFAULTS: dict[str, dict[str, Any]] = {
    "full": {"lr": 3e-3},
    "lora": {"lr": 1e-2},
    "qlora": {"lr": 1e-2},
}


def resolve_settings(kind: str, overrides: list[str] | tuple[str, ...] = ()) -> Settings:
    """Defaults for `kind`, then `key=value` (every method) and `kind.key=value` overrides;
    UserError naming the key, its value and the allowed range for a bad one (`check_settings`)."""
    known = {f.name: f for f in fields(Settings)}
    s = replace(Settings(), **DEFAULTS[kind])
    for item in overrides:
        key, sep, value = item.partition("=")
        scope, _, name = key.strip().rpartition(".")
        if not sep or name not in known or scope not in ("", *METHOD_KINDS):
            raise UserError(
                f"--set {item!r}: expected KEY=VALUE or METHOD.KEY=VALUE with METHOD in "
                f"{', '.join(METHOD_KINDS)} and KEY in {', '.join(known)}"
            )
        if scope not in ("", kind):
            continue
        s = replace(s, **{name: _typed(item, name, parse_value(value.strip()))})
    return check_settings(s)


def _typed(item: str, name: str, v: Any) -> Any:
    """An override's value as its field's type: a bool for a bool, a whole number for an int
    (2.0 is 2; 2.7, inf and nan are errors, not truncated), a finite number for a float."""
    default = getattr(Settings(), name)
    kind = type(default).__name__
    if isinstance(default, bool) != isinstance(v, bool) or not isinstance(v, int | float):
        raise UserError(f"--set {item!r}: {name} expects a {kind}")
    if not math.isfinite(v):
        raise UserError(
            f"--set {item!r}: {name} must be a finite number, e.g. {name}={_RULES[name][2]}"
        )
    if isinstance(default, int) and not isinstance(default, bool) and v != int(v):
        raise UserError(f"--set {item!r}: {name} expects a whole number, e.g. {name}={round(v)}")
    return type(default)(v)


# field -> (is the value allowed, the rule as the error states it, an example value)
_RULES: dict[str, tuple[Any, str, str]] = {
    "lr": (lambda v: v > 0, "> 0", "3e-3"),
    "epochs": (lambda v: v > 0, "> 0", "4"),
    "steps": (lambda v: v >= 0, ">= 0 (0: from epochs)", "0"),
    "batch_size": (lambda v: v > 0, "> 0", "16"),
    "warmup_steps": (lambda v: v >= -1, ">= 0 (or -1 for steps // 10)", "-1"),
    "min_lr_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]", "0.1"),
    "weight_decay": (lambda v: v >= 0, ">= 0", "0"),
    "grad_clip": (lambda v: v > 0, "> 0 (the global-norm cap)", "1"),
    "seed": (lambda v: 0 <= v < 2**63, ">= 0 and < 2^63", "0"),
    "eval_items": (lambda v: v > 0, "> 0", "128"),
}


def check_settings(s: Settings) -> Settings:
    """`s`, or UserError naming the first setting out of its range and a valid value."""
    for name, (ok, rule, example) in _RULES.items():
        v = getattr(s, name)
        if not (math.isfinite(v) and ok(v)):
            raise UserError(
                f"fine-tuning setting {name} = {v}: must be {rule}; e.g. --set {name}={example}"
            )
    return s


def n_steps(s: Settings, d_f: int) -> int:
    return s.steps or max(1, math.ceil(s.epochs * d_f / s.batch_size))


def train_config(s: Settings, d_f: int) -> TrainConfig:
    """The optimiser/schedule settings as a TrainConfig, so scaling.optim serves both loops."""
    steps = n_steps(s, d_f)
    warm = s.warmup_steps if 0 <= s.warmup_steps < steps else -1
    if s.warmup_steps >= steps:
        warn(
            f"warmup_steps = {s.warmup_steps} is not below a row's {steps} steps (D_f = {d_f}): "
            f"that row warms up for steps // 10 = {steps // 10} instead"
        )
    return TrainConfig(
        steps=steps,
        batch_size=s.batch_size,
        lr=s.lr,
        min_lr_ratio=s.min_lr_ratio,
        warmup_steps=warm,
        weight_decay=s.weight_decay,
        grad_clip=s.grad_clip,
        seed=s.seed,
    )
