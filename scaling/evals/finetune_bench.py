"""Measured memory of full vs LoRA vs QLoRA fine-tuning:
`python -m scaling.evals.finetune_bench [--d-model 256] [--layers 4] [--rank 8] [--batch 16]`.

Builds a random-initialised model of the given shape (no checkpoint or dataset needed), runs one
real fine-tuning step of each method through scaling.evals.finetune, and prints, per method:
trainable parameters; the bytes of the stored frozen projection weights (float32, or int8/NF4
codes plus float32 block scales: `nbytes` of the arrays actually held); and XLA's memory analysis
of the compiled step (arguments = resident state incl. optimiser moments and frozen base,
temporaries, and peak = arguments + outputs - donated + temporaries). On a GPU it also prints
the device's peak bytes in use after each method (allocator statistics; None on CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import jax
from flax import nnx

from scaling import sharding
from scaling.config import ModelConfig, RunConfig, TrainConfig
from scaling.errors import UserError
from scaling.evals import finetune as F
from scaling.evals.finetune_spec import Settings, parse_method, projection_dims, validate_spec
from scaling.model import Transformer
from scaling.validation import validate

METHODS = ("full", "lora:r={r}", "qlora:r={r},quant=int8", "qlora:r={r}")


def check(cfg: ModelConfig, rank: int, batch: int) -> None:
    """UserError (one line, before any compute) for a bad shape, rank or batch."""
    validate(RunConfig(model=cfg, train=TrainConfig(batch_size=batch)))  # shape, batch > 0
    for text in METHODS[1:]:
        validate_spec(parse_method(text.format(r=rank)).spec, cfg.mlp, projection_dims(cfg))


def measure(cfg: ModelConfig, rank: int, batch: int) -> list[dict]:
    run = RunConfig(model=cfg, train=TrainConfig(batch_size=batch))
    mesh = sharding.make_mesh(run)
    graphdef, params, other = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)), nnx.Param, ...)
    base = F.Base(run, mesh, graphdef, params, other, 0)
    s = dataclasses.replace(Settings(), steps=1, batch_size=batch, save=False)
    out = []
    for text in (m.format(r=rank) for m in METHODS):
        _, info = F.finetune(base, "upper", parse_method(text), batch, s)
        stats = jax.devices()[0].memory_stats() or {}
        out.append(
            {
                "method": text,
                "trainable_params": info["trainable_params"],
                "base_weight_bytes": info["base_weight_bytes"],
                **(info["step_memory"] or {}),
                "device_peak_bytes": stats.get("peak_bytes_in_use"),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    a = p.parse_args(argv)
    try:  # a bad flag is one "error:" line and exit 2 before any step, as in the CLI
        cfg = ModelConfig(d_model=a.d_model, n_layers=a.layers, n_heads=a.heads, seq_len=a.seq_len)
        check(cfg, a.rank, a.batch)
        rows = measure(cfg, a.rank, a.batch)  # e.g. a seq_len too short for the examples
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = sum(x.size for x in jax.tree.leaves(nnx.state(Transformer(cfg, rngs=nnx.Rngs(0)))))
    print(
        f"model d_model={a.d_model} layers={a.layers} ({n:,} params), batch {a.batch} x {a.seq_len}"
    )
    ref = rows[0]
    print(
        f"{'method':24s} {'trainable':>10s} {'base bytes':>11s} {'vs full':>8s} "
        f"{'step args':>10s} {'step peak':>10s} {'vs full':>8s}  device peak"
    )
    for r in rows:
        print(
            f"{r['method']:24s} {r['trainable_params']:>10,d} {r['base_weight_bytes']:>11,d} "
            f"{r['base_weight_bytes'] / ref['base_weight_bytes']:>8.3f} "
            f"{r.get('argument_bytes', 0):>10,d} {r.get('peak_bytes', 0):>10,d} "
            f"{r.get('peak_bytes', 0) / max(ref.get('peak_bytes', 1), 1):>8.3f}  "
            f"{r['device_peak_bytes']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
