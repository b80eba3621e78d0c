"""Training-step benchmark: `python -m scaling.bench [--config small|gpt2-small|TOML] ...`.

Runs the real compiled train step (`Engine.step` of scaling.engine: sharded AdamW, donation,
async dispatch) one update per call, fetching the previous step's loss after each dispatch, for
`--steps` steps on pseudo-random byte/token batches (seeded by `train.seed`, as the init is) at a
constant learning rate of 0.1 x `train.lr` (no warmup), and prints tokens/s, achieved FLOP/s
(training FLOPs per token from scaling.flops x tokens/s) and MFU against the device's peak (n/a
on CPU), stating the FLOP convention and XLA's own count of the compiled step
(`cost_analysis()`). The first (compiling) call and `--warmup` more steps are excluded from the
timing. No dataset is needed. A `--set` the benchmark would ignore (`train.steps`, the schedule,
eval/checkpoint cadence, `data.*`) is refused with exit 2 (`IGNORED`). `scaling train` runs
several updates per call for small models (`scaling.loop`), so its tokens/s can be higher than
this per-call figure on them.

`make bench` then runs the demo-grid throughput benchmark (`python -m sweeps.bench_demo`) and the
fitting benchmark (`python -m analysis.laws.bench`), each its own program: scaling/ never imports
sweeps/ or analysis/.
"""

from __future__ import annotations

import argparse
import sys
import time

from scaling import config as config_lib

# name -> (config overrides, default steps)
CONFIGS: dict[str, tuple[list[str], int]] = {
    # A fixed small CPU-sized model (the `tiny` demo shape): 123K params, 32 x 128 tokens/step.
    "small": (["model.preset=cpu-s", "train.batch_size=32"], 30),
    # GPT-2 small (124M): d768, 12 layers, 12 heads, seq 1024, GPT-2 vocab, LayerNorm, GELU,
    # learned positions, tied head. bf16 compute on GPU. Meant for GPUs/TPUs.
    "gpt2-small": (
        [
            "model.preset=gpt3-small",
            "model.seq_len=1024",
            "model.vocab_size=50257",
            "train.batch_size=32",
        ],
        50,
    ),
}


# --set keys whose value the benchmark never reads, and what to do instead: refused (exit 2),
# not silently ignored. It runs a constant learning rate (`LR_SCALE` x train.lr) on
# pseudo-random tokens, one update per call, without evals or checkpoints.
_LOOP_ONLY = "the benchmark has no evals, checkpoints or metrics lines; drop it"
IGNORED: dict[str, str] = {
    "train.steps": "use --steps N (timed steps) and --warmup N (untimed ones)",
    "train.warmup_steps": "the benchmark runs a constant lr (train.lr x LR_SCALE); drop it",
    "train.min_lr_ratio": "the benchmark runs a constant lr (train.lr x LR_SCALE); drop it",
    "train.steps_per_dispatch": "the benchmark times one update per call; drop it",
    "train.eval_every": _LOOP_ONLY,
    "train.validations": _LOOP_ONLY,
    "train.checkpoint_every": _LOOP_ONLY,
    "train.keep_checkpoints": _LOOP_ONLY,
    "train.log_every": _LOOP_ONLY,
    "data": "the benchmark feeds pseudo-random tokens (seeded by train.seed); drop it",
}
LR_SCALE = 0.1  # a constant lr without warmup: a tenth of the config's peak keeps it finite


def check_overrides(overrides: list[str]) -> None:
    """UserError for a --set key in `IGNORED` (before anything loads or compiles)."""
    from scaling.errors import UserError  # noqa: PLC0415
    from scaling.overrides import parse_override  # noqa: PLC0415

    for item in overrides:
        parts, _ = parse_override(item, "section.key=value", "train.batch_size=16")
        key = ".".join(parts)
        why = IGNORED.get(key) or IGNORED.get(parts[0])
        if why:
            raise UserError(f"--set {item.strip()}: the benchmark does not use {key}; {why}")


def bench_config(name: str, overrides: list[str]) -> tuple[config_lib.RunConfig, int]:
    """The RunConfig and default step count for a named bench config, or any TOML config
    (UserError for a --set the benchmark would ignore, `IGNORED`)."""
    check_overrides(overrides)
    if name in CONFIGS:
        base, steps = CONFIGS[name]
        cfg = config_lib.load("tiny", [f"name={name}", *base, "eval.enabled=false", *overrides])
    else:
        cfg, steps = config_lib.load(name, overrides), 30
    config_lib.warn_ignored(cfg)
    return cfg, steps


def check_counts(steps: int, warmup: int) -> None:
    """UserError for a step count that cannot be timed (before anything compiles)."""
    from scaling.errors import UserError  # noqa: PLC0415

    if steps < 1:
        raise UserError(f"--steps {steps}: the number of timed steps must be >= 1")
    if warmup < 0:
        raise UserError(f"--warmup {warmup}: the number of untimed steps must be >= 0")


def run_bench(cfg: config_lib.RunConfig, steps: int, warmup: int = 3) -> dict:
    """Time `steps` train steps after the compiling one and `warmup` more untimed ones; return
    the measurements."""
    check_counts(steps, warmup)
    import jax  # noqa: PLC0415 - heavy, only when benchmarking
    import numpy as np  # noqa: PLC0415

    from scaling import engine, flops, sharding  # noqa: PLC0415
    from scaling.model import compute_dtype  # noqa: PLC0415

    sharding.maybe_initialize_distributed()
    mesh = sharding.make_mesh(cfg)
    m, t = cfg.model, cfg.train
    eng = engine.engine(cfg, mesh)
    rng = np.random.default_rng(t.seed)
    vocab = min(m.vocab_size, 256)  # byte-valued tokens are valid for every vocab
    host = [rng.integers(0, vocab, (t.batch_size, m.seq_len + 1), dtype=np.int32) for _ in range(4)]
    batches = [engine.put(b, eng.batch_sharding) for b in host]
    lr = np.float32(t.lr * LR_SCALE)
    t0 = time.perf_counter()
    with jax.set_mesh(mesh):
        state = eng.init(jax.random.key(t.seed))
        cost = eng.step.lower(state, batches[0], lr).cost_analysis() or {}
        xla_flops = cost.get("flops") if isinstance(cost, dict) else None
        prev = None
        for i in range(1 + warmup + steps):  # call 0 compiles; then `warmup` untimed steps
            if i == 1 + warmup:
                jax.block_until_ready(state)
                t_start = time.perf_counter()
                compile_s = t_start - t0
            state, metrics = eng.step(state, batches[i % len(batches)], lr)
            if prev is not None:
                loss = float(prev["loss"])  # fetch step i-1 after dispatching step i
            prev = metrics
        loss = float(prev["loss"])
        jax.block_until_ready(state)
    elapsed = time.perf_counter() - t_start
    tokens_per_s = steps * t.batch_size * m.seq_len / elapsed
    fpt = flops.flops_per_token(m)
    dtype = np.dtype(compute_dtype(m)).name
    kind = jax.devices()[0].device_kind
    return {
        "config": cfg.name,
        "device_kind": kind,
        "n_devices": jax.device_count(),
        "mesh": dict(mesh.shape),
        "compute_dtype": dtype,
        "params": flops.param_counts(m).total,
        "tokens_per_step": t.batch_size * m.seq_len,
        "lr": float(lr),
        "seed": t.seed,
        "steps": steps,
        "compile_and_warmup_s": compile_s,
        "step_ms": 1e3 * elapsed / steps,
        "tokens_per_s": tokens_per_s,
        "flops_per_token": fpt,
        "flops_per_s": tokens_per_s * fpt,
        "mfu": flops.mfu(tokens_per_s * fpt, kind, dtype, jax.device_count()),
        "peak_flops_per_device": flops.peak_flops(kind, dtype),
        "xla_flops_per_token": xla_flops / (t.batch_size * m.seq_len) if xla_flops else None,
        "final_loss": loss,
    }


def format_result(r: dict) -> str:
    from scaling import flops  # noqa: PLC0415

    mfu = "n/a (no peak known for this device)" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
    xla = "n/a"
    if r.get("xla_flops_per_token"):
        ratio = r["xla_flops_per_token"] / r["flops_per_token"]
        xla = f"{r['xla_flops_per_token']:.3e} FLOPs/token (cost_analysis(); {ratio:.2f}x ours)"
    return "\n".join(
        [
            f"train-step benchmark: {r['config']} on {r['n_devices']} x {r['device_kind']} "
            f"(mesh {r['mesh']}, {r['compute_dtype']})",
            f"  params           {r['params']:,}",
            f"  tokens/step      {r['tokens_per_step']:,}   steps timed {r['steps']}",
            f"  lr, seed         {r['lr']:.3g} constant ({LR_SCALE} x train.lr), seed {r['seed']}",
            f"  compile+warmup   {r['compile_and_warmup_s']:.1f} s",
            f"  step time        {r['step_ms']:.2f} ms",
            f"  tokens/s         {r['tokens_per_s']:,.0f}",
            f"  achieved FLOP/s  {r['flops_per_s']:.3e}  ({r['flops_per_token']:.3e} FLOPs/token)",
            f"  MFU              {mfu}",
            f"  convention       {flops.CONVENTION}",
            f"  XLA's count      {xla}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scaling.bench", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="small", help="small | gpt2-small | a TOML path/name")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default per config)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after the compiling one")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="K=V",
        help="override a config field: model.*, mesh.*, train.batch_size, train.seed, train.lr "
        "(run at 0.1 x it), the optimizer's; not train.steps (use --steps)",
    )
    args = p.parse_args(argv)
    from scaling.errors import UserError  # noqa: PLC0415

    try:
        cfg, steps = bench_config(args.config, args.overrides)
        steps = steps if args.steps is None else args.steps
        check_counts(steps, args.warmup)
        result = run_bench(cfg, steps, args.warmup)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_result(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
