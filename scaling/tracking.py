"""Experiment tracking: TensorBoard event files for every run, optional W&B and MLflow.

Every run writes TensorBoard events (through tensorboardX, no TensorFlow needed) to
`RUN_DIR/tensorboard`, or, inside a sweep, to `SWEEP_DIR/tensorboard/<cell label>`, so
`tensorboard --logdir SWEEP_DIR/tensorboard` shows the whole sweep side by side. Tags:

    loss/train  loss/val  loss/val_bpb  opt/lr  opt/grad_norm  perf/tokens_per_s  perf/mfu
    evals/<task>/<K>shot/<metric>   (exact_match, token_acc, logprob)

The x axis is the optimizer step. On resume the writer purges events at or past the resumed step
(the interrupted session logged them after its last checkpoint), as metrics.jsonl does.

`SCALING_TRACK=wandb` (and/or `mlflow`, comma-separated) also logs the same scalars to Weights &
Biases or MLflow. Install them with `pip install 'scaling[wandb]'` / `'scaling[mlflow]'`. Both are
offline by default: W&B runs with WANDB_MODE=offline unless you set it (`wandb sync` uploads
later), MLflow writes to `file:<log dir>/mlruns` unless MLFLOW_TRACKING_URI is set. A resumed
run logs into the run it started in both: W&B's run id is our run id, and the MLflow run is
found again by its `scaling_run_id` tag. A run stopped by a signal or an error is closed there
as killed or failed (W&B exit code 130 or 1, MLflow status KILLED or FAILED). A sweep session
that stops because another launcher took its lease over (it stalled past --lease-ttl) closes
its session as killed, never finished: the other launcher goes on logging into the same run
and closes it when the run ends.

Only process 0 of a multi-process run logs (the caller passes `enabled=False` elsewhere).
Tracking does not change a run's config or id.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any

from scaling.errors import UserError
from scaling.fileio import warn

SCALARS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "val_bpb": "loss/val_bpb",
    "lr": "opt/lr",
    "grad_norm": "opt/grad_norm",
    "tokens_per_s": "perf/tokens_per_s",
    "mfu": "perf/mfu",
}
EVAL_METRICS = ("exact_match", "token_acc", "logprob")
BACKENDS = ("wandb", "mlflow")
ENV = "SCALING_TRACK"
MLFLOW_TAG = "scaling_run_id"  # the tag that finds a run's MLflow run again on resume
_EXIT_CODES = {"finished": 0, "failed": 1, "killed": 130}  # W&B marks a non-zero one failed


def requested_backends(spec: str | None = None) -> tuple[str, ...]:
    """Extra backends named in $SCALING_TRACK (or ``spec``); UserError for an unknown name."""
    raw = os.environ.get(ENV, "") if spec is None else spec
    names = tuple(s.strip().lower() for s in raw.split(",") if s.strip())
    bad = [n for n in names if n not in BACKENDS]
    if bad:
        raise UserError(
            f"{ENV}={raw!r}: unknown tracker {bad[0]!r}; use a comma-separated subset of "
            f"{', '.join(BACKENDS)} (TensorBoard is always on)"
        )
    return names


def check_backends(spec: str | None = None) -> tuple[str, ...]:
    """`requested_backends`, plus a UserError for one that is not installed: called before any
    compute, so a missing extra never costs a model init (or leaves a half-made run dir)."""
    import importlib.util  # noqa: PLC0415

    names = requested_backends(spec)
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise _missing(name)
    return names


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def eval_scalars(evals: dict | None) -> dict[str, float]:
    """{"evals/<task>/<K>shot/<metric>": value} from a result.json `evals` block."""
    out: dict[str, float] = {}
    for task, by_k in ((evals or {}).get("scores") or {}).items():
        for k, row in by_k.items():
            for m in EVAL_METRICS:
                if _finite(row.get(m)):
                    out[f"evals/{task}/{k}shot/{m}"] = float(row[m])
    return out


class Tracker:
    """Writes a run's scalars to TensorBoard (and the requested extra backends)."""

    def __init__(
        self,
        log_dir: str | Path,
        *,
        run_name: str,
        run_id: str,
        config: dict[str, Any],
        resume_step: int = 0,
        enabled: bool = True,
        backends: tuple[str, ...] | None = None,
    ) -> None:
        self.enabled, self.log_dir = enabled, Path(log_dir)
        self._extra: list[Any] = []
        self._tb = None
        if not enabled:
            return
        backends = requested_backends() if backends is None else backends
        from tensorboardX import SummaryWriter  # noqa: PLC0415 - only where a run starts

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._tb = SummaryWriter(
            logdir=str(self.log_dir), purge_step=resume_step or None, flush_secs=30
        )
        try:
            for name in backends:
                self._extra.append(_open_backend(name, self.log_dir, run_name, run_id, config))
        except BaseException as e:  # close the writers already open (a signal, a backend error)
            self.close_quietly(e)
            raise

    def log(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl record (needs "step"); non-finite or missing values are skipped."""
        if not self.enabled or "step" not in record:
            return
        vals = {tag: float(record[k]) for k, tag in SCALARS.items() if _finite(record.get(k))}
        vals.update(eval_scalars(record.get("evals")))
        self._write(int(record["step"]), vals)

    def log_evals(self, step: int, evals: dict | None) -> None:
        """A few-shot `evals` block (periodic or final) at ``step``."""
        if self.enabled:
            self._write(int(step), eval_scalars(evals))

    def _write(self, step: int, vals: dict[str, float]) -> None:
        if not vals:
            return
        for tag, v in vals.items():
            self._tb.add_scalar(tag, v, global_step=step)
        for backend in self._extra:
            backend.log(vals, step)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def flush_quietly(self) -> None:
        """`flush`, with a failure one `warning:` line (the run's own files are written)."""
        try:
            self.flush()
        except Exception as e:  # noqa: BLE001
            warn(f"an experiment tracker failed to flush ({_one_line(e)})")

    def close(self, status: str = "finished") -> None:
        """Close every writer (again: a no-op). `status` ("finished", "failed" or "killed") is
        how W&B and MLflow record the run's end; the first error is raised after all closed."""
        tb, extra = self._tb, self._extra
        self._tb, self._extra = None, []
        closers = [tb.close] if tb is not None else []
        closers += [functools.partial(backend.close, status) for backend in extra]
        errors: list[Exception] = []
        for close in closers:
            try:
                close()
            except Exception as e:  # noqa: BLE001 - close the others, then raise the first
                errors.append(e)
        if errors:
            raise errors[0]

    def close_quietly(
        self, cause: BaseException | None = None, *, status: str | None = None
    ) -> None:
        """Close without raising: after `cause` (a signal, an error) stopped the run it is
        recorded as killed or failed, with no cause as finished, unless `status` says how. A
        tracker that fails to close is one `warning:` line, never an exception that would
        replace `cause` (its one-line report and exit code) or cost a finished run its result."""
        if status is None and cause is None:
            status = "finished"
        elif status is None:
            status = "killed" if isinstance(cause, KeyboardInterrupt) else "failed"
        try:
            self.close(status)
        except Exception as e:  # noqa: BLE001
            warn(f"an experiment tracker failed to close ({_one_line(e)})")

    def finish_quietly(self, step: int, evals: dict | None) -> None:
        """The end of a finished run, after its result.json is written: log the final evals
        and close as finished; a tracker that fails is one `warning:` line each, never an
        exception (the run's result stands, and the sweep counts it finished)."""
        try:
            self.log_evals(step, evals)
        except Exception as e:  # noqa: BLE001
            warn(f"an experiment tracker failed to log the final evals ({_one_line(e)})")
        self.close_quietly()


def _one_line(e: BaseException) -> str:
    text = (str(e).splitlines() or [""])[0][:300]
    return f"{type(e).__name__}: {text}"


def _import(name: str):
    import importlib  # noqa: PLC0415

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise _missing(name) from e


def _missing(name: str) -> UserError:
    return UserError(
        f"{ENV} asks for {name}, but it is not installed; `pip install 'scaling[{name}]'` "
        f"or drop {name} from {ENV}"
    )


class _WandB:
    def __init__(self, log_dir: Path, run_name: str, run_id: str, config: dict) -> None:
        os.environ.setdefault("WANDB_MODE", "offline")  # nothing leaves the machine by default
        wandb = _import("wandb")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "scaling"),
            name=run_name,
            id=run_id,
            resume="allow",
            dir=str(log_dir),
            config=config,
        )

    def log(self, vals: dict[str, float], step: int) -> None:
        self.run.log(vals, step=step)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=_EXIT_CODES[status])


class _MLflow:
    """One MLflow run per scaling run: tagged `scaling_run_id`, and reopened by that tag when
    the run resumes (so a resumed run is one MLflow run, not one per session)."""

    def __init__(self, log_dir: Path, run_name: str, run_id: str, config: dict) -> None:
        mlflow = _import("mlflow")
        self.mlflow = mlflow
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow.set_tracking_uri((log_dir / "mlruns").resolve().as_uri())
        earlier = mlflow.search_runs(
            filter_string=f"tags.{MLFLOW_TAG} = '{run_id}'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
            output_format="list",
        )
        if earlier:  # a resumed (or retrained) run: log into the MLflow run it started
            self.run = mlflow.start_run(run_id=earlier[0].info.run_id)
        else:
            self.run = mlflow.start_run(run_name=f"{run_name}-{run_id}", tags={MLFLOW_TAG: run_id})
            mlflow.log_params({"run_id": run_id, "name": run_name})

    def log(self, vals: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(vals, step=step)

    def close(self, status: str) -> None:
        self.mlflow.end_run(status=status.upper())


def _open_backend(name: str, log_dir: Path, run_name: str, run_id: str, config: dict):
    cls = {"wandb": _WandB, "mlflow": _MLflow}[name]
    return cls(log_dir, run_name, run_id, config)
