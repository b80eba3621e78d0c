"""`scaling sweep plan|run|status`: thin argparse layer over sweeps.grid / runner / slurm / status.

Nothing here imports JAX; `scaling.train` is imported only when a run actually starts.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="plan, launch and track grids of runs")
    ss = p.add_subparsers(dest="sweep_command", required=True)

    def grid_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("grid", help="grid TOML path or built-in name (demo, cpu-small, ...)")
        q.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="[TABLE.]KEY=VALUE",
            help="override a grid value (TOML), e.g. --set seeds=[0,1] --set hparams.lr=0.003 "
            "(repeatable)",
        )

    q = ss.add_parser("plan", help="print the resolved runs, FLOPs and estimated time")
    grid_args(q)
    q.add_argument("--json", action="store_true", help="print the plan as JSON instead")
    q.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="estimate the wall time of `sweep run --workers N` (default 1)",
    )
    q.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="the sweep directory of `sweep run --out DIR`: calibrate the time estimate on its "
        "finished runs (measured on this machine) and say what is left to train; without it "
        "the estimate is the built-in model of another machine, and says so",
    )
    q.set_defaults(handler=_plan)

    _run_parser(ss, grid_args)

    q = ss.add_parser("status", help="done/running/failed/diverged/pending and FLOPs spent")
    q.add_argument("dir", metavar="DIR")
    q.add_argument(
        "--json",
        action="store_true",
        help="print the counts (every state, 0 included) and the rows as JSON numbers: steps, "
        "progress 0..1, losses, eta_s seconds, FLOPs (null: not known)",
    )
    q.set_defaults(handler=_status)


def _run_parser(ss, grid_args) -> None:
    q = ss.add_parser("run", help="launch (or resume) a grid into DIR")
    grid_args(q)
    q.add_argument("--out", required=True, metavar="DIR", help="sweep directory")
    q.add_argument("--backend", choices=("local", "slurm"), default="local")
    q.add_argument(
        "--lease-ttl",
        type=float,
        default=None,
        help="seconds a lease lives without heartbeat (default 120 local, 300 slurm)",
    )
    q.add_argument(
        "--no-wait",
        action="store_true",
        help="local: do not wait for cells leased by other launchers; "
        "slurm: return right after submitting (the default)",
    )
    q.add_argument("--wait", action="store_true", help="slurm: wait for every task to finish")
    q.add_argument("--max-runs", type=int, default=None, help="local: stop after N trainings")
    q.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="local: train N cells at once, in N launcher processes sharing DIR (default 1; "
        "on a CPU with tiny cells, e.g. the demo, 2 per 2 cores; on one GPU keep 1)",
    )
    # one of --workers' extra launchers; T = the first launcher's start (time.time())
    q.add_argument("--worker-since", type=float, default=None, help=argparse.SUPPRESS)
    # ... and how many launchers that call runs in all (recorded with each run it trains)
    q.add_argument("--launchers", type=int, default=1, help=argparse.SUPPRESS)
    q.add_argument(
        "--replan",
        action="store_true",
        help="replace a different plan.json in DIR (results are kept)",
    )
    q.add_argument("--no-progress", action="store_true", help="disable progress bars")
    g = q.add_argument_group("slurm backend (submitit)")
    g.add_argument(
        "--cluster",
        default="slurm",
        help="submitit cluster: slurm (default), local (CI: no cluster), debug",
    )
    g.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's)")
    g.add_argument("--nodes", type=int, default=1, help="nodes per run")
    g.add_argument("--gpus-per-node", type=int, default=None, help="GPUs per node (default none)")
    g.add_argument("--tasks-per-node", type=int, default=1, help="processes per node")
    g.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per process")
    g.add_argument("--mem-gb", type=float, default=None, help="memory per node in GiB")
    g.add_argument("--timeout-min", type=int, default=240, help="wall-time limit per run")
    g.add_argument("--array-parallelism", type=int, default=64, help="array tasks running at once")
    g.add_argument(
        "--slurm-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra sbatch option, e.g. --slurm-arg account=myproj (repeatable)",
    )
    q.add_argument("--train-fn", default=None, help=argparse.SUPPRESS)  # tests: module:attr
    q.set_defaults(handler=_run)


def _load(args: argparse.Namespace):
    from sweeps.grid import load_grid, plan_grid

    return plan_grid(load_grid(args.grid, args.overrides))


def _plan(args: argparse.Namespace) -> int:
    from scaling.results import clean_json
    from sweeps.estimate import detect_device
    from sweeps.report import plan_table
    from sweeps.workers import check_workers

    check_workers(args.workers, "local", None)
    if args.json and args.workers != 1:
        from scaling.errors import UserError

        raise UserError(
            f"--workers {args.workers} sets the printed time estimate, and --json prints no "
            f"estimate; drop one of them"
        )
    finished = None
    if args.out is not None:
        from pathlib import Path

        from scaling.errors import UserError
        from sweeps.registry import read_records

        if args.json:
            raise UserError(
                f"--out {args.out} calibrates the printed time estimate, and --json prints no "
                f"estimate; drop one of them"
            )
        if not Path(args.out).is_dir():
            raise UserError(
                f"--out {args.out}: no such sweep directory; pass the DIR of `scaling sweep run "
                f"GRID --out DIR` (its finished runs calibrate the estimate), or drop --out"
            )
        finished = (args.out, read_records(Path(args.out)))
    plan = _load(args)
    if args.json:
        cells = [c.summary() for c in plan.cells]
        print(json.dumps(clean_json(dict(sweep=plan.name, kind=plan.kind, cells=cells)), indent=1))
    else:
        print(plan_table(plan, detect_device(), args.workers, finished))
    return 0


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sweeps import registry as R
    from sweeps.lease import MIN_TTL_S, check_ttl

    if args.lease_ttl is not None:
        check_ttl(args.lease_ttl, MIN_TTL_S)
    if args.max_runs is not None and args.max_runs < 0:
        from scaling.errors import UserError

        raise UserError(f"--max-runs {args.max_runs}: must be >= 0 (the number of runs to train)")
    if args.max_runs is not None and args.backend != "local":
        from scaling.errors import UserError

        raise UserError(
            f"--max-runs {args.max_runs} is for --backend local; --backend slurm submits every "
            f"unfinished cell (--array-parallelism limits how many run at once)"
        )
    from sweeps.workers import check_workers

    check_workers(args.workers, args.backend, args.max_runs)
    if args.backend == "local":  # first: a SLURM option here is a forgotten --backend slurm
        _no_slurm_options(args)
    params = _slurm_params(args)  # validated for every backend: a typo fails before work
    if args.backend != "local" and args.wait and args.no_wait:
        from scaling.errors import UserError

        raise UserError("--wait and --no-wait contradict each other; pass one of them")
    plan = _load(args)
    root = Path(args.out)
    if root.exists() and not root.is_dir():
        from scaling.errors import UserError

        raise UserError(f"--out {root} is a file, not a directory; pass a directory path")
    from scaling.fileio import check_writable_dir

    check_writable_dir(root)  # before any training: results must be savable there
    R.write_plan(root, plan, replan=args.replan)
    progress = not args.no_progress
    if args.backend == "local":
        return _run_local(args, root, plan, progress)
    from sweeps.slurm import submit

    out = submit(
        root,
        plan,
        cluster=args.cluster,
        train_fn=args.train_fn,
        lease_ttl=args.lease_ttl or 300.0,
        wait=args.wait,
        parameters=params,
    )
    print(f"submitted {out['submitted']} task(s): {' '.join(out['job_ids'])}", file=sys.stderr)
    if args.wait:
        outcomes = out["outcomes"]
        for run_id, label, job_id in out.get("cells", []):  # one line per cell, never a dict
            print(f"  {label:<28} {run_id}  job {job_id:<10} {outcomes.get(run_id, '?')}")
        bad = [k for k, v in outcomes.items() if v not in ("done", "diverged", "skipped")]
        if bad:
            print(
                f"{len(bad)} of {len(outcomes)} cell(s) did not finish; rerun the same command to "
                f"resume them, `scaling sweep status {root}` for details",
                file=sys.stderr,
            )
        return 1 if bad else 0
    print(f"track with `scaling sweep status {root}`", file=sys.stderr)
    return 0


def _run_local(args: argparse.Namespace, root, plan, progress: bool) -> int:
    """The local backend: this launcher (and its --workers) trains the cells in turn."""
    from scaling import distributed
    from sweeps.runner import run_local

    setup = distributed.resolve()
    if setup.multi:
        from scaling.errors import UserError

        raise UserError(
            f"--backend local trains each cell in one process, but this is one of "
            f"{setup.num_processes} processes ({setup.source}); run the sweep once, with "
            f"--backend slurm --tasks-per-node N for multi-process cells, or train one "
            f"config with `scaling launch -n N -- scaling train ...`"
        )

    lease_ttl = args.lease_ttl or 120.0

    def launcher(failed_since: float | None, launchers: int) -> dict[str, int]:
        """This launcher's pass over the cells; one failed by another launcher since
        `failed_since` is not retried; `launchers` train on this machine in all."""
        return run_local(
            root,
            plan,
            train_fn=args.train_fn,
            lease_ttl=lease_ttl,
            wait=not args.no_wait,
            progress=progress,
            max_runs=args.max_runs,
            failed_since=failed_since,
            launchers=launchers,
        )

    if args.workers > 1:
        return _run_workers(args, root, plan, lease_ttl, launcher)
    counts = launcher(args.worker_since, max(1, args.launchers))
    if args.worker_since is not None:  # one of --workers: the first launcher sums up
        return 1 if counts.get("failed") else 0
    return _summary(plan, root, counts)


def _summary(plan, root, counts: dict[str, int]) -> int:
    """One line of what this call did, one of the cells it left (--max-runs, failed, held by
    another launcher with --no-wait), and the status command; exit 1 when a run failed."""
    from sweeps.registry import finished_ids

    left = len({c.run_id for c in plan.cells} - finished_ids(root))
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    idle = "nothing trained" if left else "nothing to do"
    print(f"sweep {plan.name!r} in {root}: {summary or idle}", file=sys.stderr)
    if left:
        print(
            f"{left} of {len(plan.cells)} cell(s) not finished yet; rerun the same command to "
            f"train them",
            file=sys.stderr,
        )
    print(f"see `scaling sweep status {root}`", file=sys.stderr)
    return 1 if counts.get("failed") else 0


def _run_workers(args: argparse.Namespace, root, plan, lease_ttl: float, launcher) -> int:
    """`--workers N`: this launcher (`launcher(failed_since, N)`) and N-1 more on the same
    directory (sweeps.workers), at most one launcher per unfinished cell."""
    import signal
    import time

    from scaling import signals
    from sweeps import registry as R
    from sweeps import workers as W

    t0 = time.time()
    left = {c.run_id for c in plan.cells} - R.finished_ids(root)
    n = max(1, min(args.workers, len(left)))  # at most one launcher per cell
    argv = W.worker_argv(args.grid, root, args.overrides, lease_ttl, args.train_fn, t0, n)
    procs = W.start(n - 1, argv)
    try:
        launcher(t0, n)
    except BaseException as e:  # a signal is passed on; bad input or a full disk: SIGTERM
        W.stop(procs, e.signum if isinstance(e, signals.Interrupted) else signal.SIGTERM)
        W.wait(procs)  # each saves a checkpoint and releases its lease
        raise
    codes = W.wait(procs)
    for i, c in ((i, c) for i, c in enumerate(codes, 2) if c < 0):  # e.g. the OOM killer's
        why = f"signal {-c} ({signal.strsignal(-c)})"
        print(f"warning: launcher {i} of {n} was killed by {why}; the cell it held was taken "
              "over or is left for a rerun", file=sys.stderr)  # fmt: skip
    counts = W.outcome(root, [c.run_id for c in plan.cells], t0)
    code = _summary(plan, root, counts)
    return 2 if 2 in codes else code


# the SLURM-only options and their defaults: one given with --backend local is a forgotten
# `--backend slurm` (the sweep would train here, e.g. on a login node), not a no-op
SLURM_ONLY = dict(
    cluster="slurm",
    partition=None,
    nodes=1,
    gpus_per_node=None,
    tasks_per_node=1,
    cpus_per_task=None,
    mem_gb=None,
    timeout_min=240,
    array_parallelism=64,
    slurm_arg=[],
    wait=False,
)


def _no_slurm_options(args: argparse.Namespace) -> None:
    from scaling.errors import UserError

    for key, default in SLURM_ONLY.items():
        if getattr(args, key) != default:
            flag = "--" + key.replace("_", "-")
            raise UserError(
                f"{flag} is an option of --backend slurm, but this sweep runs with --backend "
                f"local (the default); add --backend slurm, or drop {flag}"
            )


def _slurm_params(args: argparse.Namespace) -> dict:
    from scaling.config import parse_value
    from scaling.errors import UserError
    from sweeps.slurm_args import check_slurm_numbers

    check_slurm_numbers(args)
    params: dict = dict(
        nodes=args.nodes,
        tasks_per_node=args.tasks_per_node,
        timeout_min=args.timeout_min,
        slurm_array_parallelism=args.array_parallelism,
    )
    for key, value in (
        ("slurm_partition", args.partition),
        ("gpus_per_node", args.gpus_per_node),
        ("cpus_per_task", args.cpus_per_task),
        ("mem_gb", args.mem_gb),
    ):
        if value is not None:
            params[key] = value
    extra = {}
    for item in args.slurm_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--slurm-arg {item!r}: expected KEY=VALUE, e.g. account=myproj")
        extra[key] = parse_value(value)
    if extra:
        params["slurm_additional_parameters"] = extra
    return params


def _status(args: argparse.Namespace) -> int:
    from sweeps.status import as_json, collect, format_status

    info = collect(args.dir)
    print(json.dumps(as_json(info), indent=1) if args.json else format_status(info))
    return 0
