"""`scaling mup-check`: its parser and handler. The module is light (no JAX); the probes in
`scaling.coordcheck` (which imports JAX) are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from scaling.errors import UserError
from scaling.fileio import atomic_write, check_writable_dir


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers like 1e-3,3e-3") from e
    if not values:  # an empty --lrs fell back to the default lr without a word
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers like 1e-3,3e-3")
    return values


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers like 32,64,128") from e


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mup-check",
        help="muP coordinate check: activation RMS vs width under SP and muP (+ lr transfer)",
    )
    p.add_argument(
        "--widths",
        type=_ints,
        default=[32, 64, 128, 256, 512],
        help="d_model list, each a multiple of 8 (the probes' head dim)",
    )
    p.add_argument("--base-width", type=int, default=None, help="muP base width (default: min)")
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak lr of the coordinate check (default 1e-2; with --lrs, one of them: "
        "default 1e-2 if listed, else the first)",
    )
    p.add_argument("--lrs", type=_floats, default=None, help="lr list: also plot loss vs lr")
    p.add_argument("--steps", type=int, default=5, help="Adam updates per probe")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seeds", type=int, default=1, help="seeds averaged per point")
    p.add_argument("--layers", type=int, default=2, help="n_layers of every probe")
    p.add_argument("--dataset", default="python_source")
    p.add_argument("--out", default="runs/mup-check", help="where the JSON and figures go")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=run)


def _finite_or_none(table: dict[int, dict[float, float]]) -> dict[int, dict[float, Any]]:
    return {
        w: {lr: v if math.isfinite(v) else None for lr, v in d.items()} for w, d in table.items()
    }


def run(args: argparse.Namespace) -> int:
    """Handler of `scaling mup-check`: probe, print one line per parametrisation, write
    OUT/mup_check.json and the figures."""
    from scaling.coordcheck import (  # noqa: PLC0415 - imports JAX
        best_lr_by_width,
        max_ratio,
        mean_loss,
        plot,
        probes,
        sweep,
    )

    if args.lr is not None and not (args.lr > 0 and math.isfinite(args.lr)):
        raise UserError(f"mup-check --lr {args.lr:g}: give a positive peak lr, e.g. 1e-2")
    lrs = args.lrs if args.lrs is not None else [1e-2 if args.lr is None else args.lr]
    if args.lr is not None and args.lr not in lrs:  # it was replaced by lrs[0] without a word
        raise UserError(
            f"mup-check --lr {args.lr:g} is not one of --lrs {','.join(f'{x:g}' for x in lrs)}: "
            "the coordinate check runs at one of the probed lrs; add it to --lrs or drop --lr"
        )
    coord_lr = args.lr if args.lr is not None else (1e-2 if 1e-2 in lrs else lrs[0])
    grid = dict(
        base_width=args.base_width, steps=args.steps, batch=args.batch, seeds=args.seeds,
        n_layers=args.layers, dataset=args.dataset,
    )  # fmt: skip
    probes(args.widths, lrs, **grid)  # a bad flag exits 2 before --out is made
    out = check_writable_dir(Path(args.out))  # before the probes: results must be savable
    records = sweep(args.widths, lrs, progress=not args.no_progress, **grid)
    summary: dict[str, Any] = {"records": records, "coord_lr": coord_lr}
    for p in ("sp", "mup"):
        ratio, layer = max_ratio(records, p, coord_lr)
        summary[p] = {
            "max_rms_ratio": ratio,
            "layer": layer,
            "best_lr": best_lr_by_width(records, p) if len(lrs) > 1 else None,
            "loss_by_lr": _finite_or_none(mean_loss(records, p)) if len(lrs) > 1 else None,
        }
        line = f"{p.upper():>3}: RMS(widest)/RMS(narrowest) up to {ratio:.2f}x ({layer})"
        if len(lrs) > 1:
            line += "; best lr by width " + ", ".join(
                f"d{w}: {'none (every lr diverged)' if lr is None else f'{lr:g}'}"
                for w, lr in summary[p]["best_lr"].items()
            )
        print(line)
    atomic_write(out / "mup_check.json", json.dumps(summary, indent=2, default=str) + "\n")
    for path in plot(records, out, coord_lr):
        print(f"wrote {path}")
    return 0
