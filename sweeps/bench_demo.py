"""Small-model throughput benchmark on the demo grid (issue 13): `python -m sweeps.bench_demo`.

For the demo's smallest and largest shape it trains the real cell (few-shot evals off: the
training phase, validation and checkpoints included) in a fresh process and prints

    compile s      JAX's own compile durations in that process (trace + lower + XLA), wall s
    pure step ms   the implementation's compiled step alone (32 steps a call where it runs
                   several per dispatch, else one), in a tight loop on device-resident batches
    overhead ms    (cell wall - compile - pure step x steps) / steps: everything else the loop
                   does per step (data, transfers, dispatch, logging, validation, checkpoints)
    efficiency     pure step x steps / cell wall
    CPU eff.       the same in CPU seconds of the process (pure step CPU x steps / cell CPU): on
                   a machine whose speed drifts (a shared VM), time stolen from the process
                   inflates wall but not CPU seconds, so read this one when the two disagree
    val FLOPs      the run's validation forward FLOPs (`flops_val`) over its training FLOPs
                   (`C_exact`): work the loop does besides training steps, so the efficiency
                   cannot pass about 1 / (1 + this) (a forward runs at the step's FLOP rate)

for the previous implementation (one step per dispatch, no persistent compilation cache) and
the current defaults, cold (empty compilation cache) and warm (a rerun of the same shape). Then
it runs the whole demo grid's training phase (`scaling sweep run demo`, few-shot evals off)
with each, one after the other in fresh processes, and prints their CPU and wall seconds and
the ratio; then the current code again with `sweep run --workers 2` (two cells at once);
`--no-serial` skips the current code's one-launcher run.
`--previous REV` runs a git revision's code as the previous implementation instead (e.g. the
commit before issue 13); by default it is emulated with this code
(`train.steps_per_dispatch=1`, `SCALING_COMPILE_CACHE=off`).

Absolute seconds depend on the machine's load (printed); the ratios are measured side by side.
It lives in sweeps/ because it plans the demo grid; `make bench` runs it after `scaling.bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# one seed: the same 20 cells in every grid timing (the demo runs 2 seeds since 2026-12-04; the
# previous implementation's grid file has one)
GRID_SETS = ("seeds=[0]",)
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


def cell_child(index: int, out: str, overrides: list[str]) -> dict:
    """In a fresh process: train demo cell `index` and measure it (see module doc)."""
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from jax._src import monitoring  # noqa: PLC0415 - JAX's compile-duration events

    from scaling import config as C  # noqa: PLC0415
    from scaling import engine, sharding  # noqa: PLC0415
    from scaling.data import open_dataset  # noqa: PLC0415
    from scaling.train import train  # noqa: PLC0415
    from sweeps.grid import load_grid, plan_grid  # noqa: PLC0415

    compile_s = [0.0]

    def on_duration(event: str, seconds: float, **_: object) -> None:
        if event in COMPILE_EVENTS:
            compile_s[0] += seconds

    monitoring.register_event_duration_secs_listener(on_duration)
    cell = plan_grid(load_grid("demo", list(GRID_SETS))).cells[index]
    toml = Path(out) / "cell.toml"
    toml.write_text(C.to_toml(cell.config))
    cfg = C.load(str(toml), [*overrides, "eval.enabled=false"])
    open_dataset(cfg.data, cfg.model.seq_len, progress=False)  # prepared outside the timing
    t0, c0 = time.perf_counter(), time.process_time()
    result = train(cfg, Path(out) / "run", progress=False)
    wall, cpu, compiled = time.perf_counter() - t0, time.process_time() - c0, compile_s[0]
    steps = cfg.train.steps
    mesh = sharding.make_mesh(cfg)
    eng = engine.engine(cfg, mesh)
    data = open_dataset(cfg.data, cfg.model.seq_len, progress=False)
    B, seed = cfg.train.batch_size, cfg.train.seed
    host = [data.batch(s, B, seed) for s in range(32)]
    lr = np.float32(cfg.train.lr / 10)
    if hasattr(eng, "steps"):  # this implementation's step: 32 per call, batches on device
        stack = engine.put(np.stack(host), eng.chunk_sharding)
        lrs, k = np.full(32, lr, np.float32), np.int32(32)

        def run(state):
            return eng.steps(state, stack, lrs, k)[0], 32
    else:  # the previous implementation's: one per call
        batches = [engine.put(b, eng.batch_sharding) for b in host]

        def run(state):
            for b in batches:
                state, _ = eng.step(state, b, lr)
            return state, 32

    with jax.set_mesh(mesh):
        state, _ = run(eng.init(jax.random.key(0)))
        jax.block_until_ready(state)
        done, t1, c1 = 0, time.perf_counter(), time.process_time()
        while done < max(64, min(384, steps // 4)):
            state, n = run(state)
            done += n
        jax.block_until_ready(state)
        pure = (time.perf_counter() - t1) / done
        pure_cpu = (time.process_time() - c1) / done
    return {
        "label": cell.label,
        "n_params": cell.n_total,
        "steps": steps,
        "final_val_loss": result["final_val_loss"],
        "cell_wall_s": wall,
        "cell_cpu_s": cpu,
        "compile_s": compiled,
        "pure_step_ms": 1e3 * pure,
        "overhead_ms": 1e3 * (wall - compiled - pure * steps) / steps,
        "efficiency": pure * steps / wall,
        "cpu_efficiency": pure_cpu * steps / cpu,
        "val_share": _val_share(result),
    }


def _val_share(result: dict) -> float | None:
    """flops_val / training FLOPs; None where the implementation does not count them."""
    train = result.get("C_exact") or result.get("flops_exact")  # or its older name
    val = result.get("flops_val")
    return val / train if val is not None and train else None


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


# ----------------------------------------------------------------------------- the parent


def _env(tree: Path, cache: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env["SCALING_COMPILE_CACHE"] = cache
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _cell(tree: Path, cache: str, index: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-cell-") as out:
        cmd = [sys.executable, __file__, "cell", str(index), out, json.dumps(overrides)]
        proc = subprocess.run(
            cmd, env=_env(tree, cache), capture_output=True, text=True, check=False
        )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark cell {index} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _grid(tree: Path, cache: str, sets: list[str], max_runs: int | None, workers: int = 1) -> dict:
    """The demo grid's training phase (few-shot evals off) in fresh processes (`workers` of
    them with --workers: their CPU time is counted too)."""
    with tempfile.TemporaryDirectory(prefix="bench-grid-") as out:
        cmd = [sys.executable, "-c", "import sys; from scaling.cli import main; sys.exit(main())"]
        cmd += ["sweep", "run", "demo", "--out", out, "--no-progress"]
        for item in ["base.eval.enabled=false", *GRID_SETS, *sets]:
            cmd += ["--set", item]
        if max_runs is not None:
            cmd += ["--max-runs", str(max_runs)]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(  # cwd = the tree: `python -c` puts the working directory first
            # on sys.path, ahead of PYTHONPATH, so from this checkout's root the "previous" grid
            # ran this checkout's code (every grid ratio before 2026-12-04 compared it with itself)
            cmd,
            env=_env(tree, cache),
            capture_output=True,
            text=True,
            check=False,
            cwd=tree,
        )
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark grid run failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def _export(rev: str, into: Path) -> Path:
    """The tree of git revision `rev` of this checkout, extracted under `into`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(
    previous: str | None = None,
    grid: bool = True,
    max_runs: int | None = None,
    workers: int = 2,
    serial: bool = True,
) -> None:
    """Print the benchmark (see the module doc)."""
    from sweeps.grid import load_grid, plan_grid  # noqa: PLC0415

    cells = plan_grid(load_grid("demo", list(GRID_SETS))).cells
    sizes = [c.n_total for c in cells]
    picks = [sizes.index(min(sizes)), sizes.index(max(sizes))]
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        old_tree = _export(previous, Path(tmp) / "prev") if previous else ROOT
        old_sets = [] if previous else ["train.steps_per_dispatch=1"]
        label = f"previous = {previous}" if previous else "previous = n=1, no compile cache"
        cache = str(Path(tmp) / "xla")
        print(f"demo throughput benchmark ({label}; {_load()})", flush=True)
        head = f"  {'cell':28} {'impl':12} {'steps':>6} {'compile s':>9} {'pure step ms':>12}"
        head += f" {'overhead ms':>11} {'efficiency':>10} {'CPU eff.':>8} {'val FLOPs':>9}"
        print(head + f" {'cell wall s':>11}")
        for i in picks:
            rows = [("previous", _cell(old_tree, "off", i, old_sets))]
            rows.append(("new (cold)", _cell(ROOT, cache, i, [])))
            rows.append(("new (warm)", _cell(ROOT, cache, i, [])))
            for impl, r in rows:
                print(
                    f"  {r['label']:28} {impl:12} {r['steps']:>6} {r['compile_s']:>9.2f} "
                    f"{r['pure_step_ms']:>12.2f} {r['overhead_ms']:>11.2f} "
                    f"{r['efficiency']:>10.2f} {r['cpu_efficiency']:>8.2f} "
                    f"{_pct(r.get('val_share')):>9} "
                    f"{r['cell_wall_s']:>11.1f}",
                    flush=True,
                )
        if not grid:
            return
        n = len(cells) if max_runs is None else min(max_runs, len(cells))
        print(f"demo grid, training phase ({n} runs, few-shot evals off), fresh processes:")
        old = _grid(old_tree, "off", [f"base.{x}" for x in old_sets], max_runs)
        print(f"  previous    {old['cpu_s']:8.1f} CPU-s {old['wall_s']:8.1f} wall s  ({_load()})")
        new = None
        if serial:
            new = _grid(ROOT, str(Path(tmp) / "xla-grid"), [], max_runs)
            print(
                f"  new (cold)  {new['cpu_s']:8.1f} CPU-s {new['wall_s']:8.1f} wall s  ({_load()})"
            )
            speed, wall = old["cpu_s"] / new["cpu_s"], old["wall_s"] / new["wall_s"]
            print(f"  speed-up    {speed:.2f}x in CPU-s, {wall:.2f}x in wall s")
        if workers > 1 and max_runs is None:  # --max-runs counts one launcher's runs
            par = _grid(ROOT, str(Path(tmp) / "xla-workers"), [], None, workers)
            vs = f", {new['wall_s'] / par['wall_s']:.2f}x one launcher" if new else ""
            print(
                f"  new, --workers {workers} {par['cpu_s']:8.1f} CPU-s {par['wall_s']:8.1f} wall s "
                f"({_load()}): {old['wall_s'] / par['wall_s']:.2f}x the previous in wall s, "
                f"{old['cpu_s'] / par['cpu_s']:.2f}x in CPU-s{vs}"
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sweeps.bench_demo", description=__doc__.split("\n")[0]
    )
    p.add_argument("--previous", metavar="REV", help="git revision to compare against")
    p.add_argument("--no-grid", action="store_true", help="skip the whole-grid timing")
    p.add_argument("--max-runs", type=int, default=None, help="time only N grid runs")
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="also time the grid with `sweep run --workers N` (default 2; 1 skips it)",
    )
    p.add_argument(
        "--no-serial",
        action="store_true",
        help="skip the current code's one-launcher grid run (time only --workers N against the "
        "previous implementation)",
    )
    args = p.parse_args(argv)
    run(
        args.previous,
        grid=not args.no_grid,
        max_runs=args.max_runs,
        workers=args.workers,
        serial=not args.no_serial,
    )
    return 0


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "cell":
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    print(json.dumps(cell_child(int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]))))
elif __name__ == "__main__":
    sys.exit(main())
