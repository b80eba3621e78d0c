"""Train (or resume) one run: sharded state, jitted step, validation, checkpoints, result.json.

`train(cfg, out_dir)` is a pure function of the resolved config: the batch of step k is
`data.batch(k, batch_size, seed)`, params are initialised from `seed`, and no other randomness
is used, so a run killed and resumed from a checkpoint ends bitwise equal (on CPU) to an
uninterrupted one. The checkpoint holds params, optimizer state (Adam moments and count) and the
step counter; the learning rate is recomputed from the step (`scaling.optim.lr_at`).

Compiled functions live in a module-level cache keyed by (model config, batch shape, mesh,
static optimizer settings); the learning rate is a traced input, so the many cells of a sweep
with the same shapes compile once per process. The host dispatches step k+1 before it fetches
step k's loss (JAX async dispatch keeps the device busy while the host logs).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from scaling import config as config_lib
from scaling import engine, optim, sharding, signals, tracking
from scaling import flops as flops_lib
from scaling.checkpoint import Checkpointer
from scaling.config import RunConfig
from scaling.errors import UserError
from scaling.fileio import atomic_write, read_json, split_jsonl, warn, writing
from scaling.model import compute_dtype

log = logging.getLogger(__name__)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to a temp file in the same directory, then os.replace (atomic)."""
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, tuple | set):
        return list(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


class _MetricsLog:
    """metrics.jsonl writer (process 0 only). On resume, lines past the resumed step are
    dropped (they were written after the checkpoint by the interrupted session)."""

    def __init__(
        self,
        path: Path,
        resume_step: int,
        enabled: bool,
        on_write: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.path, self.enabled, self.on_write = path, enabled, on_write
        if not enabled:
            return
        kept: list[dict[str, Any]] = []
        if resume_step > 0 and path.is_file():  # lines cut by a kill are dropped
            records, _ = split_jsonl(path.read_bytes())
            kept = [r for r in records if _step_of(r) <= resume_step]
        atomic_write(path, "".join(json.dumps(r, default=_json_default) + "\n" for r in kept))
        with writing(path):
            self._fh = path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with writing(self.path):
                self._fh.write(json.dumps(record, default=_json_default) + "\n")
                self._fh.flush()
            if self.on_write is not None:
                self.on_write(record)

    def close(self) -> None:
        if self.enabled and not self._fh.closed:
            try:
                self._fh.close()
            except OSError:  # the flush of a full disk: DiskFullError was raised already
                pass


def _step_of(record: dict[str, Any]) -> float:
    step = record.get("step", 0)
    return step if isinstance(step, int | float) else math.inf


def _interval(every: int, steps: int, parts: int) -> int:
    """`every`, or about `parts` evenly spaced events per run when 0."""
    return every if every > 0 else max(1, math.ceil(steps / parts))


# ----------------------------------------------------------------------------- the run


def _check_out_dir(out: Path, run_id: str) -> dict[str, Any] | None:
    """UserError if `out` holds a different run; the stored result if this run already ended."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory; pass a directory path")
    cfg_path = out / "config.toml"
    if cfg_path.exists():
        try:
            other = config_lib.config_hash(config_lib.load(cfg_path))
        except UserError as e:
            if out.name != run_id and not out.name.endswith(f"-{run_id}"):
                raise UserError(
                    f"{cfg_path} is damaged ({e}); if {out} holds this run, delete that file "
                    f"and rerun to resume (it is rewritten), else pass another --out"
                ) from None
            warn(f"{cfg_path} is damaged; the directory is named for this run, rewriting it")
            other = run_id
        if other != run_id:
            raise UserError(
                f"{out} already holds a different run (config hash {other}, this run is "
                f"{run_id}); pass another --out directory or delete that one"
            )
    res_path = out / "result.json"
    if res_path.is_file():
        fix = "ignoring it: the run resumes from its newest checkpoint and rewrites it"
        result = read_json(res_path, fix=fix, default=None)
        if (
            isinstance(result, dict)
            and result.get("run_id") == run_id
            and result.get("status") in ("done", "diverged")
        ):
            return result
    return None


def train(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    stop_after: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    tb_dir: str | Path | None = None,
    restart: bool = False,
    from_step: int | None = None,
) -> dict[str, Any]:
    """Train `cfg` into `out_dir`, resuming from its newest readable checkpoint; return result.

    `stop_after=k` (for tests) simulates a kill: the session stops after update k without a
    final checkpoint or result.json and returns {"status": "stopped", "step": k}. `should_stop`
    is polled before every update and stops the session the same way (the sweep launcher passes
    "my lease on this run was taken over"). TensorBoard events go to `tb_dir` (default
    `out_dir/tensorboard`; a sweep passes one shared directory), see `scaling.tracking`.
    `restart` / `from_step` are the explicit ways past unreadable checkpoints
    (`scaling.checkpoint`). SIGINT/SIGTERM (`scaling.signals`) finish the step in flight, save a
    checkpoint at it and raise `signals.Interrupted`.
    """
    t_start = time.time()
    sharding.maybe_initialize_distributed()
    out = Path(out_dir)
    is_main = jax.process_index() == 0
    run_id = config_lib.config_hash(cfg)
    mesh = sharding.make_mesh(cfg)  # UserError: mesh vs devices, batch vs data parallel
    from scaling.data import open_dataset, val_bpb  # noqa: PLC0415 - heavy (TFDS)

    data = open_dataset(cfg.data, cfg.model.seq_len, progress=progress)  # UserError: dataset
    _check_vocab(cfg, data.info.get("vocab_size"))
    _check_eval_tasks(cfg)
    tracking.requested_backends()  # UserError for an unknown $SCALING_TRACK name, before compute
    done = _check_out_dir(out, run_id)
    if done is not None:
        log.info("run %s in %s already finished (%s)", run_id, out, done["status"])
        return done
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.toml", config_lib.to_toml(cfg))

    t, m, info = cfg.train, cfg.model, data.info
    eng = engine.engine(cfg, mesh)
    ckpt = Checkpointer(out / "checkpoints", keep=t.keep_checkpoints)
    try:
        restored = ckpt.restore_latest(eng.abstract_state, restart=restart, from_step=from_step)
    except BaseException:
        ckpt.close()
        raise
    if restored is not None:
        state, start, meta = restored.state, restored.step, restored.meta
        if int(jax.device_get(state["step"])) != start:
            raise UserError(f"checkpoint step {start} holds state of step {state['step']}")
    else:
        with jax.set_mesh(mesh):
            state = eng.init(jax.random.key(t.seed))
        start, meta = 0, {}
    warnings = list(meta.get("warnings", [])) + (restored.warnings if restored else [])
    tracker = tracking.Tracker(
        Path(tb_dir) if tb_dir else out / "tensorboard",
        run_name=cfg.name,
        run_id=run_id,
        config=cfg.to_dict(),
        resume_step=start,
        enabled=is_main,
    )
    metrics = _MetricsLog(out / "metrics.jsonl", start, is_main, on_write=tracker.log)
    few_shot_every = cfg.eval.every if cfg.eval.enabled else 0
    evals_log = _MetricsLog(
        out / "evals.jsonl", start, is_main and few_shot_every > 0, on_write=tracker.log
    )

    fpt = flops_lib.flops_per_token(m)
    tokens_per_step = t.batch_size * m.seq_len
    dtype = jnp.dtype(compute_dtype(m)).name
    device_kind, n_dev = jax.devices()[0].device_kind, jax.device_count()
    eval_every = _interval(t.eval_every, t.steps, 10)
    ckpt_every = _interval(t.checkpoint_every, t.steps, 5)
    val = [
        engine.put(engine.pad_rows(b, t.batch_size), eng.batch_sharding)
        for b in data.val_batches(t.batch_size)
    ]
    best_val = meta.get("best_val_loss")
    val_loss: float | None = meta.get("last_val_loss")
    status, diverged_at, stopped, interrupted = "done", None, False, None
    saved_step = start
    bar = tqdm(
        total=t.steps,
        initial=start,
        desc=cfg.name,
        disable=not progress or not sys.stderr.isatty() or not is_main,
        dynamic_ncols=True,
    )
    # timing: steady-state throughput excludes this session's first step (compile) and evals
    excluded, t_first, step_first = 0.0, None, start
    window_losses: list[float] = []
    t_window, tok_window = time.time(), 0
    pending: tuple[int, float, dict[str, Any]] | None = None  # (step, lr, device metrics)
    pending_warnings = list(restored.warnings) if restored else []

    held: list[dict[str, Any]] = []  # a log record waiting for its step's val_loss

    def finish(item: tuple[int, float, dict[str, Any]], hold: bool = False) -> bool:
        """Fetch one step's metrics and log them (or hold the record for a val_loss to be
        added); False when the loss is not finite."""
        nonlocal t_first, step_first, t_window, tok_window, pending_warnings
        step, lr, dev = item
        host = jax.device_get(dev)
        loss = float(host["loss"])
        bar.update(1)
        if t_first is None:
            t_first, step_first = time.time(), step
            t_window, tok_window = t_first, 0
        else:
            tok_window += tokens_per_step
        if not math.isfinite(loss):
            return False
        window_losses.append(loss)
        if step % t.log_every == 0 or step == t.steps or hold or step % ckpt_every == 0:
            now = time.time()
            tps = tok_window / (now - t_window) if tok_window and now > t_window else None
            rec = {
                "step": step,
                "tokens": step * tokens_per_step,
                "flops": step * tokens_per_step * fpt,
                "train_loss": sum(window_losses) / len(window_losses),
                "lr": lr,
                "grad_norm": float(host["grad_norm"]),
                "tokens_per_s": tps,
                "mfu": flops_lib.mfu(tps * fpt, device_kind, dtype, n_dev) if tps else None,
                "elapsed_s": now - t_start,
            }
            if pending_warnings:
                rec["warnings"], pending_warnings = pending_warnings, []
            window_losses.clear()
            held.append(rec) if hold else metrics.write(rec)
            bar.set_postfix(loss=f"{rec['train_loss']:.3f}", tok_s=f"{tps or 0:.0f}")
            t_window, tok_window = now, 0
        return True

    def save(step: int) -> None:
        nonlocal saved_step
        ckpt_meta = {
            "run_id": run_id,
            "best_val_loss": best_val,
            "last_val_loss": val_loss,
            "warnings": warnings,
            "wall_time_s": meta.get("wall_time_s", 0.0) + time.time() - t_start,
        }
        ckpt.save(step, state, ckpt_meta)
        saved_step = step

    try:
        with jax.set_mesh(mesh), signals.graceful():
            for s in range(start, t.steps):
                if (interrupted := signals.requested()) is not None:
                    break
                if (stop_after is not None and s >= stop_after) or (should_stop and should_stop()):
                    stopped = True
                    break
                lr = optim.lr_at(t, s)
                batch = engine.put(data.batch(s, t.batch_size, t.seed), eng.batch_sharding)
                state, dev = eng.step(state, batch, np.float32(lr))
                prev, pending = pending, (s + 1, lr, dev)
                if prev is not None and not finish(prev):
                    status, diverged_at = "diverged", prev[0]
                    break
                step = s + 1
                do_eval = step % eval_every == 0 or step == t.steps
                do_ckpt = step % ckpt_every == 0 or step == t.steps
                do_few_shot = few_shot_every > 0 and step % few_shot_every == 0 and step < t.steps
                if do_eval or do_ckpt or do_few_shot:
                    item, pending = pending, None
                    if not finish(item, hold=do_eval):
                        status, diverged_at = "diverged", step
                        break
                    t0 = time.time()
                    if do_eval:
                        val_loss = engine.val_loss(eng, state, val)
                        best_val = val_loss if best_val is None else min(best_val, val_loss)
                        rec = dict(held.pop(), val_loss=val_loss, val_bpb=val_bpb(val_loss, info))
                        metrics.write(rec)
                        bar.set_postfix(loss=f"{rec['train_loss']:.3f}", val=f"{val_loss:.3f}")
                    if do_few_shot:  # periodic few-shot evals -> evals.jsonl
                        model = nnx.merge(eng.graphdef, state["params"], state["other"])
                        scores = _run_evals(model, cfg, mesh)
                        evals_log.write(
                            {"step": step, "tokens": step * tokens_per_step, "evals": scores}
                        )
                    if do_ckpt:
                        save(step)
                    excluded += time.time() - t0
                    t_window += time.time() - t0
            if pending is not None and status == "done":
                if not finish(pending):
                    status, diverged_at = "diverged", pending[0]
            if interrupted is not None and status == "done":
                step = int(jax.device_get(state["step"]))
                if step != saved_step:
                    save(step)  # the resume continues from here, not the last periodic save
                ckpt.wait()
                where = f"checkpoint saved at step {step} in {out}"
                raise signals.Interrupted(interrupted, where)
    finally:
        bar.close()
        metrics.close()
        evals_log.close()
        tracker.flush()
        ckpt.close()  # waits for pending saves, then stops Orbax's threads
    final_step = int(jax.device_get(state["step"])) if status == "done" else diverged_at
    if stopped:
        tracker.close()
        return {"status": "stopped", "step": final_step, "run_id": run_id}
    t_end = time.time()
    steady_steps = (final_step or 0) - step_first
    steady_time = (t_end - t_first - excluded) if t_first else 0.0
    tps = (
        steady_steps * tokens_per_step / steady_time
        if steady_steps > 0 and steady_time > 0
        else None
    )

    evals = None
    if cfg.eval.enabled and status == "done":
        evals = _run_evals(nnx.merge(eng.graphdef, state["params"], state["other"]), cfg, mesh)
    tracker.log_evals(final_step or 0, evals)
    tracker.close()

    counts = flops_lib.param_counts(m)
    tokens = (final_step or 0) * tokens_per_step
    result = {
        "run_id": run_id,
        "name": cfg.name,
        "status": status,
        "step": final_step,
        "diverged_at_step": diverged_at,
        "final_val_loss": val_loss if status == "done" else None,
        "best_val_loss": best_val,
        "final_val_bpb": val_bpb(val_loss, info) if status == "done" else None,
        "best_val_bpb": val_bpb(best_val, info),
        "n_params_total": counts.total,
        "n_params_embed": counts.embedding,
        "n_params_nonembed": counts.nonembedding,
        "tokens": tokens,
        "flops_per_token": fpt,
        "flops_exact": fpt * tokens,
        "flops_6nd_total": flops_lib.flops_6nd(counts.total, tokens),
        "flops_6nd_nonembed": flops_lib.flops_6nd(counts.nonembedding, tokens),
        "wall_time_s": meta.get("wall_time_s", 0.0) + t_end - t_start,
        "tokens_per_s": tps,
        "mfu": flops_lib.mfu(tps * fpt, device_kind, dtype, n_dev) if tps else None,
        "device_kind": device_kind,
        "n_devices": n_dev,
        "compute_dtype": dtype,
        "mesh": dict(mesh.shape),
        "warmup_steps": optim.warmup_steps(t),
        "resumed_from_step": start or None,
        "checkpoint_warnings": warnings,
        "data_info": getattr(data, "info", None),
        "evals": evals,
        "metrics_path": str(out / "metrics.jsonl"),
        "config": cfg.to_dict(),
    }
    if is_main:
        write_json_atomic(out / "result.json", result)
    return result


def _check_vocab(cfg: RunConfig, tok_vocab: int | None = None) -> None:
    """UserError, before any compute, for a vocab the tokenizer overflows (its ids would
    index past the embedding and the loss turns NaN at step 1)."""
    from scaling.data.tokenizer import VOCAB_SIZE  # noqa: PLC0415

    need = tok_vocab or VOCAB_SIZE
    if cfg.model.vocab_size < need:
        which = "byte tokenizer's" if not cfg.data.tokenizer else "SentencePiece model's"
        raise UserError(
            f"model.vocab_size = {cfg.model.vocab_size} is smaller than the {which} "
            f"{need} ids; set model.vocab_size >= {need}"
        )


def _check_eval_tasks(cfg: RunConfig) -> None:
    """UserError for an unknown eval.tasks name now, not after training (when evals exist)."""
    if not cfg.eval.enabled or not cfg.eval.tasks:
        return
    try:
        from scaling.evals import tasks  # noqa: PLC0415
    except ModuleNotFoundError:
        return
    for name in cfg.eval.tasks:
        tasks.get_task(name)


def _run_evals(model: nnx.Module, cfg: RunConfig, mesh: Any) -> dict[str, Any] | None:
    """The few-shot evals block, or None while scaling.evals.score does not exist yet."""
    try:
        from scaling.evals.score import evaluate  # noqa: PLC0415 - optional, heavy
    except ModuleNotFoundError as e:
        if e.name not in ("scaling.evals", "scaling.evals.score"):
            raise
        log.warning("scaling.evals.score is not available; result.json gets evals = null")
        return None
    with jax.set_mesh(mesh):
        return evaluate(model, cfg)
