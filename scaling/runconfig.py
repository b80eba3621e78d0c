"""The run config's typed, frozen sections (model, data, train, mesh, eval), `RunConfig`, the
model presets and the allowed string values: plain data. Loading and `--set` overrides live in
scaling.config (which re-exports these names), the checks in scaling.validation. No JAX.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

BYTE_VOCAB = 259  # 256 UTF-8 byte values + BOS, EOS, PAD (see scaling.data.tokenizer)

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


CHOICES = {
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
    """Optimiser and loop. `warmup_steps` = -1 means automatic (see scaling.optim)."""

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
    eval_every: int = 0  # 0: about `validations` evenly spaced per run
    validations: int = 10  # with eval_every = 0; the last step always validates
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


SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "mesh": MeshConfig,
    "eval": EvalConfig,
}
