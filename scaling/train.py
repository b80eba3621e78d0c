"""Train (or resume) one run: sharded state, jitted step, validation, checkpoints, result.json.

`train(cfg, out_dir)` runs in three parts: `_setup` (every check before compute, the run
directory, the engine and the initial or restored state), `_loop` (the steps, validation and
checkpoints) and `_finish` (evals and result.json, `scaling.run_result`). It is a
pure function of the resolved config: the batch of step k is
`data.batch(k, batch_size, seed)`, params are initialised from `seed`, and no other randomness
is used, so a run killed and resumed from a checkpoint ends bitwise equal (on CPU) to an
uninterrupted one. The checkpoint holds params, optimizer state (Adam moments and count) and the
step counter; the learning rate is recomputed from the step (`scaling.optim.lr_at`).

Compiled functions live in a module-level cache keyed by (model config, batch shape, mesh,
static optimizer settings); the learning rate is a traced input, so the many cells of a sweep
with the same shapes compile once per process, and the persistent compilation cache
(`scaling.compile_cache`) carries them to later processes. The step loop itself
(`scaling.loop`) runs several updates per dispatch for small models; that never changes the
result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
from flax import nnx

from scaling import compile_cache, engine, results, sharding, signals, tracking
from scaling import config as config_lib
from scaling.checkpoint import Checkpointer, check_from_step
from scaling.config import RunConfig
from scaling.data import check_resume
from scaling.data.sources import default_data_dir
from scaling.errors import UserError
from scaling.fileio import atomic_write, warn
from scaling.loop import Loop, run_evals
from scaling.model import forced_attention
from scaling.run_result import build_result

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the run


def _check_out_dir(out: Path, run_id: str) -> dict[str, Any] | None:
    """UserError if `out` holds a different run; the stored result if this run already ended
    (`scaling.results.finished_result`)."""
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
    return results.finished_result(out, run_id)


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
    launchers: int = 1,
) -> dict[str, Any]:
    """Train `cfg` into `out_dir`, resuming from its newest readable checkpoint; return result.

    `stop_after=k` (for tests) simulates a kill: the session stops after update k without a
    final checkpoint or result.json and returns {"status": "stopped", "step": k}. `should_stop`
    is polled before every dispatch and stops the session the same way (the sweep launcher passes
    "my lease on this run was taken over"); both act between dispatches (`scaling.loop`), so
    `stop_after` always ends a dispatch. TensorBoard events go to `tb_dir` (default
    `out_dir/tensorboard`; a sweep passes one shared directory), see `scaling.tracking`.
    `restart` / `from_step` are the explicit ways past unreadable checkpoints
    (`scaling.checkpoint`), and retrain a finished run (its result.json becomes
    result.replaced.json once the start state is ready). SIGINT/SIGTERM (`scaling.signals`)
    finish the dispatch in flight, save a checkpoint at its last step and raise
    `signals.Interrupted`. `launchers`: how many launchers train on this machine at once
    (`sweep run --workers N`); result.json records it, so their shared cores are accounted for
    when the time estimate is calibrated on the run (`sweeps.calibrate`).
    """
    setup = _setup(cfg, Path(out_dir), progress=progress, restart=restart, from_step=from_step)
    if isinstance(setup, dict):  # finished before: its stored result
        return setup
    run, state = setup
    run.launchers = launchers
    state, loop, tracker = _loop(run, state, tb_dir, progress, stop_after, should_stop)
    return _finish(run, state, loop, tracker)


@dataclass
class _Run:
    """What setup hands to the loop and to finish (the state goes apart: the loop owns it)."""

    cfg: RunConfig
    out: Path
    run_id: str
    is_main: bool
    t_start: float
    mesh: Any
    data: Any
    eng: engine.Engine
    ckpt: Checkpointer
    start: int
    meta: dict[str, Any]
    restored: Any
    launchers: int = 1
    fresh: bool = False  # --restart / --from-step: sessions after the start state do not count


def _setup(
    cfg: RunConfig, out: Path, *, progress: bool, restart: bool, from_step: int | None
) -> tuple[_Run, dict[str, Any]] | dict[str, Any]:
    """Check everything before compute (UserError), then the run directory, the engine and the
    initial (or restored) state; the stored result instead when this run already finished."""
    t_start = time.time()
    check_from_step(out / "checkpoints", from_step)  # before anything is made in `out`
    sharding.maybe_initialize_distributed()
    is_main = jax.process_index() == 0
    run_id = config_lib.config_hash(cfg)
    mesh = sharding.make_mesh(cfg)  # UserError: mesh vs devices, batch vs data parallel
    from scaling.data import open_dataset  # noqa: PLC0415 - heavy (TFDS)

    data = open_dataset(cfg.data, cfg.model.seq_len, progress=progress)  # UserError: dataset
    _check_vocab(cfg, data.info.get("vocab_size"))
    _check_eval_tasks(cfg)
    tracking.check_backends()  # UserError for an unknown or missing $SCALING_TRACK backend
    compile_cache.max_bytes()  # and for a bad $SCALING_COMPILE_CACHE_MAX_MB
    forced_attention()  # and for an unknown $SCALING_ATTENTION kernel
    compile_cache.cache_dir(default_data_dir(cfg.data))  # or a $SCALING_COMPILE_CACHE file
    done = _check_out_dir(out, run_id)
    if done is not None and not restart and from_step is None:
        log.info("run %s in %s already finished (%s)", run_id, out, done["status"])
        return done
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.toml", config_lib.to_toml(cfg))

    signals.check()  # a signal whose exception Python dropped (a GC callback) during setup
    eng = engine.engine(cfg, mesh)
    ckpt = Checkpointer(out / "checkpoints", keep=cfg.train.keep_checkpoints)
    try:
        state, start, meta, restored = _initial_state(cfg, eng, ckpt, restart, from_step)
        if start:  # before any tracker opens: a changed corpus or tokenizer is refused
            check_resume(meta.get("data"), data.info, start)
    except BaseException:
        ckpt.close()
        raise
    if done is not None and is_main:  # --restart / --from-step retrain a finished run: its
        (out / "result.json").replace(out / "result.replaced.json")  # result must not stand
    run = _Run(cfg, out, run_id, is_main, t_start, mesh, data, eng, ckpt, start, meta, restored)
    run.fresh = restart or from_step is not None
    return run, state


def _loop(
    run: _Run,
    state: dict[str, Any],
    tb_dir: str | Path | None,
    progress: bool,
    stop_after: int | None,
    should_stop: Callable[[], bool] | None,
) -> tuple[dict[str, Any], Loop, tracking.Tracker]:
    """Train from the initial state to the end (or a stop); always close Orbax and the logs.
    Returns (state, loop, tracker); the tracker stays open for finish, unless the loop raised
    (a signal, an error): then it is closed here (W&B finish, MLflow end_run)."""
    cfg, restored = run.cfg, run.restored
    warnings = list(run.meta.get("warnings", [])) + (restored.warnings if restored else [])
    tracker = loop = None
    failed: BaseException | None = None
    try:  # a signal while the tracker opens (tensorboardX import) must still close Orbax
        tracker = tracking.Tracker(
            Path(tb_dir) if tb_dir else run.out / "tensorboard",
            run_name=cfg.name,
            run_id=run.run_id,
            config=cfg.to_dict(),
            resume_step=run.start,
            enabled=run.is_main,
        )
        loop = Loop(
            cfg,
            run.eng,
            run.data,
            run.out,
            start=run.start,
            meta=run.meta,
            warnings=warnings,
            new_warnings=list(restored.warnings) if restored else [],
            run_id=run.run_id,
            t_start=run.t_start,
            tracker=tracker,
            progress=progress,
            is_main=run.is_main,
            ckpt=run.ckpt,
            launchers=run.launchers,
            fresh=run.fresh,
        )
        state = loop.run(state, run.start, stop_after=stop_after, should_stop=should_stop)
    except BaseException as e:
        failed = e
        raise
    finally:
        with signals.graceful():  # a signal now must not skip stopping Orbax's threads
            try:
                _close_session(run, loop, tracker, failed)
            finally:  # the session's seconds after its last save count on a resume; not
                if loop is not None and not loop.stopped:  # a stop (a simulated kill, a
                    loop.clock.beat()  # takeover: the other launcher counts from its start)
    return state, loop, tracker


def _close_session(run: _Run, loop: Any, tracker: Any, failed: BaseException | None) -> None:
    """Close the logs and Orbax, whatever fails; the tracker stays open for `_finish` unless
    the session failed (`failed`, or its last saves raising here: closed as failed)."""
    try:  # a log that fails to flush or close must not skip stopping Orbax's threads
        if loop is not None:
            loop.close()
        if tracker is not None:
            tracker.flush_quietly() if failed is None else tracker.close_quietly(failed)
    finally:
        try:
            run.ckpt.close()  # waits for pending saves, then stops Orbax's threads
        except BaseException as e:
            if tracker is not None and failed is None:
                tracker.close_quietly(e)
            raise


def _finish(
    run: _Run, state: dict[str, Any], loop: Loop, tracker: tracking.Tracker
) -> dict[str, Any]:
    """The evals of a finished run, result.json, and the result (or the stopped marker)."""
    cfg, status = run.cfg, loop.status
    final_step = int(jax.device_get(state["step"])) if status == "done" else loop.diverged_at
    if loop.stopped:  # another launcher took the run over and logs on into the same tracker
        with signals.graceful():  # run: not finished here
            tracker.close_quietly(status="killed")
        return {"status": "stopped", "step": final_step, "run_id": run.run_id}
    evals = None
    try:
        signals.check()  # one that landed while the session closed its logs and saves
        if cfg.eval.enabled and status == "done":
            model = nnx.merge(run.eng.graphdef, state["params"], state["other"])
            evals = run_evals(model, cfg, run.mesh)
        result = build_result(cfg, loop, run.data.info, final_step, evals, run.mesh, run.start)
        if run.is_main:
            results.write_result(run.out / "result.json", result)
    except BaseException as e:  # a signal, an error or a full disk before the result is saved
        with signals.graceful():
            loop.clock.beat()  # the evals' seconds count when a rerun finishes the run
            tracker.close_quietly(e)
        raise
    with signals.graceful():  # the result is saved: a tracker failing now is only a warning
        tracker.finish_quietly(final_step or 0, evals)
    return result


def _initial_state(
    cfg: RunConfig, eng: engine.Engine, ckpt: Checkpointer, restart: bool, from_step: int | None
) -> tuple[dict[str, Any], int, dict[str, Any], Any]:
    """(state, step, checkpoint meta, restored) from the newest readable checkpoint, or the
    initial state at step 0 (restored None)."""
    restored = ckpt.restore_latest(eng.abstract_state, restart=restart, from_step=from_step)
    if restored is None:
        with jax.set_mesh(eng.mesh):
            return eng.init(jax.random.key(cfg.train.seed)), 0, {}, None
    state, start = restored.state, restored.step
    if int(jax.device_get(state["step"])) != start:
        raise UserError(f"checkpoint step {start} holds state of step {state['step']}")
    return state, start, restored.meta, restored


VOCAB_PAD = 256


def _check_vocab(cfg: RunConfig, tok_vocab: int | None = None) -> None:
    """UserError, before any compute, for a vocab the tokenizer overflows (its ids would
    index past the embedding and the loss turns NaN at step 1); a warning for one padded past
    the next multiple of VOCAB_PAD, whose unused rows inflate N (and the readout's FLOPs)."""
    from scaling.data.tokenizer import VOCAB_SIZE  # noqa: PLC0415

    need = tok_vocab or VOCAB_SIZE
    if cfg.model.vocab_size < need:
        which = "byte tokenizer's" if not cfg.data.tokenizer else "SentencePiece model's"
        raise UserError(
            f"model.vocab_size = {cfg.model.vocab_size} is smaller than the {which} "
            f"{need} ids; set model.vocab_size >= {need}"
        )
    pad = -(-need // VOCAB_PAD) * VOCAB_PAD  # padding to a multiple of 256 is common practice
    if cfg.model.vocab_size > pad:
        rows = (cfg.model.vocab_size - need) * (1 if cfg.model.tie_embeddings else 2)
        unused = rows * cfg.model.d_model  # the embedding's rows, and the readout's if untied
        warn(
            f"model.vocab_size = {cfg.model.vocab_size} but the tokenizer uses {need} ids: "
            f"{unused:,} embedding parameters are never used yet count in N; set "
            f"model.vocab_size = {need} (or {pad}, a multiple of {VOCAB_PAD})"
        )


def _check_eval_tasks(cfg: RunConfig) -> None:
    """UserError now, not after training, for an unknown eval.tasks name, an eval.n_items or
    eval.shots the task's item pools cannot fill, or a task none of whose items fits
    model.seq_len. Encodes the eval rows once (cached: the evaluation reuses them)."""
    if not cfg.eval.enabled:
        return
    from scaling.evals import score, tasks  # noqa: PLC0415

    e, seq_len = cfg.eval, cfg.model.seq_len
    names = tuple(e.tasks) or tuple(tasks.TASKS)
    for name in names:
        tasks.get_task(name)
    k_max = max(e.shots, default=0)
    for name in names:
        try:
            groups = [
                score.build_group(name, k, e.n_items, e.seed, seq_len, k_max) for k in e.shots
            ]
        except tasks.PoolTooSmall as err:
            if err.pool == "test":
                raise UserError(
                    f"eval.n_items = {e.n_items}: task {name!r} has only {err.found} distinct "
                    f"test items; set eval.n_items <= {err.found}"
                ) from err
            raise UserError(
                f"eval.shots = {list(e.shots)}: task {name!r} has only {err.found} distinct "
                f"demonstrations for one of its queries, not {err.want}; set max(eval.shots) "
                f"<= {err.found}"
            ) from err
        if groups and not any(g.rows for g in groups):
            need = score.min_row_len(name, e.n_items, e.seed)
            raise UserError(
                f"model.seq_len = {seq_len} is too short for any eval item of task {name!r} "
                f"(the shortest needs {need} tokens); raise model.seq_len to >= {need}, drop the "
                f"task from eval.tasks, or set eval.enabled = false"
            )
