"""`scaling mup-check`: the muP coordinate check and an lr-transfer probe across widths.

Coordinate check (Yang et al. 2022, Fig. 5): for each width (d_model, fixed head dim and depth)
under SP and under muP, train a few Adam steps at one peak lr on the real corpus, then measure the
RMS of every layer's output (embedding, each block's attention and MLP outputs, the residual
stream after each block, the logits) on a fixed batch. Under muP the curves of RMS against width
are flat; under SP they grow with width. `coord_check` returns the records and
`max_ratio(records, param)` = max over layers of RMS(widest) / RMS(narrowest).

lr transfer (`lrs`): the validation loss after `steps` updates for each (width, lr); under muP the
best lr stays put as width grows, under SP it moves. Both write a JSON table and a figure.
The command's parser and handler are in `scaling.coordcheck_cli` (no JAX at import).
Training reuses `scaling.engine` (the same optimiser, muP partition included) on one device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from scaling import config as C
from scaling import engine, optim, sharding
from scaling.errors import UserError
from scaling.fileio import save_figure


def _rms(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32))))


def layer_rms(model: nnx.Module, tokens_BT: jax.Array) -> dict[str, jax.Array]:
    """RMS of each layer's output, walking the model's own submodules in forward order."""
    x = model.embed(tokens_BT)
    out = {"embed": _rms(x)}
    for i, block in enumerate(model.blocks):
        a = block.attn(block.attn_norm(x))
        x = x + a
        f = block.mlp(block.mlp_norm(x))
        x = x + f
        out |= {f"attn{i}": _rms(a), f"mlp{i}": _rms(f), f"resid{i}": _rms(x)}
    out["logits"] = _rms(model(tokens_BT))
    return out


def run_config(
    width: int, param: str, base_width: int, *, lr: float, steps: int, batch: int, seed: int,
    head_dim: int = 8, n_layers: int = 2, seq_len: int = 64, dataset: str = "python_source",
) -> C.RunConfig:  # fmt: skip
    """The probe run of one (width, parametrisation, lr, seed)."""
    if width % head_dim:
        near = sorted(
            {max(head_dim, width // head_dim * head_dim), -(-width // head_dim) * head_dim}
        )
        raise UserError(
            f"mup-check --widths: width {width} is not a multiple of the probes' head dim "
            f"{head_dim}; use {' or '.join(map(str, near))}"
        )
    model = dict(d_model=width, n_heads=width // head_dim, n_layers=n_layers, seq_len=seq_len)
    model |= dict(param=param, base_width=base_width if param == "mup" else 0)
    train = dict(steps=steps, batch_size=batch, lr=lr, warmup_steps=0, seed=seed)
    return C.from_dict(
        {"model": model, "train": train, "data": {"dataset": dataset}, "mesh": {"data": 1}}
    )


def _train_probe(
    cfg: C.RunConfig, data: Any, eval_batch: np.ndarray, with_loss: bool
) -> tuple[dict, float | None]:
    mesh = sharding.make_mesh(cfg, jax.devices()[:1])
    eng = engine.engine(cfg, mesh)
    t = cfg.train
    with jax.set_mesh(mesh):
        state = eng.init(jax.random.key(t.seed))
        for s in range(t.steps):
            batch = engine.put(data.batch(s, t.batch_size, t.seed), eng.batch_sharding)
            state, _ = eng.step(state, batch, np.float32(optim.lr_at(t, s)))
        model = nnx.merge(eng.graphdef, state["params"], state["other"])
        rms = jax.device_get(nnx.jit(layer_rms)(model, jnp.asarray(eval_batch[:, :-1])))
        loss = None  # only the lr-transfer probe needs it (saves a compile per probe)
        if with_loss:
            loss = engine.val_loss(eng, state, [engine.put(eval_batch, eng.batch_sharding)])
    return {k: float(v) for k, v in rms.items()}, loss


def _check(widths: Sequence[int], lrs: Sequence[float], counts: dict[str, int]) -> None:
    """The probe grid, before any compute; `counts` maps a flag (steps, seeds, batch, layers)
    to its value, each >= 1."""
    if len(set(widths)) < 2 or any(w <= 0 for w in widths):  # one width twice: a ratio of 1
        raise UserError(
            f"mup-check --widths {list(widths)}: give at least two distinct positive widths"
        )
    if len(set(widths)) < len(widths):  # each repeat trained the same probes again
        raise UserError(f"mup-check --widths {list(widths)}: remove the repeated width")
    if not lrs or any(not (lr > 0 and math.isfinite(lr)) for lr in lrs):
        raise UserError(f"mup-check --lrs {list(lrs)}: give a non-empty list of positive lrs")
    for flag, n in counts.items():
        if n < 1:
            raise UserError(f"mup-check --{flag} {n}: must be >= 1")


def probes(
    widths: Sequence[int], lrs: Sequence[float], *, base_width: int | None = None,
    steps: int = 5, batch: int = 16, seeds: int = 1, params: Sequence[str] = ("sp", "mup"),
    **shape: Any,
) -> tuple[int, list[tuple], list[C.RunConfig]]:  # fmt: skip
    """The base width, the (param, width, lr, seed) jobs and their run configs, every one
    validated (UserError) before any compute or output directory."""
    counts = dict(steps=steps, seeds=seeds, batch=batch, layers=shape.get("n_layers", 2))
    _check(widths, lrs, counts)
    widths = sorted(widths)
    base = widths[0] if base_width is None else base_width
    if base <= 0:
        raise UserError(f"mup-check --base-width {base}: must be > 0")
    jobs = [(p, w, lr, s) for p in params for w in widths for lr in lrs for s in range(seeds)]
    cfgs = [
        run_config(w, p, base, lr=lr, steps=steps, batch=batch, seed=s, **shape)
        for p, w, lr, s in jobs
    ]
    return base, jobs, cfgs


def sweep(
    widths: Sequence[int], lrs: Sequence[float], *, base_width: int | None = None,
    steps: int = 5, batch: int = 16, seeds: int = 1, params: Sequence[str] = ("sp", "mup"),
    progress: bool = False, **shape: Any,
) -> list[dict[str, Any]]:  # fmt: skip
    """One record per (param, width, lr, seed): layer RMS after `steps` updates and the
    validation loss on one fixed batch (None when there is a single lr: no transfer to show)."""
    base, jobs, cfgs = probes(
        widths, lrs, base_width=base_width, steps=steps, batch=batch, seeds=seeds,
        params=params, **shape,
    )  # fmt: skip
    from scaling.data import open_dataset  # noqa: PLC0415 - heavy (TFDS)

    data = open_dataset(cfgs[0].data, cfgs[0].model.seq_len, progress=progress)
    eval_batch = np.asarray(data.val_batches(batch)[0], np.int32)
    if eval_batch.shape[0] < batch:
        raise UserError(f"mup-check: the validation split has fewer than {batch} windows")
    records = []
    pairs = list(zip(jobs, cfgs, strict=True))
    for (p, w, lr, s), cfg in tqdm(pairs, desc="mup-check", disable=not progress):
        rms, loss = _train_probe(cfg, data, eval_batch, with_loss=len(lrs) > 1)
        records.append(dict(param=p, width=w, base_width=base, lr=lr, seed=s, loss=loss, rms=rms))
    return records


def mean_rms(records: list[dict], param: str, lr: float | None = None) -> dict[str, dict]:
    """{layer: {width: mean RMS over seeds}} for one parametrisation (and lr)."""
    acc: dict[str, dict[int, list[float]]] = {}
    for r in records:
        if r["param"] == param and (lr is None or r["lr"] == lr):
            for layer, v in r["rms"].items():
                acc.setdefault(layer, {}).setdefault(r["width"], []).append(v)
    return {k: {w: float(np.mean(v)) for w, v in d.items()} for k, d in acc.items()}


def max_ratio(records: list[dict], param: str, lr: float | None = None) -> tuple[float, str]:
    """Largest RMS(widest) / RMS(narrowest) over layers, and that layer."""
    best = (0.0, "")
    for layer, by_w in mean_rms(records, param, lr).items():
        lo, hi = by_w[min(by_w)], by_w[max(by_w)]
        ratio = max(hi / lo, lo / hi) if lo > 0 and hi > 0 else math.inf
        best = max(best, (ratio, layer))
    return best


def mean_loss(records: list[dict], param: str) -> dict[int, dict[float, float]]:
    """{width: {lr: mean validation loss over seeds}} for one parametrisation; a cell with a
    non-finite (or missing) loss in any seed is inf, so it never wins."""
    acc: dict[int, dict[float, list[float]]] = {}
    for r in records:
        if r["param"] == param:
            acc.setdefault(r["width"], {}).setdefault(r["lr"], []).append(r["loss"])

    def mean(ls: list) -> float:
        ok = all(isinstance(x, int | float) and math.isfinite(x) for x in ls)
        return float(np.mean(ls)) if ok else math.inf

    return {w: {lr: mean(d[lr]) for lr in sorted(d)} for w, d in sorted(acc.items())}


def best_lr_by_width(records: list[dict], param: str) -> dict[int, float | None]:
    """Grid lr with the lowest mean loss per width (non-finite losses lose); None for a width
    where no lr gave a finite loss (it has no best lr, not the grid's first one)."""
    return {w: _best(by_lr) for w, by_lr in mean_loss(records, param).items()}


def _best(by_lr: dict[float, float]) -> float | None:
    best = min(by_lr, key=by_lr.__getitem__)
    return best if math.isfinite(by_lr[best]) else None


def plot(records: list[dict], out: Path, lr: float) -> list[Path]:
    """coord_check.png (RMS vs width per layer, SP | muP) and, with several lrs,
    lr_transfer.png (val loss vs lr per width, SP | muP)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import NullFormatter  # noqa: PLC0415

    params = sorted({r["param"] for r in records}, key=["sp", "mup"].index)
    widths = sorted({r["width"] for r in records})
    fig, axes = plt.subplots(
        1, len(params), figsize=(5.5 * len(params), 4.2), squeeze=False, sharey=True
    )
    for ax, p in zip(axes[0], params, strict=True):
        for layer, by_w in mean_rms(records, p, lr).items():
            ws = sorted(by_w)
            ax.plot(ws, [by_w[w] for w in ws], marker="o", label=layer)
        ratio, layer = max_ratio(records, p, lr)
        ax.set(xscale="log", yscale="log", xlabel="width (d_model)")
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{p.upper()}: max RMS ratio {ratio:.3g}x ({layer}), lr {lr:g}", fontsize=10)
    axes[0][0].set_ylabel("activation RMS after the probe's steps")
    axes[0][-1].legend(fontsize=7, ncol=2)
    paths = [out / "coord_check.png"]
    save_figure(fig, paths[0], dpi=120, bbox_inches="tight")
    plt.close(fig)
    lrs = sorted({r["lr"] for r in records})
    if len(lrs) > 1:
        paths.append(_plot_lr_transfer(records, params, lrs, out / "lr_transfer.png"))
    return paths


def _plot_lr_transfer(records: list[dict], params: list[str], lrs: list[float], path: Path):
    """Validation loss vs peak lr, one line per width, one panel per parametrisation; a star
    marks each width's best grid lr (its value in the legend)."""
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import NullFormatter  # noqa: PLC0415

    fig, axes = plt.subplots(
        1, len(params), figsize=(5.5 * len(params), 4.2), squeeze=False, sharey=True
    )
    for ax, p in zip(axes[0], params, strict=True):
        for w, by_lr in mean_loss(records, p).items():
            xs = [x for x in lrs if x in by_lr and math.isfinite(by_lr[x])]
            best = _best(by_lr)
            label = f"d={w}: " + ("every lr diverged" if best is None else f"{best:g}")
            (line,) = ax.plot(xs, [by_lr[x] for x in xs], marker="o", label=label)
            if best is not None:
                ax.plot([best], [by_lr[best]], marker="*", ms=15, color=line.get_color(), mec="k")
        ax.set(xscale="log", xlabel="peak lr", title=f"{p.upper()}: loss vs lr per width")
        ax.set_xticks(lrs, [f"{x:.2g}" for x in lrs], rotation=45 if len(lrs) > 6 else 0)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8, title="width: best lr", title_fontsize=8)
    axes[0][0].set_ylabel("validation loss (nats/token)")
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
