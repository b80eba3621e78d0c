"""Typed, frozen run configuration: TOML in, validated dataclasses out.

A run is a pure function of its resolved `RunConfig`; `config_hash` names it. Loading goes
TOML file -> dotted `--set` overrides -> model preset expansion -> dataclasses -> validation.
Every problem raises `UserError` naming the field and the fix. This module never imports JAX.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from scaling.errors import UserError

BYTE_VOCAB = 259  # 256 UTF-8 byte values + BOS, EOS, PAD (see scaling.data.tokenizer)
CONFIG_DIR = Path(__file__).parent / "configs"

# GPT-3 paper (Brown et al. 2020, Table 2.1). seq 2048, GPT-2 style blocks: LayerNorm,
# learned positions, GELU MLP with d_ff = 4 d_model, tied embeddings. The paper lists
# d_model 5140 for 13B, which 40 heads do not divide; 5120 (= 40 x 128) is what is trained.
# For XL it lists 24 heads of 128 (= 3072, not 2048); we use 16 heads of 128.
_GPT3 = dict(
    vocab_size=50257, seq_len=2048, norm="layernorm", pos="learned", mlp="gelu", tie_embeddings=True
)
PRESETS: dict[str, dict[str, Any]] = {
    "gpt3-small": dict(_GPT3, d_model=768, n_layers=12, n_heads=12, d_ff=3072),
    "gpt3-medium": dict(_GPT3, d_model=1024, n_layers=24, n_heads=16, d_ff=4096),
    "gpt3-large": dict(_GPT3, d_model=1536, n_layers=24, n_heads=16, d_ff=6144),
    "gpt3-xl": dict(_GPT3, d_model=2048, n_layers=24, n_heads=16, d_ff=8192),
    "gpt3-2.7b": dict(_GPT3, d_model=2560, n_layers=32, n_heads=32, d_ff=10240),
    "gpt3-6.7b": dict(_GPT3, d_model=4096, n_layers=32, n_heads=32, d_ff=16384),
    "gpt3-13b": dict(_GPT3, d_model=5120, n_layers=40, n_heads=40, d_ff=20480),
    "gpt3-175b": dict(_GPT3, d_model=12288, n_layers=96, n_heads=96, d_ff=49152),
}
# A tiny ladder for the 2-core CPU: byte vocab, modern blocks (RMSNorm, RoPE, SwiGLU).
for _name, (_d, _l, _h) in {
    "cpu-3xs": (16, 1, 2),
    "cpu-2xs": (24, 2, 2),
    "cpu-xs": (32, 2, 4),
    "cpu-s": (48, 3, 4),
    "cpu-m": (64, 4, 4),
    "cpu-l": (96, 4, 6),
    "cpu-xl": (128, 6, 8),
}.items():
    PRESETS[_name] = dict(
        vocab_size=BYTE_VOCAB, seq_len=128, d_model=_d, n_layers=_l, n_heads=_h, d_ff=4 * _d
    )

_CHOICES = {
    "norm": ("rmsnorm", "layernorm"),
    "pos": ("rope", "learned"),
    "mlp": ("swiglu", "gelu"),
    "param_dtype": ("float32", "bfloat16"),
    "compute_dtype": ("auto", "float32", "bfloat16", "float16"),
    "param": ("sp", "mup"),
}


@dataclass(frozen=True)
class ModelConfig:
    """Decoder shape and block style. `d_ff = 0`: 4 * d_model; `n_kv_heads = 0`: n_heads.

    `param`: "sp" (standard) or "mup" (muP, scaling.mup), which needs `base_width`, the d_model
    at which the hyperparameters were tuned.
    """

    preset: str = ""
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 0
    d_ff: int = 0
    vocab_size: int = BYTE_VOCAB
    seq_len: int = 128
    norm: str = "rmsnorm"
    pos: str = "rope"
    mlp: str = "swiglu"
    tie_embeddings: bool = True
    init_std: float = 0.02
    rope_theta: float = 10000.0
    param_dtype: str = "float32"
    compute_dtype: str = "auto"  # auto: bfloat16 on GPU/TPU, float32 on CPU
    param: str = "sp"  # "sp" | "mup" (scaling.mup)
    base_width: int = 0  # muP: the d_model the hyperparameters were tuned at (required)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def ff_dim(self) -> int:
        return self.d_ff or 4 * self.d_model


@dataclass(frozen=True)
class DataConfig:
    """Where tokens come from. `python_source` is the embedded stdlib corpus; `text_files` reads
    your own .txt/.jsonl files named by the `paths` globs (JSONL text under `text_key`); any
    other name is a TFDS dataset read from `data_dir` (default: $SCALING_DATA_DIR or
    ~/.cache/scaling/tfds). `tokenizer` = "" means UTF-8 bytes, else the path of a SentencePiece
    `.model` file (`scaling tokenizer train`)."""

    dataset: str = "python_source"
    data_dir: str = ""
    paths: tuple[str, ...] = ()
    text_key: str = "text"
    tokenizer: str = ""
    train_split: str = "train"
    val_split: str = "validation"
    val_tokens: int = 65536  # fixed held-out tokens used for every validation loss
    task_mix: float = 0.03  # fraction of training sequences that are few-shot task text


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and loop. `warmup_steps` < 0 means automatic (see scaling.train)."""

    steps: int = 200
    batch_size: int = 32
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = -1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    seed: int = 0
    eval_every: int = 0  # 0: about 10 validations per run
    log_every: int = 10
    checkpoint_every: int = 0  # 0: about 5 checkpoints per run
    keep_checkpoints: int = 3
    # Updates run per host dispatch (a compiled loop over that many steps; scaling.engine).
    # 0: automatic from the measured step time. Never changes results (not in the run id).
    steps_per_dispatch: int = 0


@dataclass(frozen=True)
class MeshConfig:
    """Device mesh sizes; exactly one may be -1 (fill with the remaining devices)."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1


@dataclass(frozen=True)
class EvalConfig:
    """Few-shot evaluation after training (and every `every` steps if > 0)."""

    enabled: bool = True
    shots: tuple[int, ...] = (0, 1, 4)
    n_items: int = 64
    tasks: tuple[str, ...] = ()  # empty: every task in scaling.evals
    every: int = 0
    seed: int = 0


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "mesh": MeshConfig,
    "eval": EvalConfig,
}


# ----------------------------------------------------------------------------- loading


def parse_value(text: str) -> Any:
    """A `--set` value as TOML (`128`, `3e-4`, `true`, `[0, 1]`, `"x"`), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `section.key=value` strings to a nested dict (returns a new dict)."""
    out = json.loads(json.dumps(raw))
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected section.key=value, e.g. model.d_model=128")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) == 1 and parts[0] == "name":
            out["name"] = parse_value(value)
            continue
        if len(parts) != 2 or parts[0] not in _SECTIONS:
            raise UserError(
                f"--set {item!r}: unknown key {key!r}; use one of "
                f"{', '.join(s + '.<field>' for s in _SECTIONS)} or name"
            )
        out.setdefault(parts[0], {})[parts[1]] = parse_value(value.strip())
    return out


def _build(cls: type, section: str, values: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserError(
            f"[{section}] unknown field {unknown[0]!r}; valid fields: {', '.join(sorted(known))}"
        )
    kwargs = {}
    for key, value in values.items():
        default = getattr(cls(), key)
        kwargs[key] = _coerce(f"{section}.{key}", value, default)
    return cls(**kwargs)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Check a TOML value against the type of the field's default (ints widen to floats)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserError(f"{name} = {value!r}: expected true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{name} = {value!r}: expected an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{name} = {value!r}: expected a number")
        if not math.isfinite(value):
            raise UserError(f"{name} = {value!r}: expected a finite number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise UserError(f"{name} = {value!r}: expected a string")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple):
            raise UserError(f"{name} = {value!r}: expected a list, e.g. [0, 1, 4]")
        return tuple(value)
    return value


def check_section(section: str, values: dict[str, Any]) -> None:
    """UserError for an unknown field or a wrong type in one section (no cross-field checks:
    a grid's [base.model] is completed by each shape before it is validated)."""
    if section not in _SECTIONS:
        raise UserError(f"unknown config section [{section}]; valid: {', '.join(_SECTIONS)}")
    _build(_SECTIONS[section], section, {k: v for k, v in values.items() if k != "preset"})


def from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig from a nested dict (TOML layout)."""
    for section in _SECTIONS:
        if not isinstance(raw.get(section, {}), dict):
            raise UserError(f"[{section}] = {raw[section]!r}: expected a table of fields")
    unknown = sorted(set(raw) - set(_SECTIONS) - {"name"})
    if unknown:
        raise UserError(
            f"unknown config section [{unknown[0]}]; valid sections: {', '.join(_SECTIONS)}"
        )
    model_raw = dict(raw.get("model", {}))
    preset = model_raw.get("preset", "")
    if preset:
        if preset not in PRESETS:
            raise UserError(
                f"model.preset = {preset!r} is not a known preset; choose one of "
                f"{', '.join(PRESETS)}"
            )
        model_raw = {**PRESETS[preset], **model_raw}
    sections = {
        name: _build(cls, name, model_raw if name == "model" else dict(raw.get(name, {})))
        for name, cls in _SECTIONS.items()
    }
    name = raw.get("name", "run")
    if not isinstance(name, str) or not name.strip():
        raise UserError(f'name = {name!r}: expected a non-empty string, e.g. name = "my-run"')
    cfg = RunConfig(name=name, **sections)
    validate(cfg)
    return cfg


def resolve_toml(path_or_name: str | Path, builtin_dir: Path, what: str) -> Path:
    """A TOML path, or the name of a built-in file in `builtin_dir` (e.g. `tiny`, `demo`)."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    builtin = builtin_dir / f"{path_or_name}.toml"
    if builtin.is_file():
        return builtin
    names = ", ".join(sorted(p.stem for p in builtin_dir.glob("*.toml")))
    raise UserError(f"{what} {str(path_or_name)!r} not found: give a TOML path or one of: {names}")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error becomes a UserError naming the file and line."""
    from scaling.fileio import read_text  # noqa: PLC0415

    text = read_text(path, f"save {path.name} as UTF-8 text")
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be a config; fix the file") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML ({e}); fix the syntax at that line") from e


def resolve_config_path(path_or_name: str | Path) -> Path:
    """A TOML path, or the name of a built-in config in scaling/configs (e.g. `tiny`)."""
    return resolve_toml(path_or_name, CONFIG_DIR, "config")


def load(path_or_name: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    raw = read_toml(resolve_config_path(path_or_name))
    return from_dict(apply_overrides(raw, overrides))


# ----------------------------------------------------------------------------- validation


def validate(cfg: RunConfig) -> None:
    """Static checks (no devices needed). `validate_mesh` checks against the device count."""
    m, t, d, e = cfg.model, cfg.train, cfg.data, cfg.eval
    for name in ("d_model", "n_layers", "n_heads", "vocab_size", "seq_len"):
        if getattr(m, name) <= 0:
            raise UserError(f"model.{name} = {getattr(m, name)}: must be a positive integer")
    if m.d_ff < 0 or m.n_kv_heads < 0:
        raise UserError("model.d_ff and model.n_kv_heads must be >= 0 (0 means the default)")
    if m.d_model % m.n_heads:
        raise UserError(
            f"model.n_heads = {m.n_heads} does not divide model.d_model = {m.d_model}; "
            f"pick n_heads from the divisors of d_model"
        )
    if m.head_dim % 2 and m.pos == "rope":
        raise UserError(
            f"model.d_model / model.n_heads = {m.head_dim} is odd; RoPE needs an even head dim: "
            f'choose n_heads so that d_model / n_heads is even, or set model.pos = "learned"'
        )
    if m.n_heads % m.kv_heads:
        raise UserError(
            f"model.n_kv_heads = {m.n_kv_heads} does not divide model.n_heads = {m.n_heads}"
        )
    for name, choices in _CHOICES.items():
        if getattr(m, name) not in choices:
            raise UserError(f"model.{name} = {getattr(m, name)!r}: choose one of {choices}")
    if m.init_std <= 0:
        raise UserError(f"model.init_std = {m.init_std}: must be > 0")
    if m.base_width < 0 or (m.param == "mup" and m.base_width == 0):
        raise UserError(
            f"model.base_width = {m.base_width}: muP needs the positive d_model at which the "
            f"hyperparameters were tuned, e.g. model.base_width = 64"
        )
    if not m.rope_theta > 0:
        raise UserError(f"model.rope_theta = {m.rope_theta}: must be > 0")
    if not t.grad_clip > 0:
        raise UserError(f"train.grad_clip = {t.grad_clip}: must be > 0 (the global-norm cap)")
    if t.weight_decay < 0:
        raise UserError(f"train.weight_decay = {t.weight_decay}: must be >= 0")
    for name in ("b1", "b2"):
        if not 0 <= getattr(t, name) < 1:
            raise UserError(f"train.{name} = {getattr(t, name)}: must be in [0, 1)")
    if not t.eps > 0:
        raise UserError(f"train.eps = {t.eps}: must be > 0")
    if t.seed < 0:
        raise UserError(f"train.seed = {t.seed}: must be an integer >= 0")
    if t.steps <= 0:
        raise UserError(f"train.steps = {t.steps}: must be a positive integer")
    if t.batch_size <= 0:
        raise UserError(f"train.batch_size = {t.batch_size}: must be a positive integer")
    if not t.lr > 0:
        raise UserError(f"train.lr = {t.lr}: must be > 0")
    if not 0 <= t.min_lr_ratio <= 1:
        raise UserError(f"train.min_lr_ratio = {t.min_lr_ratio}: must be in [0, 1]")
    if t.warmup_steps >= t.steps:
        raise UserError(
            f"train.warmup_steps = {t.warmup_steps} must be < train.steps = {t.steps} "
            f"(or -1 for automatic)"
        )
    for name in ("eval_every", "checkpoint_every"):
        if getattr(t, name) < 0:
            raise UserError(f"train.{name} = {getattr(t, name)}: must be >= 0 (0: automatic)")
    if t.log_every < 1:
        raise UserError(f"train.log_every = {t.log_every}: must be >= 1 (steps per metrics line)")
    if t.keep_checkpoints < 1:
        raise UserError(f"train.keep_checkpoints = {t.keep_checkpoints}: must be >= 1")
    if t.steps_per_dispatch < 0:
        raise UserError(
            f"train.steps_per_dispatch = {t.steps_per_dispatch}: must be >= 0 "
            f"(0: automatic, n: n updates per compiled call)"
        )
    if not 0 <= d.task_mix < 1:
        raise UserError(f"data.task_mix = {d.task_mix}: must be in [0, 1)")
    if d.val_tokens <= m.seq_len:
        raise UserError(f"data.val_tokens = {d.val_tokens}: must exceed model.seq_len")
    if not d.dataset:
        raise UserError("data.dataset is empty: use python_source or a TFDS dataset name")
    if d.dataset == "text_files" and not d.paths:
        raise UserError('data.dataset = "text_files" needs data.paths, e.g. ["corpus/**/*.txt"]')
    if d.paths and d.dataset != "text_files":
        raise UserError(
            f'data.paths is read only with data.dataset = "text_files" (now {d.dataset!r}); '
            f"set the dataset or drop data.paths"
        )
    if d.tokenizer and e.enabled:
        raise UserError(
            f"data.tokenizer = {d.tokenizer!r}: the few-shot evals still encode with the byte "
            f"tokenizer; set eval.enabled = false for a SentencePiece run"
        )
    if any(not isinstance(p, str) or not p for p in d.paths):
        raise UserError(f"data.paths = {list(d.paths)!r}: give non-empty glob strings")
    if any(k < 0 for k in e.shots) or e.n_items <= 0:
        raise UserError("eval.shots must be >= 0 and eval.n_items > 0")
    mesh = [cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor]
    if sum(s == -1 for s in mesh) > 1 or any(s == 0 or s < -1 for s in mesh):
        raise UserError(
            f"mesh = (data={mesh[0]}, fsdp={mesh[1]}, tensor={mesh[2]}): sizes must be "
            f"positive, with at most one -1 (fill with the remaining devices)"
        )
    if cfg.mesh.tensor > 0 and (m.n_heads % cfg.mesh.tensor or m.kv_heads % cfg.mesh.tensor):
        raise UserError(
            f"mesh.tensor = {cfg.mesh.tensor} must divide model.n_heads = {m.n_heads} "
            f"and the kv heads = {m.kv_heads}"
        )


def resolve_mesh(mesh: MeshConfig, n_devices: int) -> tuple[int, int, int]:
    """Concrete (data, fsdp, tensor) for `n_devices`, or UserError saying what does not fit."""
    sizes = [mesh.data, mesh.fsdp, mesh.tensor]
    fixed = 1
    for s in sizes:
        if s != -1:
            fixed *= s
    if -1 in sizes:
        if n_devices % fixed:
            raise UserError(
                f"mesh (data={mesh.data}, fsdp={mesh.fsdp}, tensor={mesh.tensor}) needs a "
                f"multiple of {fixed} devices, but {n_devices} are visible; change the mesh sizes"
            )
        sizes[sizes.index(-1)] = n_devices // fixed
    elif fixed != n_devices:
        raise UserError(
            f"mesh (data={mesh.data}, fsdp={mesh.fsdp}, tensor={mesh.tensor}) uses {fixed} "
            f"devices, but {n_devices} are visible; set one size to -1 or match the device count"
        )
    return sizes[0], sizes[1], sizes[2]


def validate_mesh(cfg: RunConfig, n_devices: int) -> tuple[int, int, int]:
    """Mesh sizes for this run, checking the batch divides the data-parallel size."""
    data, fsdp, tensor = resolve_mesh(cfg.mesh, n_devices)
    if cfg.train.batch_size % (data * fsdp):
        raise UserError(
            f"train.batch_size = {cfg.train.batch_size} is not divisible by the data-parallel "
            f"size data x fsdp = {data * fsdp}; use a multiple of {data * fsdp}"
        )
    if cfg.mesh.tensor == -1 and (cfg.model.n_heads % tensor or cfg.model.kv_heads % tensor):
        raise UserError(f"mesh.tensor resolves to {tensor}, which does not divide the heads")
    return data, fsdp, tensor


# Fields added after run ids were first published: left out of the hash while they hold their
# default, so the ids of existing configs (and finished sweeps) do not move.
_HASH_OMIT_AT_DEFAULT = {"data": ("paths", "tokenizer"), "model": ("param", "base_width")}
# Fields that never change a run's results (how it is executed, not what it computes).
_HASH_OMIT_ALWAYS = {"train": ("steps_per_dispatch",)}


def config_hash(cfg: RunConfig, length: int = 12) -> str:
    """Stable id of a resolved config: sha256 of its canonical JSON, hex-truncated."""
    raw = cfg.to_dict()
    for section, keys in _HASH_OMIT_AT_DEFAULT.items():
        default = _SECTIONS[section]()
        for key in keys:
            if raw[section][key] == dataclasses.asdict(default)[key]:
                del raw[section][key]
    for section, keys in _HASH_OMIT_ALWAYS.items():
        for key in keys:
            raw[section].pop(key, None)
    blob = json.dumps(raw, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def to_toml(cfg: RunConfig) -> str:
    """Serialise a config back to TOML (each run's resolved config.toml), with a real TOML writer:
    any name or string round-trips, quotes and backslashes included."""
    import tomli_w  # noqa: PLC0415 - only where a run directory is written

    return tomli_w.dumps({"name": cfg.name, **{s: cfg.to_dict()[s] for s in _SECTIONS}})


def slug(name: str, max_len: int = 64) -> str:
    """A safe directory name for a run name: letters, digits, `.`, `_`, `-` only; no leading
    dot, no path separators, never empty (`../../x"q` -> `x-q`)."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-_")
    return out[:max_len].rstrip(".-_") or "run"
