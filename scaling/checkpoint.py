"""Checkpoints: the only module that talks to Orbax (its API churns; keep it behind one wrapper).

A checkpoint step holds two items: `state` (any pytree of jax arrays, stored as a flat
`{path: array}` dict so that nnx/optax container types never reach Orbax) and `meta` (JSON).
Saves are asynchronous where Orbax supports it: `save` returns once the arrays are copied to
host memory, so the caller may donate the device buffers immediately afterwards.

`restore_latest` walks the steps newest-first and returns the newest one that reads back; the
unreadable newer steps are then moved aside to `<dir>/unreadable-<step>` (kept for inspection,
ignored by Orbax, so new saves do not collide with them) and reported in the returned warnings.
Moving them never changes what the next run decides: it resumes from the same readable step.
If checkpoints exist but none can be read it moves NOTHING and raises
`UnreadableCheckpointError`, so every rerun refuses again until the user says `restart=True`
(`scaling train --restart`: all steps moved aside, start from 0) or `from_step=N`.
A full disk during a save becomes `DiskFullError` (one line, exit 1), not Orbax's tracebacks.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from scaling.errors import DiskFullError, UserError
from scaling.fileio import warn, writing

log = logging.getLogger(__name__)


class UnreadableCheckpointError(UserError):
    """Checkpoints exist in the run directory but none of them can be restored."""


@dataclass
class Restored:
    """What `restore_latest` found: the step, the state (same pytree type as the target), the
    JSON metadata saved with it, and one warning per newer step that could not be read."""

    step: int
    state: Any
    meta: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _flatten(tree: Any) -> tuple[dict[str, Any], Any]:
    """Pytree -> ({"params.layers.0.attn.w": leaf, ...}, treedef) with unique names."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    flat: dict[str, Any] = {}
    for i, (path, leaf) in enumerate(leaves):
        name = jax.tree_util.keystr(path, simple=True, separator=".") or f"leaf{i}"
        name = name.replace("/", "_")
        if name in flat:  # two key kinds that print alike: disambiguate by position
            name = f"{name}#{i}"
        flat[name] = leaf
    return flat, treedef


class Checkpointer:
    """Orbax CheckpointManager over `directory`, keeping the newest `keep` steps.

    Every process must call `save` / `restore_latest` (Orbax coordinates multi-host writes).
    """

    def __init__(self, directory: str | Path, *, keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._syncs = 0  # barriers taken, to name each one uniquely
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            cleanup_tmp_directories=True,  # a save killed half-way leaves a tmp dir: drop it
            enable_async_checkpointing=async_save,
        )
        # Replica-parallel saving slices every replicated array per device, which costs one
        # XLA compile per (shape, device) on first save (~10 s on 8 CPU devices); we turn it
        # off: replica 0 writes each shard, which is what matters for FSDP-sharded state.
        registry = ocp.type_handlers.create_type_handler_registry(
            (jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False))
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                "state": ocp.PyTreeCheckpointHandler(type_handler_registry=registry),
                "meta": ocp.JsonCheckpointHandler(),
            },
        )
        # Orbax starts the tmp-dir cleanup in a thread and its close() does not wait for it: a
        # run that stops at once (a bad --from-step) died in that thread's traceback at exit.
        await_cleanup = getattr(self._manager, "_maybe_await_cleanup_tmp_directory", None)
        if await_cleanup is not None:
            await_cleanup()

    # ------------------------------------------------------------------ queries
    def steps(self) -> list[int]:
        """Finalised checkpoint steps, oldest first (in-flight or half-written saves excluded)."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    # ------------------------------------------------------------------ save
    def save(self, step: int, state: Any, meta: dict[str, Any] | None = None) -> None:
        """Save `state` (pytree of jax arrays) and JSON `meta` at `step` (async where possible).

        Returns once the device arrays have been copied out, so buffers may be donated next.
        """
        flat, _ = _flatten(state)
        self._check_space(step, flat)
        with writing(self.directory / str(step)):
            self._save(step, flat, meta)

    def _check_space(self, step: int, flat: dict[str, Any]) -> None:
        """Refuse a save that cannot fit before Orbax starts writing: a save that runs out of
        space half-way fails in its background threads with hundreds of lines of tracebacks.
        Counts the bytes this process writes (replica 0 of each addressable shard), uncompressed,
        plus a little for the metadata files."""
        need = 64 * 1024
        for x in flat.values():
            shards = getattr(x, "addressable_shards", None)
            if shards is None:
                need += int(getattr(x, "nbytes", 0))
            else:
                need += sum(s.data.nbytes for s in shards if s.replica_id == 0)
        free = shutil.disk_usage(self.directory).free
        if free < need:
            log.info("checkpoint %d needs ~%d bytes, %d free", step, need, free)
            raise DiskFullError(self.directory / str(step))

    def _save(self, step: int, flat: dict[str, Any], meta: dict[str, Any] | None) -> None:
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeSave(flat),
                meta=ocp.args.JsonSave(dict(meta or {}, step=step)),
            ),
            force=True,
        )

    def wait(self) -> None:
        """Block until every pending asynchronous save is on disk."""
        with writing(self.directory):
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and stop Orbax's background threads (before interpreter exit).
        A failed save raises (after the threads are stopped); once every save is on disk, a
        manager that fails to stop is one `warning:` line: a finished run keeps its result."""
        try:
            self.wait()
        except BaseException:
            with contextlib.suppress(Exception):  # the save's error is the one to report
                self._manager.close()
            raise
        try:
            self._manager.close()
        except Exception as e:  # noqa: BLE001
            warn(
                f"Orbax's checkpoint manager of {self.directory} failed to stop ({_reason(e)}); "
                "every checkpoint was saved before"
            )

    # ------------------------------------------------------------------ restore
    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Restore one step into the structure, dtypes and shardings of `abstract_state`
        (a pytree of `jax.ShapeDtypeStruct` with `.sharding`, or of concrete arrays)."""
        flat_abs, treedef = _flatten(abstract_state)
        target = {
            k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=getattr(v, "sharding", None))
            for k, v in flat_abs.items()
        }
        restore_args = {
            k: ocp.ArrayRestoreArgs(sharding=v.sharding, global_shape=v.shape, dtype=v.dtype)
            for k, v in target.items()
        }
        out = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(item=target, restore_args=restore_args),
                meta=ocp.args.JsonRestore(),
            ),
        )
        flat = out["state"]
        missing = sorted(set(target) - set(flat))
        if missing:
            raise ValueError(
                f"checkpoint step {step} lacks {len(missing)} arrays, e.g. {missing[0]}"
            )
        for k, v in target.items():
            if tuple(flat[k].shape) != tuple(v.shape):
                raise ValueError(
                    f"checkpoint step {step}: {k} has shape {flat[k].shape}, want {v.shape}"
                )
        state = jax.tree_util.tree_unflatten(treedef, [flat[k] for k in flat_abs])
        return state, dict(out["meta"] or {})

    def restore_latest(
        self, abstract_state: Any, *, restart: bool = False, from_step: int | None = None
    ) -> Restored | None:
        """Newest readable step, or None when there is none to resume (no checkpoint, or
        `restart`). `from_step=N` resumes from exactly step N (newer steps are moved aside).

        Raises UnreadableCheckpointError, moving nothing, when checkpoints exist but none
        reads back (and neither `restart` nor `from_step` was given).
        """
        steps = self.steps()
        self._sync("listed")  # every process has the same list before process 0 moves any
        if restart or from_step == 0:
            self._move_aside({step: "restarted" for step in steps})
            return None
        if from_step is not None:
            return self._restore_exact(from_step, steps, abstract_state)
        failures: list[tuple[int, str]] = []
        for step in reversed(steps):
            try:
                state, meta = self.restore(step, abstract_state)
            except Exception as e:  # noqa: BLE001 - any failure means "this step is unreadable"
                _quiet_orphans()
                failures.append((step, _reason(e)))
                continue
            warnings = []  # the newer steps go out of the way of new saves
            moved = self._move_aside({bad: "unreadable" for bad, _ in failures})
            for bad, reason in failures:
                aside = moved.get(bad)
                msg = f"checkpoint step {bad} in {self.directory} is unreadable ({reason})"
                warnings.append(msg + (f"; moved to {aside.name}" if aside else ""))
                log.warning(warnings[-1])
            return Restored(step=step, state=state, meta=meta, warnings=warnings)
        if steps:
            raise UnreadableCheckpointError(
                f"none of the {len(steps)} checkpoints in {self.directory} (steps "
                f"{_fmt_steps(steps)}) can be read (step {failures[0][0]}: {failures[0][1]}); "
                f"refusing to restart from step 0 silently: rerun with --restart to train from "
                f"step 0 (the checkpoints are kept as restarted-<step>), or with "
                f"--from-step N after restoring step N from a backup"
            )
        return None

    def _restore_exact(self, step: int, steps: list[int], abstract_state: Any) -> Restored:
        if step not in steps:
            raise UserError(_no_step(step, self.directory, steps))
        try:
            state, meta = self.restore(step, abstract_state)
        except Exception as e:  # noqa: BLE001
            _quiet_orphans()
            raise UserError(
                f"--from-step {step}: checkpoint step {step} in {self.directory} is unreadable "
                f"({_reason(e)}); pick another step, or --restart"
            ) from None
        moved = self._move_aside({newer: "discarded" for newer in steps if newer > step})
        warnings = [
            f"--from-step {step}: checkpoint step {newer} moved to {aside.name}"
            for newer, aside in moved.items()
            if aside is not None
        ]
        return Restored(step=step, state=state, meta=meta, warnings=warnings)

    def _move_aside(self, why: dict[int, str]) -> dict[int, Path | None]:
        """Rename each step dir to `<why>-<step>` so Orbax neither lists it nor saves over it;
        step -> where it went (None on processes other than 0, or when it was gone). Process 0
        renames; then EVERY process waits for it and reloads its manager's list of steps: a
        process that still listed a moved step refused to save that step again
        (StepAlreadyExistsError) and the others hung in the save's barrier."""
        if not why:
            return {}
        moved: dict[int, Path | None] = dict.fromkeys(why)
        if jax.process_index() == 0:
            moved = {step: self._rename(step, reason) for step, reason in why.items()}
        self._sync("moved-aside")
        self._manager.reload()
        return moved

    def _sync(self, what: str) -> None:
        """A barrier across the processes of a multi-process run (no-op for one)."""
        if jax.process_count() > 1:
            self._syncs += 1
            ocp.multihost.sync_global_processes(f"scaling-ckpt-{what}-{self._syncs}")

    def _rename(self, step: int, why: str) -> Path | None:
        src = self.directory / str(step)
        if not src.exists():
            return None
        dst = self.directory / f"{why}-{step}"
        n = 1
        while dst.exists():
            dst, n = self.directory / f"{why}-{step}.{n}", n + 1
        shutil.move(str(src), str(dst))
        return dst


def _reason(e: Exception) -> str:
    """One line: the exception's type and first line, without TensorStore's spec dump (`See
    full TensorStore details: <bound method ...`), at most 300 characters."""
    text = str(e).splitlines()[0] if str(e) else ""
    text = text.split("See full TensorStore details")[0].rstrip(" .:")
    return f"{type(e).__name__}: {text[:300]}"


def _orphan_noise(exc: BaseException | None, obj: object = None) -> bool:
    """An unreadable step's restore leaves Orbax's other read coroutines orphaned: they fail
    later, after the event loop closed, and Python prints each one's traceback ("Exception
    ignored in: <coroutine _read_array_index_and_device_put>", "Event loop is closed"). The
    failure itself is already reported in one line."""
    code = getattr(obj, "cr_code", None)
    if code is not None and code.co_name.startswith("_read_array_index"):
        return True
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def _quiet_orphans() -> None:
    """Drop `_orphan_noise` from sys.unraisablehook and sys.excepthook, from the first failed
    restore on (the orphans fail at any later time, up to interpreter exit); once."""
    if getattr(sys.unraisablehook, "scaling_orphans", False):
        return
    unraisable, excepthook = sys.unraisablehook, sys.excepthook

    def on_unraisable(args: Any) -> None:
        if not _orphan_noise(args.exc_value, args.object):
            unraisable(args)

    def on_exception(kind: type, exc: BaseException, tb: Any) -> None:
        if not _orphan_noise(exc):
            excepthook(kind, exc, tb)

    # `previous`: what scaling.signals.restore puts back (the hook before either wrapper)
    on_unraisable.scaling_orphans = True  # type: ignore[attr-defined]
    on_unraisable.previous = getattr(unraisable, "previous", unraisable)  # type: ignore[attr-defined]
    on_exception.scaling_orphans = True  # type: ignore[attr-defined]
    sys.unraisablehook = on_unraisable
    if not getattr(excepthook, "scaling_orphans", False):
        sys.excepthook = on_exception


def check_from_step(directory: str | Path, step: int | None) -> None:
    """UserError, before a run creates anything, when `--from-step step` (> 0) names no step
    directory in `directory` (the checkpoints dir; absent when the run never started).
    `Checkpointer.restore_latest` checks the same against Orbax's own list later, once the
    Checkpointer (which creates the directory) exists; this checks the files first."""
    if not step:  # None: no --from-step; 0: --restart
        return
    directory = Path(directory)
    if (directory / str(step)).is_dir():
        return
    steps = (
        sorted(int(p.name) for p in directory.glob("*") if p.name.isdigit() and p.is_dir())
        if directory.is_dir()
        else []
    )
    raise UserError(_no_step(step, directory.absolute(), steps))


def _no_step(step: int, directory: Path, steps: list[int]) -> str:
    return (
        f"--from-step {step}: no checkpoint step {step} in {directory} (steps "
        f"{_fmt_steps(steps) or 'none'}); pick one of them, or --restart"
    )


def _fmt_steps(steps: list[int]) -> str:
    return ", ".join(map(str, steps[:10])) + (", ..." if len(steps) > 10 else "")
