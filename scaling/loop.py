"""The step loop of `scaling.train`: several updates per dispatch, metrics, validation, saves.

Updates run in chunks: one call of the compiled `Engine.steps` runs k consecutive updates (a
loop inside one XLA program), with the k batches stacked into one transfer and the k losses and
gradient norms fetched once. The batch of step s is still `data.batch(s, B, seed)` and its
learning rate `optim.lr_at(train, s)`, so chunking never changes what is computed: the loop
body is the single train step, and one compiled program (capacity `N = capacity(n)` steps; k
is a traced argument) serves every chunk length, so a run's losses and state are bitwise equal
on CPU for every steps_per_dispatch n <= MAX_AUTO, and across resumes at any step.

k is `train.steps_per_dispatch` when > 0; at 0 (auto) the first chunk is one step (it compiles),
then k = TARGET_S / measured step time, clamped to [1, MAX_AUTO]: tiny models amortise the
per-call host cost (pytree flattening, transfers, the fetch) over tens of steps, large ones get
k = 1. Chunks end at every validation, checkpoint and few-shot eval step, at the last step and
at `stop_after`, so those happen exactly where they did with one step per call. Signals and
`should_stop` are checked between chunks: an interrupt finishes the chunk in flight (at most
about TARGET_S of work), saves a checkpoint at its end and raises `signals.Interrupted`; one
during the last chunk too, before the final evals (the resume only evaluates).

The host builds and sends chunk i+1 before it fetches chunk i's metrics (JAX's async dispatch
keeps the device busy while the host prepares data and logs).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from scaling import distributed, engine, optim, signals, wallclock
from scaling import flops as flops_lib
from scaling.data import data_identity
from scaling.metrics_log import MetricsLog
from scaling.model import compute_dtype

MAX_AUTO = 32  # steps per call at most in auto mode, and the compiled loop's capacity
TARGET_S = 0.2  # auto mode: about this much device time per call


def capacity(steps_per_dispatch: int) -> int:
    """Static length N of the compiled multi-step loop (the stacked batches' leading axis)."""
    return max(MAX_AUTO, steps_per_dispatch)


class StepsPerCall:
    """How many updates the next call runs: fixed, or auto from the measured step time."""

    def __init__(self, fixed: int):
        self.fixed, self.est_s, self.seen = fixed, None, 0

    def next(self) -> int:
        if self.fixed > 0:
            return self.fixed
        if self.est_s is None:
            return 1  # the first call compiles, the second measures
        return int(min(MAX_AUTO, max(1, round(TARGET_S / max(self.est_s, 1e-6)))))

    def observe(self, seconds: float, k: int) -> None:
        """A call of k steps took `seconds` of device time (the first one, compiling, skipped)."""
        self.seen += 1
        if self.seen == 1 or k <= 0 or seconds <= 0:
            return
        per = seconds / k
        self.est_s = per if self.est_s is None else 0.5 * self.est_s + 0.5 * per


def chunk_end(s: int, k: int, steps: int, every: list[int], stop_after: int | None) -> int:
    """The step count after the chunk starting at step s: s + k, cut at the next multiple of
    each interval in `every` (0 = none), at `steps` and at `stop_after`."""
    end = min(s + k, steps)
    for n in every:
        if n > 0:
            end = min(end, (s // n + 1) * n)
    if stop_after is not None and stop_after > s:
        end = min(end, stop_after)
    return end


@dataclass
class Chunk:
    start: int  # first step index s (the chunk applies updates start+1 .. end)
    end: int
    lrs: list[float]
    dev: dict[str, jax.Array]  # loss, grad_norm [N] on device
    t_dispatch: float


def run_evals(model: nnx.Module, cfg: Any, mesh: Any) -> dict[str, Any]:
    """The few-shot evals block of result.json (`scaling.evals.score.evaluate`)."""
    from scaling.evals.score import evaluate  # noqa: PLC0415 - heavy, only when evals run

    with jax.set_mesh(mesh):
        return evaluate(model, cfg)


class Loop:
    """One session of the step loop; after `run`, the outcome is in status / diverged_at /
    stopped / interrupted, val_loss / best_val, and the timing in t_first / step_first /
    excluded (this session's first chunk, which compiles, and eval/save time excluded)."""

    def __init__(
        self,
        cfg: Any,
        eng: engine.Engine,
        data: Any,
        out: Path,
        *,
        start: int,
        meta: dict[str, Any],
        warnings: list[str],
        new_warnings: list[str],
        run_id: str,
        t_start: float,
        tracker: Any,
        progress: bool,
        is_main: bool,
        ckpt: Any,
        launchers: int = 1,
        fresh: bool = False,
    ):
        t, m = cfg.train, cfg.model
        self.cfg, self.eng, self.data, self.out, self.ckpt = cfg, eng, data, out, ckpt
        self.meta, self.warnings, self.run_id, self.t_start = meta, warnings, run_id, t_start
        self.launchers = launchers  # launchers training on this machine (`sweep run --workers`)
        # the run's wall time over its sessions (`fresh`: --restart / --from-step discard later)
        self.clock = wallclock.WallClock(
            out, run_id, meta, t_start, launchers, write=is_main, fresh=fresh
        )
        self.tokens_per_step = t.batch_size * m.seq_len
        self.fpt = flops_lib.flops_per_token(m)
        self.dtype = jnp.dtype(compute_dtype(m)).name
        self.device_kind, self.n_dev = jax.devices()[0].device_kind, jax.device_count()
        self.eval_every = flops_lib.interval(t.eval_every, t.steps, t.validations)
        self.ckpt_every = flops_lib.interval(t.checkpoint_every, t.steps, 5)
        self.few_shot_every = cfg.eval.every if cfg.eval.enabled else 0
        val = [engine.pad_rows(b, t.batch_size) for b in data.val_batches(t.batch_size)]
        self.n_val_batches = len(val)
        self.val = engine.put(np.stack(val), eng.chunk_sharding)  # one call per validation
        self.best_val = meta.get("best_val_loss")
        self.val_loss: float | None = meta.get("last_val_loss")
        self.status, self.diverged_at, self.stopped = "done", None, False
        self.interrupted: int | None = None
        self.saved_step = start
        self.metrics = MetricsLog(out / "metrics.jsonl", start, is_main, on_write=tracker.log)
        self.evals_log = MetricsLog(
            out / "evals.jsonl", start, is_main and self.few_shot_every > 0, on_write=tracker.log
        )
        self.bar = tqdm(
            total=t.steps,
            initial=start,
            desc=cfg.name,
            disable=not progress or not sys.stderr.isatty() or not is_main,
            dynamic_ncols=True,
        )
        self.excluded, self.t_first, self.step_first = 0.0, None, start
        self.t_done: float | None = None
        # the losses since the last metrics line; saved with a checkpoint taken between lines
        # (an interrupt), so the first line after the resume averages the same steps
        self.window_losses: list[float] = list(meta.get("window_losses", []))
        self.t_window, self.tok_window, self.t_fetch = time.time(), 0, 0.0
        self.pending_warnings = list(new_warnings)
        self.held: list[dict[str, Any]] = []  # the record of an eval step, waiting for val_loss
        self.per_call = StepsPerCall(t.steps_per_dispatch)
        self.n_buf = capacity(t.steps_per_dispatch)

    def run(
        self,
        state: dict[str, Any],
        start: int,
        stop_after: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """Train from step `start` to the end (or a stop/divergence/signal); the final state."""
        t = self.cfg.train
        every = [self.eval_every, self.ckpt_every, self.few_shot_every]
        pending: Chunk | None = None
        s = start
        with jax.set_mesh(self.eng.mesh), signals.graceful():
            while s < t.steps:
                # all processes: the same chunks, the same stop step (or they hang in a collective)
                sig, stop, k = distributed.agree_stop(
                    signals.requested(), bool(should_stop and should_stop()), self.per_call.next()
                )
                if sig is not None:
                    self.interrupted = sig
                    break
                if (stop_after is not None and s >= stop_after) or stop:
                    self.stopped = True
                    break
                end = chunk_end(s, k, t.steps, every, stop_after)
                state, chunk = self._dispatch(state, s, end)
                prev, pending = pending, chunk
                if prev is not None and not self._finish(prev):
                    break
                s = end
                do_eval = s % self.eval_every == 0 or s == t.steps
                do_ckpt = s % self.ckpt_every == 0 or s == t.steps
                few = self.few_shot_every
                do_few_shot = few > 0 and s % few == 0 and s < t.steps
                if do_eval or do_ckpt or do_few_shot:
                    pending = None
                    if not self._finish(chunk, hold=do_eval):
                        break
                    self._boundary(state, s, do_eval, do_ckpt, do_few_shot)
            else:  # every step ran: a signal during the last chunk stops here too, before the
                # final evals (it was dropped, and the run went on to exit 0); the resume evaluates
                self.interrupted = distributed.agree_stop(signals.requested(), False, 1)[0]
            if pending is not None and self.status == "done":
                self._finish(pending)
            if self.interrupted is not None and self.status == "done":
                step = int(jax.device_get(state["step"]))
                if step != self.saved_step:
                    self.save(state, step)  # the resume continues here, not at the last save
                self.ckpt.wait()
                where = f"checkpoint saved at step {step} in {self.out}" if step else ""
                raise signals.Interrupted(self.interrupted, where)
        self.t_done = time.time()  # the steps' end: the final evals and save are not throughput
        return state

    def throughput(self, step: int, t_end: float) -> float | None:
        """Training tokens/s of this session at `step`, from its first (compiling) chunk's end
        to `t_end`, validation, evals and saves excluded; when it measured none (a resume that
        trained no steps, or one chunk), the rate its checkpoint carried from earlier sessions."""
        secs = (t_end - self.t_first - self.excluded) if self.t_first else 0.0
        if step > self.step_first and secs > 0:
            return (step - self.step_first) * self.tokens_per_step / secs
        return self.meta.get("tokens_per_s")

    def timing(self, now: float) -> dict[str, Any]:
        """The run's wall time over its sessions, its launcher-seconds (launchers x seconds) and
        its first session's start (None: it began before checkpoints carried it), at `now`
        (`scaling.wallclock`: the seconds each earlier session spent after its last save too)."""
        return self.clock.timing(now)

    def close(self) -> None:
        self.bar.close()
        self.metrics.close()
        self.evals_log.close()

    def _dispatch(self, state: dict[str, Any], s: int, end: int) -> tuple[Any, Chunk]:
        """Send steps s .. end-1 (their batches in one transfer) as one call."""
        t, B = self.cfg.train, self.cfg.train.batch_size
        buf = np.zeros((self.n_buf, B, self.cfg.model.seq_len + 1), np.int32)
        lrs = [optim.lr_at(t, step) for step in range(s, end)]
        lr_N = np.zeros(self.n_buf, np.float32)
        for i, step in enumerate(range(s, end)):
            buf[i] = self.data.batch(step, B, t.seed)
            lr_N[i] = lrs[i]
        batches = engine.put(buf, self.eng.chunk_sharding)
        state, dev = self.eng.steps(state, batches, lr_N, np.int32(end - s))
        return state, Chunk(s, end, lrs, dev, time.time())

    def _finish(self, chunk: Chunk, hold: bool = False) -> bool:
        """Fetch a chunk's metrics and log them (holding its last step's record for a val_loss
        when `hold`); False (status diverged) at the first loss that is not finite."""
        t = self.cfg.train
        host = jax.device_get(chunk.dev)
        now, k = time.time(), chunk.end - chunk.start
        self.bar.update(k)
        if self.t_first is None:  # this session's first chunk compiled: excluded from rates
            self.t_first, self.step_first = now, chunk.end
            self.t_window, self.tok_window = now, 0
        else:
            self.tok_window += k * self.tokens_per_step
        self.per_call.observe(now - max(chunk.t_dispatch, self.t_fetch), k)
        self.t_fetch = now
        self.clock.beat(now, every=wallclock.BEAT_S)  # a kill from here on loses < BEAT_S
        elapsed = now - self.t_window
        tps = self.tok_window / elapsed if self.tok_window and elapsed > 0 else None
        logged = False
        for i in range(k):
            step, loss = chunk.start + i + 1, float(host["loss"][i])
            if not math.isfinite(loss):
                self.status, self.diverged_at = "diverged", step
                return False
            self.window_losses.append(loss)
            last = step == chunk.end
            due = step % t.log_every == 0 or step == t.steps or step % self.ckpt_every == 0
            if not (due or (hold and last)):
                continue
            rec = self._record(step, chunk.lrs[i], float(host["grad_norm"][i]), tps, now)
            self.held.append(rec) if hold and last else self.metrics.write(rec)
            logged = True
        if logged:
            self.t_window, self.tok_window = now, 0
        return True

    def _record(
        self, step: int, lr: float, grad_norm: float, tps: float | None, now: float
    ) -> dict[str, Any]:
        mfu = (
            flops_lib.mfu(tps * self.fpt, self.device_kind, self.dtype, self.n_dev) if tps else None
        )
        rec = {
            "step": step,
            "tokens": step * self.tokens_per_step,
            "flops": step * self.tokens_per_step * self.fpt,
            "train_loss": sum(self.window_losses) / len(self.window_losses),
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_s": tps,
            "mfu": mfu,
            "elapsed_s": now - self.t_start,
        }
        if self.pending_warnings:
            rec["warnings"], self.pending_warnings = self.pending_warnings, []
        self.window_losses.clear()
        self.bar.set_postfix(loss=f"{rec['train_loss']:.3f}", tok_s=f"{tps or 0:.0f}")
        return rec

    def _boundary(
        self, state: dict[str, Any], step: int, do_eval: bool, do_ckpt: bool, do_few_shot: bool
    ) -> None:
        """Validation, few-shot evals and a checkpoint at `step` (their time is excluded)."""
        from scaling.data import val_bpb  # noqa: PLC0415

        t0 = time.time()
        if do_eval:
            self.val_loss = engine.val_loss(self.eng, state, self.val)
            self.best_val = (
                self.val_loss if self.best_val is None else min(self.best_val, self.val_loss)
            )
            bpb = val_bpb(self.val_loss, self.data.info)
            rec = dict(self.held.pop(), val_loss=self.val_loss, val_bpb=bpb)
            self.metrics.write(rec)
            self.bar.set_postfix(loss=f"{rec['train_loss']:.3f}", val=f"{self.val_loss:.3f}")
        if do_few_shot:  # periodic few-shot evals -> evals.jsonl
            model = nnx.merge(self.eng.graphdef, state["params"], state["other"])
            scores = run_evals(model, self.cfg, self.eng.mesh)
            tokens = step * self.tokens_per_step
            self.evals_log.write({"step": step, "tokens": tokens, "evals": scores})
        if do_ckpt:
            self.save(state, step, t_steps=t0)
        spent = time.time() - t0
        self.excluded += spent
        self.t_window += spent

    def save(self, state: dict[str, Any], step: int, t_steps: float | None = None) -> None:
        """A checkpoint at `step`; its meta carries what the run's result needs across sessions
        (the throughput of the steps up to `t_steps`, default now)."""
        now = time.time()
        ckpt_meta = {
            "run_id": self.run_id,
            "best_val_loss": self.best_val,
            "last_val_loss": self.val_loss,
            "warnings": self.warnings,
            **self.timing(now),
            "tokens_per_s": self.throughput(step, t_steps or now),
            "window_losses": list(self.window_losses),
            "data": data_identity(self.data.info),  # checked when the run resumes
        }
        self.ckpt.save(step, state, ckpt_meta)
        self.saved_step = step
