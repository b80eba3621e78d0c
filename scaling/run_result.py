"""A finished (or diverged) run's result.json, built from its last session (`scaling.loop`).

The keys are `scaling.results.RESULT_FIELDS`. Times and throughput span the run's sessions: the
checkpoint meta (and `wall_time.json`, for the seconds a session spent after its last save:
`scaling.wallclock`) carries the wall time so far, the first session's start (`started_at`), the
launcher-seconds (`launchers`: how many launchers trained on the machine, weighted by the wall
time of each session) and the last measured training throughput, which a resume that trains no
steps (result.json lost after the final checkpoint) reports instead of nothing.
"""

from __future__ import annotations

import time
from typing import Any

from scaling import flops as flops_lib
from scaling import optim, results
from scaling.config import RunConfig
from scaling.loop import Loop


def build_result(
    cfg: RunConfig,
    loop: Loop,
    info: dict[str, Any],
    final_step: int | None,
    evals: dict[str, Any] | None,
    mesh: Any,
    start: int,
) -> dict[str, Any]:
    """result.json (keys: `scaling.results.RESULT_FIELDS`): the outcome, sizes, FLOPs (our
    formula, `scaling.flops`), time and throughput."""
    from scaling.data import val_bpb  # noqa: PLC0415

    m, t = cfg.model, cfg.train
    t_end = time.time()
    tokens_per_step, fpt = loop.tokens_per_step, loop.fpt
    # the steps only: not the final few-shot evals or the wait for the last save
    tps = loop.throughput(final_step or 0, loop.t_done or t_end)
    timing = loop.timing(t_end)
    done = loop.status == "done"
    counts = flops_lib.param_counts(m)
    tokens = (final_step or 0) * tokens_per_step
    mfu = flops_lib.mfu(tps * fpt, loop.device_kind, loop.dtype, loop.n_dev) if tps else None
    validated = (final_step or 0) if done else max((final_step or 0) - 1, 0)  # not the NaN step
    n_val = flops_lib.n_validations(validated, t.steps, loop.eval_every)
    val_tokens = loop.n_val_batches * tokens_per_step  # padded rows run too
    return {
        "run_id": loop.run_id,
        "name": cfg.name,
        "status": loop.status,
        "step": final_step,
        "diverged_at_step": loop.diverged_at,
        "final_val_loss": loop.val_loss if done else None,
        "best_val_loss": loop.best_val,
        "final_val_bpb": val_bpb(loop.val_loss, info) if done else None,
        "best_val_bpb": val_bpb(loop.best_val, info),
        results.N_TOTAL: counts.total,
        results.N_EMBED: counts.embedding,
        results.N_NONEMBED: counts.nonembedding,
        results.D: tokens,
        "epochs": _epochs(tokens, info),
        "flops_per_token": fpt,
        results.C_EXACT: fpt * tokens,
        results.C_6ND: flops_lib.flops_6nd(counts.total, tokens),
        results.C_6ND_NONEMBED: flops_lib.flops_6nd(counts.nonembedding, tokens),
        "flops_val": n_val * val_tokens * flops_lib.forward_flops_per_token(m),
        "flops_convention": flops_lib.CONVENTION,
        "wall_time_s": timing["wall_time_s"],
        "tokens_per_s": tps,
        "mfu": mfu,
        "launchers": _launchers(timing["launcher_s"], timing["wall_time_s"], loop.launchers),
        "started_at": timing["started_at"],
        "device_kind": loop.device_kind,
        "n_devices": loop.n_dev,
        "compute_dtype": loop.dtype,
        "mesh": dict(mesh.shape),
        "warmup_steps": optim.warmup_steps(t),
        "resumed_from_step": start or None,
        "checkpoint_warnings": loop.warnings,
        "data_info": info,
        "evals": evals,
        "metrics_path": str(loop.out / "metrics.jsonl"),
        "config": cfg.to_dict(),
    }


def _launchers(launcher_s: float, wall_s: float, this_session: int) -> float | int:
    """Launchers training on the machine while the run trained: this session's count when every
    session had it, else the mean over the sessions weighted by their wall time."""
    mean = launcher_s / wall_s if wall_s > 0 else float(this_session)
    return this_session if abs(mean - this_session) < 1e-6 else round(mean, 3)


def _epochs(tokens: int, info: dict[str, Any]) -> float | None:
    """Passes over the training split: training tokens / `data_info.n_train_tokens`."""
    n = info.get("n_train_tokens")
    return tokens / n if n else None
