"""Rough wall-time estimates for a plan on the current device, without importing JAX.

time(cell) = compile (once per distinct static shape) + per-run cost + steps * step_overhead
             + (training FLOPs + validation FLOPs) / throughput(N) + evaluation time.

Throughput:
- CPU: log-linear interpolation in N_total through `CPU_FLOPS_PER_S`, plus a per-step overhead,
  a compile cost and a per-run cost (opening the data, the saves and, when `eval.enabled`, the
  few-shot evaluation), refitted on 2026-12-04 to the code as it is since the throughput work of
  that day (several updates per dispatch, the persistent compile cache), on the 2-core AMD EPYC
  development machine, JAX CPU, f32: non-negative least squares of the per-run wall times of the
  demo grid's 20 cells of seed 0 run by one launcher (`sweep run demo --set 'seeds=[0]'`, fresh
  compile cache, load average ~2) on [first cell of a shape, 1, steps, FLOPs / rate]: 3.7 s a
  compile, 0.8 s a run (0.45 s plus the 0.4 s of evals below), 2.6 ms a step and the rates
  below 1.3e5 params at 3.6x those of the earlier fit; worst run off by 3.6 s, total exact
  (242 s). The evaluation's share of the run
  cost is the mean of the runs' own `evals.seconds` (0.4 s). The points at 1.3e5, 1e6 and 5e6
  params are `python -m scaling.bench --config small` (123K params, 39 GFLOP/s) and the same at
  d_model 128 x 4 layers (1.1M, 94 GFLOP/s) and 256 x 6 (6.4M, 113 GFLOP/s), batch 16. The
  estimate said 4.2 min for that sweep (measured 4.0) and 5.2 min for the whole demo with
  `--workers 2` (measured 5.1-5.4 min from fresh clones that day). Machines sold as the same kind
  differ by 2-2.5x on this workload (the same demo took 309 s on one and 753 s on another), and
  the model was fitted on a fast one: read it as the fast end, or calibrate it (below).
  Override with SCALING_FLOPS_PER_S (a single number for every size; > 0, or exit 2).
- GPU/TPU: `scaling.flops.peak_flops(kind, "bfloat16") * ASSUMED_MFU * n_devices`.
  Unknown devices print "?" rather than a made-up number.
- `--workers N` (N launchers on one machine): the cells are list-scheduled in plan order (each
  launcher takes the next cell nobody holds as soon as it is free, as `sweeps.workers` does), each
  one slowed by the launchers' contention for the cores: one demo launcher keeps
  `CPU_LAUNCHER_CORES` busy (measured: the demo sweep took 879 s with one launcher and 576 s with
  two on the 2-core machine, 2026-12-03, so one launcher's share of 2 cores is 2 x 576 / 879;
  not re-measured after the throughput work; `sweeps.calibrate` divides a run's measured time
  by the same factor for the launchers it recorded).
  On a GPU/TPU the launchers share the devices, so N gives no gain in the estimate.
All of the above models one machine and is never measured on the one it runs on: `sweep plan`
says so under the plan, and with `--out DIR` calibrates it on DIR's finished runs
(sweeps.calibrate).
The device is taken from SCALING_DEVICE_KIND, else `nvidia-smi`, else "cpu"; SCALING_DEVICE_COUNT
(a whole number >= 1) sets the number of devices, else 1 with SCALING_DEVICE_KIND, else the
detected count.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Sequence
from functools import lru_cache

from scaling.errors import UserError
from scaling.flops import interval, n_validations

CPU_FLOPS_PER_S = [(3e3, 66e9), (3e4, 59e9), (1.3e5, 39e9), (1e6, 94e9), (5e6, 113e9)]
CPU_STEP_OVERHEAD_S = 2.6e-3
CPU_COMPILE_S = 3.7
CPU_RUN_S = 0.45  # per run: data, saves (fitted with CPU_EVAL_S as one 0.8 s constant)
CPU_EVAL_S = 0.4  # per run with eval.enabled: the few-shot evaluation of a tiny model
CPU_LAUNCHER_CORES = 1.31  # cores one launcher of tiny cells keeps busy (see the module doc)
ASSUMED_MFU = 0.3
GPU_STEP_OVERHEAD_S = 5e-3
GPU_COMPILE_S = 30.0
GPU_RUN_S = 0.0
GPU_EVAL_S = 30.0


@lru_cache(maxsize=1)
def detect_device() -> tuple[str, int]:
    """(device kind, device count) of this machine, without importing JAX."""
    kind = os.environ.get("SCALING_DEVICE_KIND", "").strip()
    # read (and checked) whether or not the kind is set: it overrides the detected count too
    count = _env_positive(
        "SCALING_DEVICE_COUNT", int, "a whole number of devices", "8", "the detected count"
    )
    if kind:
        return kind, int(count or 1)
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            names = [line.strip() for line in out.splitlines() if line.strip()]
            if names:
                return names[0], int(count or len(names))
        except (OSError, subprocess.SubprocessError):
            pass
    return "cpu", int(count or 1)


def _env_positive(name: str, cast: type, what: str, example: str, unset: str) -> float | None:
    """The number in $name (None when unset or empty), or UserError unless it is > 0."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = cast(raw)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise UserError(
            f"{name}={raw!r}: must be {what} > 0, e.g. {name}={example}, or unset it ({unset})"
        )
    return value


def throughput(n_total: float, device: tuple[str, int]) -> float | None:
    """Sustained training FLOP/s for a model of n_total params on `device`, or None."""
    forced = _env_positive(
        "SCALING_FLOPS_PER_S",
        float,
        "a finite FLOP/s figure",
        "4e10",
        "the built-in throughput model",
    )
    if forced:
        return forced
    kind, count = device
    if kind.lower() == "cpu":
        pts = CPU_FLOPS_PER_S
        x = math.log(max(n_total, pts[0][0]))
        for (n0, f0), (n1, f1) in zip(pts, pts[1:], strict=False):
            if x <= math.log(n1):
                t = (x - math.log(n0)) / (math.log(n1) - math.log(n0))
                return math.exp(math.log(f0) + t * (math.log(f1) - math.log(f0)))
        return pts[-1][1]
    from scaling.flops import peak_flops

    peak = peak_flops(kind, "bfloat16")
    return None if peak is None else peak * ASSUMED_MFU * count


def estimate_seconds(cells: Sequence, device: tuple[str, int]) -> list[float | None]:
    """Per-cell estimates; the compile cost is charged to the first cell of each shape."""
    return [None if p is None else p[0] + p[1] for p in estimate_parts(cells, device)]


def estimate_parts(cells: Sequence, device: tuple[str, int]) -> list[tuple[float, float] | None]:
    """Per-cell (fixed, work) seconds: fixed = compile (first cell of a shape) + per-run cost +
    evaluation; work = steps x step overhead + FLOPs / throughput. None: unknown device."""
    cpu = device[0].lower() == "cpu"
    overhead = CPU_STEP_OVERHEAD_S if cpu else GPU_STEP_OVERHEAD_S
    compile_s = CPU_COMPILE_S if cpu else GPU_COMPILE_S
    eval_s = CPU_EVAL_S if cpu else GPU_EVAL_S
    run_s = CPU_RUN_S if cpu else GPU_RUN_S
    seen: set[tuple] = set()
    out: list[tuple[float, float] | None] = []
    for c in cells:
        rate = throughput(c.n_total, device)
        if rate is None:
            out.append(None)
            continue
        cfg = c.config
        key = (cfg.model, cfg.train.batch_size)
        first = key not in seen
        seen.add(key)
        t = cfg.train
        n_val = n_validations(c.steps, c.steps, interval(t.eval_every, c.steps, t.validations))
        val_flops = n_val * cfg.data.val_tokens * c.flops_per_token / 3
        fixed = compile_s * first + run_s + (eval_s if cfg.eval.enabled else 0.0)
        out.append((fixed, c.steps * overhead + (c.c_exact + val_flops) / rate))
    return out


def _usable_cores() -> int:
    """The cores this process may run on (its affinity mask, as `nproc` counts them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def contention(launchers: float, device: tuple[str, int], cores: int | None = None) -> float:
    """How much slower each run trains with `launchers` launchers on one machine than alone (>= 1;
    `cores` default: this machine's), see the module doc. `wall_seconds` charges it to every
    cell of `--workers N`; `sweeps.calibrate` divides a run's measured time by it."""
    if launchers <= 1:
        return 1.0
    if device[0].lower() == "cpu":
        n = max(1, cores or _usable_cores())
        return max(1.0, launchers * CPU_LAUNCHER_CORES / n) / max(1.0, CPU_LAUNCHER_CORES / n)
    return float(launchers)  # they share the accelerators


def in_flight(runs: int, device: tuple[str, int]) -> float:
    """Wall seconds per second of one-launcher work with `runs` in flight (`sweep status`): on a
    CPU they share its cores (`contention`); on accelerators they are taken as the tasks of an
    array, each on its own devices (`sweep run --workers` is for CPUs: keep 1 on one GPU)."""
    n = max(1, runs)
    return (contention(n, device) if device[0].lower() == "cpu" else 1.0) / n


def wall_seconds(
    per_cell: Sequence[float], workers: int, device: tuple[str, int], cores: int | None = None
) -> float:
    """Wall time of the cells (`estimate_seconds`, plan order) run by `workers` launchers on one
    machine with `cores` CPU cores (default: this machine's), see the module doc. Launchers
    beyond one per cell find nothing to train and cost nothing."""
    workers = min(workers, len(per_cell))
    if workers <= 1:
        return float(sum(per_cell))
    slow = contention(workers, device, cores)
    free = [0.0] * workers  # when each launcher is next free
    for t in per_cell:
        i = free.index(min(free))
        free[i] += t * slow
    return max(free)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.1f}m"
    return f"{s / 3600:.1f}h"
