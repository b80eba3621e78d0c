"""Ablate one trained run: importance scores, pruning curves, removable fractions (issue 14).

`ablate_run(run_dir, spec)` restores the run's newest checkpoint (the final one for a finished
run), then:
1. scores every head and MLP block on the few-shot suite (`importance.mask_gradients`; the MLP
   order is the greedy oracle by default, `importance.greedy_ffn_order`; the head order is the
   gradient one, or with `head_order = "single"` each head's measured single-removal effect,
   `importance.single_head_order`) and the induction scores of every head
   (`importance.induction_scores`);
2. removes components in increasing importance (`removable.plan_steps`: heads, FFN blocks, and
   both, at each fraction) with masks, never weight surgery, and records per-item exact match,
   token accuracy and target log-probability for every task and shot count;
3. summarises each curve by the largest fraction removable within `tol` relative drop, with a
   CI from resampling the eval items (`removable.removable`).

Resumable: everything lands under RUN/ablation/<spec key>/ (importance.json, one file per
pruning step in steps/, result.json last), each written atomically; a rerun skips what exists.
A different spec gets a different key, so results of two specs never mix.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scaling.errors import UserError
from scaling.evals import removable as RM
from scaling.fileio import atomic_write, read_json
from scaling.results import C_6ND, N_NONEMBED, N_TOTAL, D, upgrade_result

SUMMARY_VERSION = 3  # 2: `both` credits (heads + FFN blocks removed) / (H + L), not the request;
# 3: a metric counts only above the larger of chance and the answer-prior rate (`_chance`)


@dataclass(frozen=True)
class AblateSpec:
    """What to ablate and how. Empty tasks/shots and n_items = 0 take the run's eval config."""

    tasks: tuple[str, ...] = ()
    shots: tuple[int, ...] = ()
    n_items: int = 0
    fractions: tuple[float, ...] = RM.DEFAULT_FRACTIONS
    kinds: tuple[str, ...] = RM.KINDS
    ffn_order: str = "greedy"  # greedy (oracle) | gradient
    head_order: str = "gradient"  # gradient | single (each head removed alone, measured)
    tol: float = 0.05
    level: float = 0.9
    resamples: int = 1000
    induction_seqs: int = 16
    seed: int = 0

    def check(self) -> AblateSpec:
        """UserError (one line, before any compute) for a bad value; returns the normalised spec."""
        from scaling.evals import tasks as T  # noqa: PLC0415

        for t in self.tasks:
            T.get_task(t)
        if any(k < 0 for k in self.shots):
            raise UserError(f"shots {list(self.shots)}: shot counts must be >= 0")
        if not self.kinds:  # `--kinds ,` computed importances, then pruned nothing
            raise UserError(
                f"no ablation kinds given; choose from {', '.join(RM.KINDS)}, e.g. "
                f"--kinds {','.join(RM.KINDS)}"
            )
        for kind in self.kinds:
            if kind not in RM.KINDS:
                raise UserError(
                    f"unknown ablation kind {kind!r}; choose from {', '.join(RM.KINDS)}"
                )
        if self.ffn_order not in ("greedy", "gradient"):
            raise UserError(f"ffn order {self.ffn_order!r}: choose greedy or gradient")
        if self.head_order not in ("gradient", "single"):
            raise UserError(f"head order {self.head_order!r}: choose gradient or single")
        if not 0 < self.tol < 1:
            raise UserError(f"tolerance {self.tol}: must be in (0, 1), e.g. 0.05 for 5%")
        if not 0 < self.level < 1:
            raise UserError(f"CI level {self.level}: must be in (0, 1), e.g. 0.9")
        for name, v, lo, fix in (
            ("--n-items", self.n_items, 0, "0 for the run's own eval items"),
            ("--resamples", self.resamples, 10, "the default 1000"),
            ("induction_seqs", self.induction_seqs, 1, "the default 16"),
        ):
            if v < lo:
                raise UserError(f"{name} {v}: must be >= {lo}; use e.g. {fix}")
        kinds = tuple(k for k in RM.KINDS if k in self.kinds)
        tasks, shots = tuple(dict.fromkeys(self.tasks)), tuple(dict.fromkeys(self.shots))  # once
        fr = RM.check_fractions(self.fractions)
        return AblateSpec(**{**asdict(self), "fractions": fr, "kinds": kinds, "tasks": tasks,
                             "shots": shots})  # fmt: skip

    def key(self) -> str:
        d = asdict(self)
        if d["head_order"] == "gradient":  # added later: the default keeps earlier tables' keys
            d.pop("head_order")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def check_run(run_dir: Path) -> None:
    """UserError unless `run_dir` holds a finished byte-tokenizer run with a checkpoint."""
    from scaling.evals.tasks import require_byte_tokenizer  # noqa: PLC0415

    res = run_dir / "result.json"
    fix = (  # a damaged one was a JSONDecodeError traceback
        f"rerun the `scaling train` command of this run (same config, --out {run_dir}): it "
        "resumes from the final checkpoint and rewrites it"
    )
    rec = read_json(res, fix=fix) if res.is_file() else None
    if not isinstance(rec, dict) or rec.get("status") != "done":
        raise UserError(f"run {run_dir} has not finished (no result.json with status done)")
    data_info = rec.get("data_info") or {}
    require_byte_tokenizer(data_info.get("tokenizer_path") or "", f"scaling ablate run {run_dir}")
    ckpt = run_dir / "checkpoints"
    if not ckpt.is_dir() or not any(d.name.isdigit() for d in ckpt.iterdir()):
        raise UserError(
            f"run {run_dir} has no checkpoint to ablate; retrain it (runs keep their final one)"
        )


def check_items(run_dir: Path, spec: AblateSpec) -> None:
    """UserError (no JAX, before any compute or table move) when a task's test pool holds fewer
    distinct items than the ablation scores (`--n-items`, or the run's eval.n_items)."""
    from scaling import config as C  # noqa: PLC0415
    from scaling.evals import tasks as T  # noqa: PLC0415

    cfg = C.load(run_dir / "config.toml")
    n = spec.n_items or cfg.eval.n_items
    for task in spec.tasks or tuple(cfg.eval.tasks) or tuple(T.TASKS):
        try:
            T.test_items(task, n, cfg.eval.seed)
        except T.PoolTooSmall as e:
            given = f"--n-items {n}" if spec.n_items else f"run {run_dir}: eval.n_items = {n}"
            raise UserError(
                f"{given}: task {task!r} yields only {e.found} distinct test items; use "
                f"--n-items {e.found} or fewer"
            ) from None


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, allow_nan=True, sort_keys=True) + "\n")


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # absent, or cut by a crash before the atomic rename (cannot happen)


def read_record(path: Path) -> dict[str, Any] | None:
    """An ablation result.json in today's names (one written before the record schema was
    unified says n_params_total, tokens, ...: `upgrade_result` renames them); None when absent."""
    rec = _read_json(path)
    return upgrade_result(rec) if isinstance(rec, dict) else None


def load_model(run_dir: Path):
    """(model, cfg, step): the run's newest readable checkpoint, restored on this host's
    devices (a data-parallel mesh over all of them; the run's own mesh may not exist here)."""
    import dataclasses  # noqa: PLC0415

    import jax  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415

    from scaling import config as C  # noqa: PLC0415
    from scaling import engine, sharding  # noqa: PLC0415
    from scaling.checkpoint import Checkpointer  # noqa: PLC0415

    cfg = C.load(run_dir / "config.toml")
    cfg = dataclasses.replace(cfg, mesh=C.MeshConfig())
    # the mesh is checked against a batch it splits: the pre-training batch (16 on 3 devices
    # was refused, naming train.batch_size) plays no part in scoring
    n = len(jax.devices())
    mesh = sharding.make_mesh(
        dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=n))
    )
    eng = engine.engine(cfg, mesh)
    ckpt = Checkpointer(run_dir / "checkpoints")
    try:
        restored = ckpt.restore_latest(eng.abstract_state)
    finally:
        ckpt.close()
    if restored is None:
        raise UserError(f"run {run_dir} has no readable checkpoint")
    state = restored.state
    return nnx.merge(eng.graphdef, state["params"], state["other"]), cfg, restored.step, mesh


def _groups(cfg, spec: AblateSpec):
    from scaling.evals import score as S  # noqa: PLC0415
    from scaling.evals import tasks as T  # noqa: PLC0415

    names = spec.tasks or tuple(cfg.eval.tasks) or tuple(T.TASKS)
    shots = spec.shots or tuple(cfg.eval.shots)
    n = spec.n_items or cfg.eval.n_items
    k_max = max(shots)
    seq = cfg.model.seq_len
    groups = [S.build_group(t, k, n, cfg.eval.seed, seq, k_max) for t in names for k in shots]
    return [g for g in groups if g.rows], _chance(cfg, spec)


def _chance(cfg, spec: AblateSpec) -> dict[str, dict[str, float]]:
    """Per task, the level a metric must beat to count: the larger of the nominal chance and
    the answer-prior rate (scaling.evals.prior, as `scaling emergence` takes it): add2's token
    accuracy of 0.33 is what knowing that a 3-digit sum starts with 1 scores, not 0.1."""
    from scaling.evals import prior as P  # noqa: PLC0415
    from scaling.evals import tasks as T  # noqa: PLC0415

    n, out = spec.n_items or cfg.eval.n_items, {}
    for t in spec.tasks or tuple(cfg.eval.tasks) or tuple(T.TASKS):
        items = T.test_items(t, n, cfg.eval.seed)  # the queries scored, without their demos
        nominal, prior = T.chance(t, items), P.majority(t, items)
        out[t] = {m: max(v, prior.get(m, 0.0)) for m, v in nominal.items()}
    return out


def truncation(groups) -> dict[str, dict[str, float]]:
    """{"task/K": {"n_items", "mean_shots"}} for K-shot groups whose prompts lost demos to fit
    model.seq_len (`scaling.evals.score.build_group`): those curves measure fewer shots."""
    return {
        f"{g.task}/{g.k}": {"n_items": g.truncated, "mean_shots": g.shots_used / len(g.rows)}
        for g in groups
        if g.k > 0 and g.truncated
    }


def ablate_run(
    run_dir: str | Path, spec: AblateSpec, *, progress: bool = False, stop_after: int | None = None
) -> dict[str, Any] | None:
    """Ablate one run (resuming what an earlier call left); the summary record, or None when
    `stop_after` (tests: simulate a kill) stopped it after that many new pruning steps."""
    import jax  # noqa: PLC0415
    from tqdm.auto import tqdm  # noqa: PLC0415

    from scaling.evals import score as S  # noqa: PLC0415

    run_dir = Path(run_dir)
    spec = spec.check()
    out = run_dir / "ablation" / spec.key()
    done = read_record(out / "result.json")
    if done is not None:
        redone = (
            done
            if done.get("summary_version") == SUMMARY_VERSION
            else _resummarize(run_dir, done, out)
        )
        if redone is not None:
            return redone
    check_run(run_dir)
    check_items(run_dir, spec)
    t0 = time.perf_counter()
    model, cfg, step, mesh = load_model(run_dir)
    groups, chance = _groups(cfg, spec)
    if not groups:
        raise UserError(f"run {run_dir}: no eval item fits model.seq_len = {cfg.model.seq_len}")
    L, N = cfg.model.n_layers, cfg.model.n_heads

    def score_fn(hm: np.ndarray, fm: np.ndarray) -> dict:
        with jax.set_mesh(mesh):
            return S.score_rows(model, groups, cfg.model.seq_len, masks=(hm, fm))

    _write_json(out / "spec.json", asdict(spec))
    imp = _read_json(out / "importance.json")
    if imp is None:
        from scaling.evals.importance import score_components  # noqa: PLC0415

        with jax.set_mesh(mesh):
            imp = score_components(model, cfg, groups, spec, score_fn, progress=progress,
                                   desc=f"importance {run_dir.name}")  # fmt: skip
        _write_json(out / "importance.json", imp)
    steps = RM.plan_steps(spec.fractions, L * N, L, spec.kinds)
    keys = [RM.mask_key(0, 0)] + sorted({s["key"] for s in steps} - {RM.mask_key(0, 0)})
    head_order, ffn_order = np.asarray(imp["head_order"]), np.asarray(imp["ffn_order"])
    new = 0
    for key in tqdm(keys, desc=f"ablate {run_dir.name}", disable=not progress):
        path = out / "steps" / f"{key}.json"
        if path.is_file():
            continue
        if stop_after is not None and new >= stop_after:
            return None
        nh, nf = (int(x[1:]) for x in key.split("-"))
        hm, fm = RM.masks_for(nh, nf, head_order, ffn_order, (L, N))
        res = score_fn(hm, fm)
        rec = {f"{t}/{k}": {m: np.asarray(v).astype(float).tolist() for m, v in
                            zip(("logprob", "token_acc", "exact_match"), arrs, strict=True)}
               for (t, k), arrs in res.items()}  # fmt: skip
        _write_json(path, {"n_heads": nh, "n_ffn": nf, "items": rec})
        new += 1
    record = summarize(run_dir, spec, (L, N), step, imp, steps, chance, out)
    record["truncated"] = truncation(groups)
    record["seconds"] = time.perf_counter() - t0
    _write_json(out / "result.json", record)
    return read_record(out / "result.json")  # as a rerun will read it (lists, not tuples)


def _all_metrics(by_metric: dict, level: float) -> dict:
    """Removable under every metric at once (of those with an eligible suite): the minimum of
    the per-metric fractions, draw by draw (the draws share their item resamples)."""
    used = [m for m in RM.METRICS if by_metric[m]["suite_draws"]]
    if not used:
        return {"suite": {"estimate": None, "lo": None, "hi": None, "eligible": False},
                "suite_draws": [], "metrics": []}  # fmt: skip
    draws = np.min([by_metric[m]["suite_draws"] for m in used], axis=0)
    q = (1 - level) / 2
    est = min(by_metric[m]["suite"]["estimate"] for m in used)
    return {"suite": {"estimate": est, "lo": float(np.quantile(draws, q)),
                      "hi": float(np.quantile(draws, 1 - q)), "eligible": True},
            "suite_draws": draws.tolist(), "metrics": used}  # fmt: skip


def _resummarize(run_dir: Path, done: dict[str, Any], out: Path) -> dict[str, Any] | None:
    """An older summary (`summary_version` below today's: e.g. `both` credited the requested
    fraction, not what was removed) recomputed from its recorded per-item scores, no model
    needed; None when a step file is missing (then the run is resumed as usual)."""
    spec = AblateSpec(**{k: tuple(v) if isinstance(v, list) else v
                         for k, v in done["spec"].items()}).check()  # fmt: skip
    L, N = int(done["n_layers"]), int(done["n_heads"])
    steps = RM.plan_steps(spec.fractions, L * N, L, spec.kinds)
    keys = {RM.mask_key(0, 0)} | {s["key"] for s in steps}
    imp = _read_json(out / "importance.json")
    if imp is None or not all((out / "steps" / f"{k}.json").is_file() for k in keys):
        return None
    from scaling import config as C  # noqa: PLC0415

    chance = _chance(C.load(run_dir / "config.toml"), spec)  # today's levels (version 3)
    record = summarize(run_dir, spec, (L, N), done["checkpoint_step"], imp, steps, chance, out)
    record["seconds"] = done.get("seconds")
    record["truncated"] = done.get("truncated", {})
    _write_json(out / "result.json", record)
    return read_record(out / "result.json")


def summarize(run_dir, spec, shape, step, imp, steps, chance, out: Path) -> dict[str, Any]:
    """Curves (means per step) and removable fractions from the recorded per-item scores;
    `shape` = (n_layers, n_heads)."""
    items = {key: _read_json(out / "steps" / f"{key}.json")["items"] for key in
             {RM.mask_key(0, 0)} | {s["key"] for s in steps}}  # fmt: skip
    base = items[RM.mask_key(0, 0)]
    curves: dict = {}
    summary: dict = {}
    for kind in spec.kinds:
        ks = sorted((s for s in steps if s["kind"] == kind), key=lambda s: s["fraction"])
        fr = np.array([0.0] + [s["actual"] for s in ks])
        curves[kind] = {"fraction": [0.0] + [s["fraction"] for s in ks], "actual": fr.tolist(),
                        "n_heads": [0] + [s["n_heads"] for s in ks],
                        "n_ffn": [0] + [s["n_ffn"] for s in ks], "groups": {}}  # fmt: skip
        summary[kind] = {}
        for metric in RM.METRICS:
            per_group = {
                g: np.array([base[g][metric]] + [items[s["key"]][g][metric] for s in ks])
                for g in base
            }
            for g, arr in per_group.items():
                curves[kind]["groups"].setdefault(g, {})[metric] = arr.mean(axis=1).tolist()
            ch = {g: None if metric == "logprob" else chance[g.split("/")[0]][metric]
                  for g in per_group}  # fmt: skip
            summary[kind][metric] = RM.removable(
                per_group, fr, ch, tol=spec.tol, resamples=spec.resamples, level=spec.level,
                seed=spec.seed,
            )  # fmt: skip
        summary[kind]["all"] = _all_metrics(summary[kind], spec.level)
    res = upgrade_result(_read_json(run_dir / "result.json") or {})  # old names read too
    return {
        "run_id": res.get("run_id", run_dir.name),
        "name": res.get("name"),
        "run_dir": str(run_dir),
        "checkpoint_step": step,
        "final_step": res.get("step"),
        N_TOTAL: res.get(N_TOTAL),
        N_NONEMBED: res.get(N_NONEMBED),
        D: res.get(D),
        C_6ND: res.get(C_6ND),
        "final_val_loss": res.get("final_val_loss"),
        "n_layers": shape[0],
        "n_heads": shape[1],
        "summary_version": SUMMARY_VERSION,
        "spec": asdict(spec),
        "spec_key": spec.key(),
        "chance": chance,
        "importance": imp,
        "curves": curves,
        "removable": summary,
    }
