"""`scaling train CONFIG [--set section.key=value ...] [--out DIR] [--no-progress]
[--coordinator HOST:PORT --num-processes N --process-id I]`.

The parser and its handler. Loads and validates the config (UserError -> exit 2 before any
compute), trains or resumes into the run directory, and prints where the outputs are. The module
itself is light (the dispatcher imports it for `scaling --help`); JAX is imported by the handler,
once the config is known to be valid.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from scaling import config as config_lib
from scaling.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one model from a TOML config")
    p.add_argument("config", help="TOML path or built-in config name (e.g. tiny)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config field, e.g. --set model.d_model=128 (repeatable)",
    )
    p.add_argument("--out", default=None, help="run directory (default runs/<name>-<hash>)")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    g = p.add_argument_group(
        "several processes (default: env JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
        "JAX_PROCESS_ID, else a SLURM srun step, else one process)"
    )
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="process 0's address")
    g.add_argument("--num-processes", type=int, default=None, metavar="N")
    g.add_argument("--process-id", type=int, default=None, metavar="I", help="0..N-1")
    g.add_argument(
        "--coordinator-timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds to wait for the coordinator (default 300)",
    )
    r = p.add_mutually_exclusive_group()
    r.add_argument(
        "--restart",
        action="store_true",
        help="start from step 0 even though checkpoints exist (they are kept as restarted-<step>; "
        "a finished run's result.json as result.replaced.json)",
    )
    r.add_argument(
        "--from-step",
        type=int,
        default=None,
        metavar="N",
        help="resume from checkpoint step N (newer steps are kept as discarded-<step>; a "
        "finished run's result.json as result.replaced.json)",
    )
    p.set_defaults(handler=run_train_command)


def default_out_dir(cfg: config_lib.RunConfig) -> Path:
    """runs/<slug of name>-<config hash>: a rerun of the same config resumes in the same
    directory, and no name (`../../x`) can place it outside runs/."""
    return Path("runs") / f"{config_lib.slug(cfg.name)}-{config_lib.config_hash(cfg)}"


def run_train_command(args: argparse.Namespace) -> int:
    """Handler for `scaling train`; returns the process exit code (0 done, 1 diverged)."""
    from scaling import distributed

    setup = distributed.resolve(  # flags, then JAX_* env, then SLURM: UserError when bad
        getattr(args, "coordinator", None),
        getattr(args, "num_processes", None),
        getattr(args, "process_id", None),
        getattr(args, "coordinator_timeout", None),
    )
    cfg = config_lib.load(args.config, args.overrides)  # static validation: UserError
    config_lib.warn_ignored(cfg)  # valid settings that do nothing: one `warning:` line each
    from_step = getattr(args, "from_step", None)
    if from_step is not None and from_step < 0:
        raise UserError(f"--from-step {from_step}: must be a checkpoint step >= 0")
    if args.out is not None and not args.out.strip():  # `--out "$UNSET"` went to runs/ silently
        raise UserError(
            "--out is empty; pass a run directory, or leave --out out for runs/<name>-<hash>"
        )
    out = Path(args.out) if args.out else default_out_dir(cfg)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory; pass a directory path")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    distributed.initialize(setup)  # before anything touches devices (imports JAX)
    from scaling import train  # imports JAX: only after the config is known to be valid

    result = train.train(
        cfg,
        out,
        progress=not args.no_progress,
        restart=getattr(args, "restart", False),
        from_step=from_step,
    )
    if setup.process_id == 0:  # one summary per run, not one per process
        print(_summary(result, out))
    return 0 if result["status"] == "done" else 1


def _fmt(x: object, spec: str) -> str:
    """`x` formatted, or n/a when it is missing or not a number (a stored result.json may be
    older than a field, or edited by hand)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return "n/a"
    return format(x, spec)


def _summary(result: dict, out: Path) -> str:
    """A few lines: outcome, headline numbers, and where every output lives."""
    r = result.get
    status = r("status")
    head = f"run {r('name')} ({r('run_id')}): {status} at step {r('step')}"
    if status == "diverged":
        head += f" (non-finite loss at step {r('diverged_at_step')})"
    lines = [
        head,
        f"  val loss     {_fmt(r('final_val_loss'), '.4f')} nats/token "
        f"(best {_fmt(r('best_val_loss'), '.4f')})",
        f"  params       {_fmt(r('N_total'), ',')} total, {_fmt(r('N_nonembed'), ',')} "
        "non-embedding",
        f"  tokens       {_fmt(r('D'), ',')}   FLOPs {_fmt(r('C_exact'), '.3e')}",
        f"  throughput   {_fmt(r('tokens_per_s'), ',.0f')} tokens/s, "
        f"MFU {_fmt(r('mfu'), '.1%')} on {r('n_devices', '?')} x {r('device_kind', '?')}",
        f"  wall time    {_fmt(r('wall_time_s'), '.1f')} s",
    ]
    for w in result.get("checkpoint_warnings") or []:
        lines.append(f"  warning      {w}")
    lines += [
        f"outputs in {out}/",
        f"  config.toml    resolved config (hash {r('run_id')})",
        "  metrics.jsonl  per-step train/val loss, lr, tokens/s, MFU",
        "  checkpoints/   Orbax checkpoints (a rerun resumes from the newest readable one)",
        "  result.json    final summary" + (" incl. few-shot evals" if r("evals") else ""),
    ]
    if (out / "tensorboard").is_dir():
        lines.append(f"  tensorboard/   TensorBoard events: tensorboard --logdir {out}/tensorboard")
    return "\n".join(lines)
