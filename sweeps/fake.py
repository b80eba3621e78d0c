"""A stand-in for `scaling.train.train` that trains nothing (tests and dry runs of a sweep).

`fake_train(cfg, out_dir, progress=...)` follows the engine's contract: it writes
out_dir/metrics.jsonl step by step, "resumes" from the last logged step, writes result.json
atomically and returns the result dict. The loss follows a Chinchilla-like form of (N, D), so
IsoFLOP curves have interior minima. Each call appends one line to out_dir/train_calls.log (the
tests count trainings per cell with it). Runs with train.lr > FAKE_DIVERGE_LR diverge.

Environment (tests): SWEEP_FAKE_SECONDS (wall time per run, default 0.05); SWEEP_FAKE_FAIL=RUN_ID
(that run raises); SWEEP_FAKE_HOLD=PATH (runs stay in training until PATH exists).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from scaling import config as C
from scaling.errors import UserError
from scaling.fileio import atomic_write, read_jsonl
from scaling.flops import flops_per_token, param_counts
from scaling.results import finished_result

FAKE_DIVERGE_LR = 1.0


def fake_loss(n: float, d: float, seed: int = 0) -> float:
    """L(N, D) = 0.9 + 60 / N^0.34 + 90 / D^0.3 plus a tiny seed offset."""
    return 0.9 + 60.0 / n**0.34 + 90.0 / d**0.3 + 0.002 * seed


def _hold(path: str | None, limit_s: float = 600.0) -> None:
    """Tests: with SWEEP_FAKE_HOLD=PATH, a run stays in training (after its metrics, before
    its result) until PATH exists, so "while the first run trains" does not depend on timing."""
    deadline = time.monotonic() + limit_s
    while path and not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.1)


def fake_train(
    cfg: C.RunConfig, out_dir: str | Path, *, progress: bool = False, launchers: int = 1
) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_id = C.config_hash(cfg)
    done = out / "result.json"
    old = finished_result(out, run_id)
    if old is not None:
        return old
    with open(out / "train_calls.log", "a") as f:
        f.write(f"{os.getpid()}\n")
    if out.name == os.environ.get("SWEEP_FAKE_FAIL"):  # tests: this run fails
        raise RuntimeError(f"SWEEP_FAKE_FAIL={out.name}")
    t0 = time.time()
    m, t = cfg.model, cfg.train
    counts = param_counts(m)
    tokens_per_step = t.batch_size * m.seq_len
    diverge_at = max(1, t.steps // 3) if t.lr > FAKE_DIVERGE_LR else None
    metrics = out / "metrics.jsonl"
    start = 0
    if metrics.is_file():
        lines = read_jsonl(metrics, required=("step",), quiet=True)
        start = lines[-1]["step"] if lines else 0
    n_log = 10
    pause = float(os.environ.get("SWEEP_FAKE_SECONDS", "0.05")) / n_log
    best = math.inf
    loss = math.inf
    for i in range(1, n_log + 1):
        step = max(1, round(t.steps * i / n_log))
        if step <= start:
            continue
        time.sleep(pause)
        if diverge_at is not None and step >= diverge_at:
            loss = math.nan
        else:
            loss = fake_loss(counts.total, step * tokens_per_step, t.seed)
            best = min(best, loss)
        with open(metrics, "a") as f:
            f.write(json.dumps({"step": step, "val_loss": None if math.isnan(loss) else loss}))
            f.write("\n")
        if math.isnan(loss):
            break
    _hold(os.environ.get("SWEEP_FAKE_HOLD"))
    diverged = diverge_at is not None
    final = fake_loss(counts.total, t.steps * tokens_per_step, t.seed)
    result = dict(
        run_id=run_id,
        name=cfg.name,
        status="diverged" if diverged else "done",
        step=diverge_at if diverged else t.steps,
        diverged_at_step=diverge_at,
        final_val_loss=None if diverged else final,
        best_val_loss=None if best == math.inf else best,
        N_total=counts.total,
        N_embed=counts.embedding,
        N_nonembed=counts.nonembedding,
        D=t.steps * tokens_per_step,
        flops_per_token=flops_per_token(m),
        wall_time_s=round(time.time() - t0, 3),
        tokens_per_s=None,
        mfu=None,
        launchers=launchers,
        started_at=t0,
        device_kind="fake",
        n_devices=1,
        evals=None,
        metrics_path=str(metrics),
        config=cfg.to_dict(),
    )
    atomic_write(done, json.dumps(result).encode())
    return result


def fake_train_checking_data(cfg: C.RunConfig, out_dir: str | Path, **kw: Any) -> dict[str, Any]:
    """`fake_train` that rejects datasets other than python_source, like the engine would."""
    if not cfg.data.dataset.startswith("python_source"):
        raise UserError(f"unknown dataset {cfg.data.dataset!r}; use python_source")
    return fake_train(cfg, out_dir, **kw)
