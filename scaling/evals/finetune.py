"""Fine-tune a pre-trained run on a task's training pool; score it on the task's test items.

One job = (pre-trained run, task, method, D_f). Methods (`parse_method`):

  full                  every parameter trained
  lora:r=4              LoRA adapters on every projection (scaling.lora), base frozen
  lora:r=8,alpha=16,targets=q+v      rank, alpha (default 2r), chosen projections
  qlora:r=4             LoRA over a 4-bit NF4 base (qlora:r=4,quant=int8 for int8)

Data: D_f distinct items of the task's training pool (`tasks.train_items`, nested in D_f; the
pool is disjoint from the test items), each one zero-shot example `BOS + instruction + query ->`
followed by the target ` answer\\n`; the loss is on the target tokens only. Update k uses rows
k*B .. k*B+B-1 of a stream of per-epoch permutations of the D_f examples (a pure function of
the seed). Steps = `steps`, or ceil(epochs * D_f / batch_size) when steps = 0.

Eval: the task's zero-shot test items (`eval_items` of them, the few-shot suite's test pool and
format): loss = mean NLL per target token (nats), exact match and token accuracy (greedy, exact
via scaling.evals.score). Evaluation runs on the plain model with the adapters folded in.

Freezing: `nnx.split(model, trainable_filter(method), nnx.Param, ...)` separates the trained
sub-state; gradients are taken w.r.t. it only, the optimiser is an optax partition whose
"frozen" branch is `set_to_zero`, and frozen buffers are never outputs of the step, so base
weights are bitwise unchanged. Only the trained sub-state is checkpointed (adapters for LoRA).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from scaling import engine, lora, optim, sharding, signals
from scaling.checkpoint import Checkpointer
from scaling.config import MeshConfig, RunConfig, TrainConfig
from scaling.data.tokenizer import BOS, PAD
from scaling.errors import UserError
from scaling.evals import score
from scaling.evals import tasks as T
from scaling.evals.finetune_spec import Method, Settings, example_tokens, train_config
from scaling.fileio import warn
from scaling.model import cross_entropy

# ----------------------------------------------------------------------------- data


def encode_examples(task: str, items: list[T.Item], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """[n, seq_len+1] token rows (PAD right) and [n, seq_len] masks of the target positions."""
    rows = np.full((len(items), seq_len + 1), PAD, np.int32)
    mask = np.zeros((len(items), seq_len), np.float32)
    for i, it in enumerate(items):
        prompt, target = example_tokens(task, it)  # the lengths sweeps.finetune checks
        row = np.frombuffer(bytes([0]) + prompt + target, np.uint8).astype(np.int32)
        row[0] = BOS
        if len(row) > seq_len + 1:
            raise UserError(
                f"task {task!r}: an example of {len(row)} tokens exceeds model.seq_len + 1 = "
                f"{seq_len + 1}; fine-tune a model with a longer context"
            )
        rows[i, : len(row)] = row
        start = 1 + len(prompt)  # first target token
        mask[i, start - 1 : len(row) - 1] = 1.0  # logits at p predict token p + 1
    return rows, mask


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> np.ndarray:
    """Example indices of update `step`: a stream of per-epoch permutations of range(n)."""
    j = np.arange(step * batch_size, (step + 1) * batch_size)
    out = np.empty(batch_size, np.int64)
    for epoch in np.unique(j // n):
        perm = np.random.default_rng([seed, int(epoch), 0xF7]).permutation(n)
        sel = j // n == epoch
        out[sel] = perm[j[sel] % n]
    return out


# ----------------------------------------------------------------------------- base model


@dataclass
class Base:
    """A pre-trained run's final weights, restored sharded on its mesh."""

    cfg: RunConfig
    mesh: Any
    graphdef: Any
    params: Any
    other: Any
    step: int

    def model(self) -> nnx.Module:
        """A fresh module over copies of the weights (fine-tuning never touches the base)."""
        params = jax.tree.map(jnp.copy, self.params)
        return nnx.merge(self.graphdef, params, self.other)


def fitting_mesh(cfg: RunConfig) -> tuple[RunConfig, Any]:
    """(cfg, mesh): the run's own mesh when it fits the visible devices, else `cfg` with the
    default mesh, data-parallel over all of them (as `scaling ablate` restores): a run trained
    on 8 GPUs was refused on 1, naming a mesh setting `scaling finetune` has no flag for. The
    pre-training batch is not checked against the mesh (`check_batch` checks fine-tuning's)."""
    n = len(jax.devices())
    probe = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=n))
    try:
        return cfg, sharding.make_mesh(probe)
    except UserError:
        m = cfg.mesh
        warn(
            f"the run's mesh (data={m.data}, fsdp={m.fsdp}, tensor={m.tensor}) does not fit the "
            f"{n} visible device(s); fine-tuning data-parallel over them"
        )
        probe, cfg = (dataclasses.replace(c, mesh=MeshConfig()) for c in (probe, cfg))
        return cfg, sharding.make_mesh(probe)


def check_batch(mesh: Any, batch_size: int) -> None:
    """UserError unless the fine-tuning batch splits evenly over the mesh's data x fsdp."""
    n = mesh.shape["data"] * mesh.shape["fsdp"]
    if batch_size % n:
        raise UserError(
            f"fine-tuning batch_size = {batch_size} does not split over data x fsdp = {n} "
            f"devices; use a multiple of {n}, e.g. --set batch_size={max(n, batch_size // n * n)}"
        )


def load_base(run_dir: Path, cfg: RunConfig) -> Base:
    """Restore the newest checkpoint of `run_dir` (UserError when there is none) on the run's
    mesh, or data-parallel when that mesh does not fit this host (`fitting_mesh`)."""
    cfg, mesh = fitting_mesh(cfg)
    eng = engine.engine(cfg, mesh)
    ckpt = Checkpointer(Path(run_dir) / "checkpoints", keep=10**6)
    with signals.graceful():  # a signal mid-restore must not skip stopping Orbax's threads
        try:
            restored = ckpt.restore_latest(eng.abstract_state)
        finally:
            ckpt.close()
    signals.check()
    if restored is None:
        raise UserError(f"run {run_dir} has no checkpoint to fine-tune from; train it first")
    s = restored.state
    return Base(cfg, mesh, eng.graphdef, s["params"], s["other"], restored.step)


# ----------------------------------------------------------------------------- the step

_STEPS: dict[tuple, Any] = {}


def _compiled_step(graphdef, shardings, batch_sh, mesh, tx, key, example_args):
    """The AOT-compiled step for `key` and its XLA memory analysis (compiled once per key)."""
    if key in _STEPS:
        return _STEPS[key]

    def loss_fn(train, frozen, rest, tokens_BT1, mask_BT):
        model = nnx.merge(graphdef, train, jax.lax.stop_gradient(frozen), rest)
        return cross_entropy(model(tokens_BT1[:, :-1]), tokens_BT1[:, 1:], mask_BT)[0]

    def step(state, frozen, rest, tokens_BT1, mask_BT, lr):
        loss, g = jax.value_and_grad(loss_fn)(state["train"], frozen, rest, tokens_BT1, mask_BT)
        tree = {"train": state["train"], "frozen": frozen}
        grads = {"train": g, "frozen": jax.tree.map(jnp.zeros_like, frozen)}
        updates, opt = tx.update(grads, state["opt"], tree)
        train = jax.tree.map(
            lambda p, u: (p - lr * u).astype(p.dtype), tree["train"], updates["train"]
        )
        return {"train": train, "opt": opt, "step": state["step"] + 1}, loss

    scalar = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    jitted = jax.jit(
        step,
        in_shardings=(
            shardings["state"],
            shardings["frozen"],
            shardings["rest"],
            batch_sh,
            batch_sh,
            scalar,
        ),
        out_shardings=(shardings["state"], scalar),
        donate_argnums=(0,),
    )
    compiled = jitted.lower(*example_args).compile()
    _STEPS[key] = (compiled, _memory(compiled))
    return _STEPS[key]


def _memory(compiled) -> dict[str, int] | None:
    """XLA's memory analysis of the compiled step: resident arguments (state, frozen base,
    batch), temporaries, and their sum minus donated (aliased) buffers, in bytes."""
    try:
        m = compiled.memory_analysis()
        arg, out, alias, tmp = (
            int(m.argument_size_in_bytes),
            int(m.output_size_in_bytes),
            int(m.alias_size_in_bytes),
            int(m.temp_size_in_bytes),
        )
    except (AttributeError, NotImplementedError, RuntimeError, TypeError):
        return None
    return {"argument_bytes": arg, "temp_bytes": tmp, "peak_bytes": arg + out - alias + tmp}


def make_tx(tcfg: TrainConfig, train, frozen, model_cfg=None) -> optax.GradientTransformation:
    """AdamW (scaling.optim) on the trained sub-state, set_to_zero on the frozen one. With a
    muP `model_cfg` (full fine-tuning of a muP run) the hidden matrices' updates are scaled by
    1/m as in pre-training, so that one fine-tuning lr means the same at every width."""
    labels = {
        "train": jax.tree.map(lambda _: "train", train),
        "frozen": jax.tree.map(lambda _: "frozen", frozen),
    }
    return optax.partition(
        {"train": optim.make_optimizer(tcfg, model_cfg), "frozen": optax.set_to_zero()}, labels
    )


def prepare(base: Base, method: Method, seed: int) -> nnx.Module:
    """The base model with the method's adapters applied (a fresh copy)."""
    model = base.model()
    if method.spec is not None:
        lora.validate_spec(method.spec, base.cfg.model.mlp, lora.projection_dims(base.cfg.model))
        lora.apply_lora(model, method.spec, nnx.Rngs(params=jax.random.key(seed)))
    return model


def finetune(
    base: Base,
    task: str,
    method: Method,
    d_f: int,
    s: Settings,
    *,
    out_dir: Path | None = None,
    on_step=None,
) -> tuple[nnx.Module, dict[str, Any]]:
    """Fine-tune; return (the fine-tuned module, row fields: steps, trainable params, losses)."""
    t0 = time.time()
    check_batch(base.mesh, s.batch_size)
    tcfg = train_config(s, d_f)
    rows, mask = encode_examples(task, T.train_items(task, d_f, s.seed), base.cfg.model.seq_len)
    model = prepare(base, method, s.seed)
    filt = lora.trainable_filter(method.kind)
    graphdef, train, frozen, rest = nnx.split(model, filt, nnx.Param, ...)
    tx = make_tx(tcfg, train, frozen, base.cfg.model if method.kind == "full" else None)
    state = {
        "train": train,
        "opt": tx.init({"train": train, "frozen": frozen}),
        "step": jnp.zeros((), jnp.int32),
    }
    mesh = base.mesh
    sh = {
        "state": sharding.state_shardings(state, mesh),
        "frozen": sharding.state_shardings(frozen, mesh),
        "rest": sharding.state_shardings(rest, mesh),
    }
    state = jax.device_put(state, sh["state"])
    frozen, rest = jax.device_put(frozen, sh["frozen"]), jax.device_put(rest, sh["rest"])
    batch_sh = sharding.batch_sharding(mesh)
    key = (graphdef, mesh, s.batch_size, optim.static_hparams(tcfg), base.cfg.model.seq_len)
    losses = []
    with jax.set_mesh(mesh), signals.graceful():  # a signal stops at the next step (check)
        for k in range(tcfg.steps):
            signals.check()
            idx = batch_indices(k, s.batch_size, d_f, s.seed)
            tok = engine.put(rows[idx], batch_sh)
            msk = engine.put(mask[idx], batch_sh)
            lr = np.float32(optim.lr_at(tcfg, k))
            if k == 0:
                args = (state, frozen, rest, tok, msk, lr)
                step_fn, memory = _compiled_step(graphdef, sh, batch_sh, mesh, tx, key, args)
            state, loss = step_fn(state, frozen, rest, tok, msk, lr)
            losses.append(loss)
            if on_step is not None:
                on_step()
    signals.check()
    losses = [float(x) for x in jax.device_get(losses)]
    bad = [k + 1 for k, x in enumerate(losses) if not math.isfinite(x)]
    if bad:  # one line, not a traceback; the rows appended so far stay, a rerun skips them
        raise UserError(
            f"fine-tuning {method.label} at D_f={d_f} diverged (loss not finite at step {bad[0]} "
            f"of {tcfg.steps}, lr = {tcfg.lr:g}); lower it, e.g. --set {method.kind}.lr="
            f"{tcfg.lr / 10:g} (rows already done are kept and skipped on the rerun)"
        )
    if out_dir is not None and s.save:
        save_trained(Path(out_dir), tcfg.steps, state["train"], method.label, d_f)
    tuned = nnx.merge(graphdef, state["train"], frozen, rest)
    info = {
        "steps": tcfg.steps,
        "lr": tcfg.lr,
        "trainable_params": lora.count_params(state["train"]),
        "train_loss_first": losses[0],
        "train_loss_last": float(np.mean(losses[-max(1, len(losses) // 10) :])),
        "base_weight_bytes": base_weight_bytes(tuned),
        "step_memory": memory,
        "train_s": time.time() - t0,
    }
    return tuned, info


def save_trained(out_dir: Path, step: int, train: Any, method: str, d_f: int) -> None:
    """Checkpoint a row's trained sub-state in `out_dir/checkpoints` (an earlier try's removed).

    A signal during the save only sets the flag (`scaling.signals.graceful`): the save finishes
    and Orbax's threads stop, then `Interrupted` is raised. It used to raise inside the save,
    the Checkpointer was never closed, and its background commit thread, still running at
    interpreter exit, printed tracebacks after the one line (and sometimes hung the process)."""
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # a crashed earlier try
    ckpt = Checkpointer(out_dir / "checkpoints", keep=1)
    with signals.graceful():
        try:
            ckpt.save(step, {"train": train}, {"method": method, "d_f": d_f})
        finally:
            ckpt.close()  # waits for the save, then stops Orbax's threads
    signals.check()


def base_weight_bytes(model: nnx.Module) -> int:
    """Bytes of the stored frozen base weights of the adapted projections (codes + scales for
    a quantised base), or of every projection weight for a model without adapters."""
    total = 0
    for block in model.blocks:
        for mod_name, attr, _ in lora.PROJECTIONS.values():
            w = getattr(getattr(block, mod_name), attr, None)
            if isinstance(w, lora.LoRA):
                b = w.base
                total += (
                    b.nbytes() if hasattr(b, "nbytes") and callable(b.nbytes) else b[...].nbytes
                )
            elif w is not None:
                total += w[...].nbytes
    return int(total)


# ----------------------------------------------------------------------------- eval


def evaluate(model: nnx.Module, cfg: RunConfig, task: str, n_items: int, mesh) -> dict[str, float]:
    """Zero-shot test-pool scores: loss (nats per target token), exact match, token accuracy."""
    plain = lora.strip_lora(model)
    group = score.build_group(task, 0, n_items, cfg.eval.seed, cfg.model.seq_len)
    if not group.rows:
        raise UserError(f"task {task!r}: no test item fits model.seq_len = {cfg.model.seq_len}")
    with jax.set_mesh(mesh):
        lp, acc, em = score.score_rows(plain, [group], cfg.model.seq_len)[(task, 0)]
    n_tgt = sum(len(r) - s for r, s in zip(group.rows, group.starts, strict=True))
    return {
        "eval_loss": float(-np.sum(lp) / n_tgt),
        "exact_match": float(np.mean(em)),
        "token_acc": float(np.mean(acc)),
        "n_eval_items": len(group.rows),
    }
