"""Checks of the SLURM resource options of `scaling sweep run` (sweeps.cli), before anything is
submitted: a count that cannot mean anything exits 2 naming the option, instead of reaching
sbatch (whose refusal names no option) or, worse, meaning something else there: `--time=0`
asks SLURM for no time limit at all. No JAX, no submitit."""

from __future__ import annotations

import argparse
import math

from scaling.errors import UserError

# option -> what leaving it out means; each must be >= 1 when given
AT_LEAST_ONE = dict(
    nodes="default 1",
    tasks_per_node="default 1",
    cpus_per_task="default: the cluster's",
    timeout_min="default 240",
    array_parallelism="default 64",
)


def check_slurm_numbers(args: argparse.Namespace) -> None:
    """UserError for a SLURM resource option out of range (None: not given)."""
    for key, default in AT_LEAST_ONE.items():
        value = getattr(args, key)
        if value is not None and value < 1:
            raise UserError(f"--{key.replace('_', '-')} {value}: must be >= 1 ({default})")
    if args.gpus_per_node is not None and args.gpus_per_node < 0:
        raise UserError(f"--gpus-per-node {args.gpus_per_node}: must be >= 0 (default: none)")
    if args.mem_gb is not None and not (math.isfinite(args.mem_gb) and args.mem_gb > 0):
        raise UserError(
            f"--mem-gb {args.mem_gb:g}: must be a finite number of GiB > 0, e.g. 64, or leave "
            f"it out (the cluster's default)"
        )
