"""`scaling finetune DIR --task T --df 64,256 --method full --method lora:r=4`: fine-tuning
across scale, from the final checkpoint of every run of a sweep (or of one run directory).

Every (run, method, D_f) is one row of DIR/finetune/results.jsonl (schema in the README):
rows are appended atomically under a lock, and a row whose id (hash of run, task, method, D_f
and resolved settings) is already there is skipped, so an interrupted study resumes where it
stopped and a rerun with the same arguments trains nothing. The trained sub-state of each row
(the adapters, for LoRA) is checkpointed under DIR/finetune/rows/<row_id>/.

All input checks (task, methods, D_f, settings, runs and their checkpoints) happen before JAX
is imported; the engine (scaling.evals.finetune) is imported only when there is work to do.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from scaling import config as C
from scaling import results
from scaling.errors import UserError, check_interrupt
from scaling.fileio import read_json
from scaling.results import upgrade_result
from sweeps import registry as R

TABLE = "results.jsonl"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune every run of a sweep (full, LoRA, QLoRA) on a task"
    )
    p.add_argument("dir", metavar="RUN_OR_SWEEP_DIR", help="sweep directory or one run directory")
    p.add_argument("--task", required=True, help="task to fine-tune on (e.g. upper)")
    p.add_argument(
        "--df", required=True, metavar="N,N,...", help="fine-tuning set sizes D_f (examples)"
    )
    p.add_argument(
        "--method",
        dest="methods",
        action="append",
        default=[],
        metavar="SPEC",
        help="full | lora:r=4[,alpha=8][,targets=q+v] | qlora:r=4[,quant=int8] (required; "
        "repeatable)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="[METHOD.]KEY=VALUE",
        help="override a setting for all methods (lr=1e-3) or one (lora.lr=2e-2), repeatable",
    )
    p.add_argument("--runs", default="", metavar="ID,ID", help="only these run ids (sweeps)")
    p.add_argument(
        "--sizes",
        type=int,
        default=0,
        metavar="K",
        help="K model sizes, evenly spaced in the sorted list of sizes (smallest and largest "
        "included; not in log N), the longest-trained run of each",
    )
    p.add_argument("--out", default=None, help="output directory (default DIR/finetune)")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    p.set_defaults(handler=run_command)


# ----------------------------------------------------------------------------- inputs


def parse_df(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise UserError(f"--df {text!r}: expected positive integers, e.g. --df 64,256,1024") from e
    if not values or any(v <= 0 for v in values):
        raise UserError(f"--df {text!r}: expected positive integers, e.g. --df 64,256,1024")
    return sorted(set(values))


def check_scopes(overrides: list[str], kinds: set[str]) -> None:
    """A `--set METHOD.KEY=VALUE` for a method not given would be silently ignored: UserError."""
    for item in overrides:
        scope = item.partition("=")[0].strip().rpartition(".")[0]
        if scope and scope not in kinds:
            raise UserError(
                f"--set {item!r}: no --method {scope} is given, so it would change nothing; "
                f"drop it or add --method {scope}{':r=4' if scope != 'full' else ''}"
            )


def find_runs(root: Path) -> list[dict[str, Any]]:
    """[{run_id, dir, result}] of the finished runs of a sweep dir, or of one run dir."""
    if (root / R.RESULTS).is_file():
        out = []
        for rec in R.read_records(root):
            if rec.get("status") != "done":
                continue
            d = R.run_dir(root, rec["run_id"])
            res = results.read_result(d / "result.json", fix="using its results.jsonl row")
            out.append({"run_id": rec["run_id"], "dir": d, "result": res or rec})
        if not out:
            raise UserError(f"{root} has no finished runs to fine-tune; run the sweep first")
        return out
    if (root / "result.json").is_file():
        fix = (
            f"rerun the `scaling train` command of this run (same config, --out {root}): it "
            "resumes from the final checkpoint and rewrites it"
        )
        res = read_json(root / "result.json", fix=fix)  # damaged: UserError naming it
        if not results.is_result(res):
            raise UserError(f"{root / 'result.json'} is not a run's result; {fix}")
        res = upgrade_result(res)
        if res.get("status") != "done":
            raise UserError(
                f"run {root} did not finish (status {res.get('status')}); train it first"
            )
        return [{"run_id": res["run_id"], "dir": root, "result": res}]
    raise UserError(
        f"{root} is neither a sweep directory (results.jsonl) nor a run directory (result.json)"
    )


def _seed(result: dict) -> int:
    """A run's training seed: result.json keeps it in its config, a sweep record at the top."""
    return int(result.get("seed", result.get("config", {}).get("train", {}).get("seed", 0)))


def select_runs(runs: list[dict], ids: str, sizes: int) -> list[dict]:
    """Filter by --runs, then keep --sizes K sizes evenly spaced in the sorted list of sizes
    (indices round(i (S - 1) / (K - 1)) of the S sizes; not in log N), longest-trained each."""
    if ids:
        want = [x.strip() for x in ids.split(",") if x.strip()]
        known = {r["run_id"] for r in runs}
        missing = [x for x in want if x not in known]
        if missing:
            raise UserError(
                f"--runs: no finished run {missing[0]!r}; known: {', '.join(sorted(known))}"
            )
        runs = [r for r in runs if r["run_id"] in want]
    if sizes < 0:
        raise UserError(f"--sizes {sizes}: must be >= 1 (or 0 for every run)")
    if sizes:
        best: dict[int, dict] = {}  # longest-trained run of each size; ties: lowest seed, id
        order = lambda r: (-r["result"][results.D], _seed(r["result"]), r["run_id"])  # noqa: E731
        for r in sorted(runs, key=order):
            best.setdefault(int(r["result"][results.N_TOTAL]), r)
        ns = sorted(best)
        if sizes > len(ns):
            raise UserError(
                f"--sizes {sizes}: only {len(ns)} distinct model sizes; use <= {len(ns)}"
            )
        picks = sorted({round(i * (len(ns) - 1) / max(1, sizes - 1)) for i in range(sizes)})
        runs = [best[ns[i]] for i in picks]
    return sorted(runs, key=lambda r: (r["result"][results.N_TOTAL], r["run_id"]))


def check_checkpoint(run: dict) -> None:
    """UserError unless the run keeps the checkpoint of its final step (no JAX needed)."""
    d, step = Path(run["dir"]), run["result"].get("step")
    ck = d / "checkpoints"
    steps = sorted(int(p.name) for p in ck.iterdir() if p.name.isdigit()) if ck.is_dir() else []
    if not steps:
        raise UserError(
            f"run {run['run_id']} ({d}) has no checkpoint to fine-tune from; keep the "
            "checkpoints directory (or retrain the run)"
        )
    if step is not None and steps[-1] != step:
        raise UserError(
            f"run {run['run_id']}: newest checkpoint is step {steps[-1]} but the run ended at "
            f"step {step}; fine-tuning starts from the final weights only"
        )


def check_runs(runs: list[dict], task: str, methods: list, settings: dict, d_f: int) -> dict:
    """Each run's RunConfig by id, after every check that needs no JAX: the final checkpoint,
    the byte tokenizer, the test pool against eval_items, the context against the longest of
    the `d_f` fine-tuning examples, and the LoRA ranks against the model's projections."""
    from scaling.evals import tasks as T
    from scaling.evals.finetune_spec import longest_example, projection_dims, validate_spec

    longest = max(longest_example(task, d_f, s.seed) for s in settings.values())
    cfgs = {}
    for run in runs:
        check_checkpoint(run)
        cfg = cfgs[run["run_id"]] = C.load(Path(run["dir"]) / "config.toml")
        T.require_byte_tokenizer(cfg.data.tokenizer, f"scaling finetune run {run['run_id']}")
        check_eval_items(task, settings, cfg.eval.seed)
        if longest > cfg.model.seq_len + 1:  # was raised after the restore and the pre-score
            raise UserError(
                f"run {run['run_id']}: a fine-tuning example of task {task!r} takes {longest} "
                f"tokens, more than model.seq_len + 1 = {cfg.model.seq_len + 1}; fine-tune "
                "runs with a longer context, or a task with shorter examples"
            )
        for m in methods:
            if m.spec is not None:
                validate_spec(m.spec, cfg.model.mlp, projection_dims(cfg.model))
    return cfgs


def check_eval_items(task: str, settings: dict, seed: int) -> None:
    """UserError (before any compute) when the task's test pool holds fewer distinct items
    than the largest eval_items: it was raised by the first evaluation, after the restore."""
    from scaling.evals import tasks as T

    n = max(s.eval_items for s in settings.values())
    try:
        T.test_items(task, n, seed)
    except T.PoolTooSmall as e:
        raise UserError(
            f"--set eval_items={n}: task {task!r} yields only {e.found} distinct test items; use "
            f"eval_items={e.found} or fewer"
        ) from None


def row_id(run_id: str, task: str, method: str, d_f: int, settings: dict) -> str:
    blob = json.dumps([run_id, task, method, d_f, settings], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _hashed(method: Any, settings: dict, cfg: Any) -> dict:
    """The settings a row's id hashes: full fine-tuning of a muP run also hashes `mup_lr` (its
    hidden matrices now keep their 1/m lr), so rows trained before that are trained again."""
    from dataclasses import asdict

    out = asdict(settings[method.label])
    if method.kind == "full" and cfg.model.param == "mup":
        out["mup_lr"] = True
    return out


def read_rows(out: Path) -> list[dict[str, Any]]:
    return results.read_records(out / TABLE, required=("row_id",))


def append_row(out: Path, row: dict[str, Any]) -> None:
    """Append one row atomically (`scaling.results.append_record`); a duplicate id is dropped."""
    results.append_record(out / TABLE, row, key="row_id")


# ----------------------------------------------------------------------------- the command


def run_command(args: argparse.Namespace) -> int:
    from scaling.evals import tasks as T

    root = Path(args.dir)
    task = T.get_task(args.task)
    if not task.trainable:
        T.train_items(args.task, 1, 0)  # raises the one-line "no training pool" error
    d_fs = parse_df(args.df)
    if not args.methods:
        raise UserError("give at least one --method (full, lora:r=4, qlora:r=4)")
    from scaling.evals.finetune_spec import parse_method, resolve_settings

    methods = list({m.label: m for m in map(parse_method, args.methods)}.values())  # no repeats
    settings = {m.label: resolve_settings(m.kind, args.overrides) for m in methods}
    check_scopes(args.overrides, {m.kind for m in methods})
    try:  # the training pool holds max(--df) items, before any run is loaded
        T.train_items(args.task, max(d_fs), max(s.seed for s in settings.values()))
    except T.PoolTooSmall as e:
        raise UserError(
            f"--df {max(d_fs)}: task {args.task!r} yields only {e.found} distinct training "
            f"items; use --df values <= {e.found}"
        ) from e
    runs = select_runs(find_runs(root), args.runs, args.sizes)
    cfgs = check_runs(runs, args.task, methods, settings, max(d_fs))
    out = Path(args.out) if args.out else root / "finetune"
    done = {r["row_id"] for r in read_rows(out)}
    jobs = [
        (
            run,
            m,
            d_f,
            row_id(
                run["run_id"], args.task, m.label, d_f, _hashed(m, settings, cfgs[run["run_id"]])
            ),
        )
        for run in runs
        for m in methods
        for d_f in d_fs
    ]
    todo = [j for j in jobs if j[3] not in done]
    print(
        f"fine-tuning {len(runs)} run(s) x {len(methods)} method(s) x {len(d_fs)} D_f on "
        f"{args.task!r}: {len(jobs) - len(todo)} row(s) done, {len(todo)} to do -> {out / TABLE}",
        file=sys.stderr,
    )
    if todo:
        _train_rows(todo, cfgs, args.task, settings, out, progress=not args.no_progress)
    if out.resolve() == (root / "finetune").resolve():
        print(
            f"see {out / TABLE}; `scaling analyze {root}` adds the fine-tuning law", file=sys.stderr
        )
    else:  # analyze reads DIR/finetune only
        print(
            f"see {out / TABLE}; `scaling analyze {root}` reads {root / 'finetune'} only, "
            "so this table is not in its report (leave --out at its default to include it)",
            file=sys.stderr,
        )
    return 0


def _train_rows(todo, cfgs, task: str, settings, out: Path, *, progress: bool) -> None:
    from dataclasses import asdict

    from tqdm import tqdm

    from scaling.evals import finetune as F  # imports JAX
    from scaling.evals.finetune_spec import n_steps

    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(
        total=sum(n_steps(settings[m.label], d_f) for _, m, d_f, _ in todo),
        desc=f"finetune {task}",
        unit="step",
        disable=not progress or not sys.stderr.isatty(),
        dynamic_ncols=True,
    )
    done = 0
    try:
        by_run: dict[str, list] = {}
        for job in todo:
            by_run.setdefault(job[0]["run_id"], []).append(job)
        for run_id, jobs in by_run.items():
            run, cfg = jobs[0][0], cfgs[run_id]
            base = F.load_base(Path(run["dir"]), cfg)
            for batch in {settings[m.label].batch_size for _, m, _, _ in jobs}:
                F.check_batch(base.mesh, batch)  # before any row of this run trains
            pre: dict[int, dict] = {}  # the base's scores on the first n test items, per n
            for _, m, d_f, rid in jobs:
                check_interrupt()
                bar.set_postfix_str(f"N={run['result'][results.N_TOTAL]} {m.label} D_f={d_f}")
                s = settings[m.label]
                if s.eval_items not in pre:  # a method's eval_items may differ from another's
                    pre[s.eval_items] = F.evaluate(base.model(), cfg, task, s.eval_items, base.mesh)
                before, t0 = pre[s.eval_items], time.time()
                model, info = F.finetune(
                    base, task, m, d_f, s, out_dir=out / "rows" / rid, on_step=lambda: bar.update(1)
                )
                ev = F.evaluate(model, cfg, task, s.eval_items, base.mesh)
                row = _row(rid, run, task, m, d_f, s, info, ev, before, time.time() - t0, asdict(s))
                append_row(out, row)
                done += 1  # one line per row, as `scaling ablate` prints one per run: in a log
                bar.write(f"[{done}/{len(todo)}] {_line(row)}", file=sys.stderr)  # (no bar)
    finally:
        bar.close()


def _line(row: dict[str, Any]) -> str:
    """A finished row in one line: which run, method and D_f, and its scores before and after."""
    return (
        f"{row['run_id']} N={row['n_params']:.3g} {row['method']} D_f={row['d_f']}: eval loss "
        f"{row['eval_loss']:.4f} (before {row['pre_eval_loss']:.4f}), exact match "
        f"{row['exact_match']:.3f} (before {row['pre_exact_match']:.3f}), "
        f"{row['steps']} steps in {row['wall_time_s']:.1f} s"
    )


def _row(rid, run, task, m, d_f, s, info, ev, pre, wall, settings) -> dict[str, Any]:
    res = run["result"]
    return {
        "row_id": rid,
        "run_id": run["run_id"],
        "run_name": res.get("name"),
        "task": task,
        "method": m.label,
        "method_kind": m.kind,
        "rank": m.spec.rank if m.spec else None,
        "quant": m.spec.quant if m.spec else "none",
        # the base run's N_total, N_nonembed, D, C_6ND under the row's own names: analysis copies
        # the rows verbatim into fits.json ("finetune" -> groups -> rows), whose keys stay fixed
        "n_params": res[results.N_TOTAL],
        "n_params_nonembed": res.get(results.N_NONEMBED),
        "pretrain_tokens": res[results.D],
        "pretrain_flops": res.get(results.C_6ND),
        "pretrain_val_loss": res.get("final_val_loss"),
        "d_f": d_f,
        **{k: v for k, v in info.items() if k != "train_s"},
        **ev,
        "pre_eval_loss": pre["eval_loss"],
        "pre_exact_match": pre["exact_match"],
        "wall_time_s": wall,
        "settings": settings,
        "status": "done",
    }
