"""Which heads and MLP blocks does in-context learning use? Importance scores for ablation.

- `mask_gradients`: for each (task, K) group of the few-shot suite, the expected absolute
  gradient of the task loss (summed target NLL of one item) w.r.t. each head mask and each FFN
  mask, at mask = 1 (Michel et al. 2019; Bansal et al. 2023). One backward pass per chunk gives
  every row's own gradient: each row gets its own copy of the masks ([R, L, N] and [R, L]).
- `greedy_ffn_order`: the iterative (oracle) variant for MLP blocks: repeatedly remove the block
  whose removal raises the suite loss least; the order of removal is the order of importance.
- `score_components`: all of the above for `scaling ablate` (the record's `importance`), with a
  progress bar over the suite evaluations of the single-head and greedy orders.
- `induction_scores`: per head, on repeated random token sequences `BOS r_1..r_m r_1..r_m`,
  *prefix matching* = mean attention from each token of the second copy to the token after its
  earlier copy, and *copying* = how much the head's output raises the logit of the tokens it
  attends to (direct logit attribution through the final norm with frozen statistics,
  attention-weighted, centred over the vocabulary; in logit units).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from scaling import mup
from scaling.evals import score as S
from scaling.model import Transformer, attention_probs

# Repeated-sequence tokens: the 62 ASCII letters and digits (bytes the byte-level models read).
REPEAT_ALPHABET = np.frombuffer(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", np.uint8
).astype(np.int32)


@functools.partial(jax.jit, static_argnums=0)
def _row_mask_grads(graphdef, state, x_RT, pos_RL, tgt_RL, used_RL):
    """|d NLL_r / d mask_r| for every row r: heads [R, L, N], FFNs [R, L]."""
    model = nnx.merge(graphdef, state)
    R, (L, N) = x_RT.shape[0], (model.cfg.n_layers, model.cfg.n_heads)

    def loss(hm_RLN, fm_RL):
        logits_RTV = model(x_RT, head_mask=hm_RLN, ffn_mask=fm_RL)
        sel_RLV = jnp.take_along_axis(logits_RTV, pos_RL[..., None], axis=1)
        logp_RLV = jax.nn.log_softmax(sel_RLV.astype(jnp.float32), axis=-1)
        tok_lp_RL = jnp.take_along_axis(logp_RLV, tgt_RL[..., None], axis=-1)[..., 0]
        return -jnp.sum(jnp.where(used_RL, tok_lp_RL, 0.0))  # rows are independent

    gh, gf = jax.grad(loss, argnums=(0, 1))(jnp.ones((R, L, N)), jnp.ones((R, L)))
    return jnp.abs(gh), jnp.abs(gf)


def mask_gradients(
    model: Transformer, groups: list[S._Group], seq_len: int
) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """Per (task, K): expected |gradient| of the item loss w.r.t. head masks [L, N] and FFN
    masks [L], averaged over the group's items."""
    graphdef, state = nnx.split(model)
    out = {}
    for g in groups:
        if not g.rows:
            continue
        order = sorted(range(len(g.rows)), key=lambda i: len(g.rows[i]))
        gh_sum, gf_sum = 0.0, 0.0
        for c in range(0, len(order), S.CHUNK_ROWS):
            idx = order[c : c + S.CHUNK_ROWS]
            need = max(len(g.rows[i]) - 1 for i in idx)
            width = min((w for w in (32, 64, 128, 256, 512) if w >= need), default=seq_len)
            width = min(width, seq_len)
            tokens, pos, tgt, used, _ = S._pack(
                [g.rows[i] for i in idx], [g.starts[i] for i in idx], width
            )
            gh, gf = _row_mask_grads(graphdef, state, tokens[:, :-1], pos, tgt, used)
            gh_sum = gh_sum + np.asarray(gh, np.float64).sum(0)
            gf_sum = gf_sum + np.asarray(gf, np.float64).sum(0)
        out[(g.task, g.k)] = (gh_sum / len(g.rows), gf_sum / len(g.rows))
    return out


def sequence_mask_gradients(
    model: Transformer, tokens_BT: np.ndarray, positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Expected |gradient| of the next-token NLL at `positions` (summed per sequence) w.r.t.
    head masks [L, N] and FFN masks [L], over the sequences of `tokens_BT` (e.g. the second
    copy of `repeated_sequences`)."""
    graphdef, state = nnx.split(model)
    B, P = tokens_BT.shape[0], len(positions)
    pos = np.broadcast_to(np.asarray(positions, np.int32), (B, P))
    tgt = np.take_along_axis(tokens_BT, pos + 1, axis=1).astype(np.int32)
    gh, gf = _row_mask_grads(graphdef, state, tokens_BT[:, :-1], pos, tgt, np.ones((B, P), bool))
    return np.asarray(gh, np.float64).mean(0), np.asarray(gf, np.float64).mean(0)


def aggregate(per_group: dict[tuple[str, int], np.ndarray]) -> np.ndarray:
    """One importance per component over all groups: each group's scores normalised to sum 1
    (so every task and shot count weighs the same), then averaged."""
    arrs = [a / a.sum() if a.sum() > 0 else a for a in per_group.values()]
    return np.mean(arrs, axis=0)


def single_head_order(
    n_layers: int, n_heads: int, suite_loss: Callable[[np.ndarray], float]
) -> tuple[list[int], list[float]]:
    """Heads ranked by their measured single-removal effect: `suite_loss(head_mask)` with each
    head alone masked (n_layers * n_heads evaluations), lowest loss first (least important;
    ties by index). Returns flat head indices (layer * n_heads + head) and those losses. A
    gradient ranks by a first-order estimate, which on tiny models put first heads whose
    removal alone cost 10% while others cost under 1%."""
    losses = []
    for i in range(n_layers * n_heads):
        mask = np.ones(n_layers * n_heads, np.float32)
        mask[i] = 0.0
        losses.append(float(suite_loss(mask.reshape(n_layers, n_heads))))
    order = sorted(range(len(losses)), key=lambda i: (losses[i], i))
    return order, [losses[i] for i in order]


def greedy_ffn_order(
    n_layers: int, suite_loss: Callable[[np.ndarray], float]
) -> tuple[list[int], list[float]]:
    """Oracle order of MLP blocks: at each step remove the block whose removal (on top of those
    already removed) gives the lowest `suite_loss(ffn_mask)`. Returns the layers in removal
    order (least important first) and the loss after each removal. n(n+1)/2 evaluations."""
    mask = np.ones(n_layers, np.float32)
    order: list[int] = []
    losses: list[float] = []
    for _ in range(n_layers):
        best: tuple[float, int] | None = None
        for layer in np.flatnonzero(mask):
            trial = mask.copy()
            trial[layer] = 0.0
            loss = suite_loss(trial)
            if best is None or loss < best[0]:
                best = (loss, int(layer))
        assert best is not None
        mask[best[1]] = 0.0
        order.append(best[1])
        losses.append(best[0])
    return order, losses


def score_components(
    model: Transformer, cfg, groups: list[S._Group], spec, score_fn, *, progress: bool = False,
    desc: str = "importance",
) -> dict[str, Any]:  # fmt: skip
    """The importance record of one run for an `AblateSpec`: mask gradients per group and
    aggregated, the head order (gradient, or `single`: each head removed alone) and the FFN
    order (`greedy` oracle, or gradient), and the induction scores. `score_fn(head_mask,
    ffn_mask)` scores the suite; its L*N (single) and L(L+1)/2 (greedy) calls, minutes on a
    large model, advance a progress bar."""
    grads = mask_gradients(model, groups, cfg.model.seq_len)
    heads = {f"{t}/{k}": gh for (t, k), (gh, _) in grads.items()}
    ffns = {f"{t}/{k}": gf for (t, k), (_, gf) in grads.items()}
    agg_h, agg_f = aggregate(heads), aggregate(ffns)
    out: dict[str, Any] = {
        "heads": {g: a.tolist() for g, a in heads.items()},
        "ffn": {g: a.tolist() for g, a in ffns.items()},
        "heads_aggregate": agg_h.tolist(),
        "ffn_aggregate": agg_f.tolist(),
        "head_order": np.argsort(agg_h.ravel(), kind="stable").tolist(),
        "ffn_order_method": spec.ffn_order,
    }
    L, N = cfg.model.n_layers, cfg.model.n_heads
    single, greedy = spec.head_order == "single", spec.ffn_order == "greedy"
    total = (L * N if single else 0) + (L * (L + 1) // 2 if greedy else 0)
    bar = tqdm(total=total, desc=desc, unit="eval", disable=not progress or total == 0)

    def suite_loss(fm: np.ndarray, hm: np.ndarray | None = None) -> float:
        res = score_fn(np.ones((L, N), np.float32) if hm is None else hm, fm)
        bar.update(1)
        return float(np.mean([-lp.mean() for lp, _, _ in res.values()]))

    with bar:
        if single:
            order, losses = single_head_order(
                L, N, lambda hm: suite_loss(np.ones(L, np.float32), hm)
            )
            out["head_order"], out["head_single_losses"] = order, losses
        if greedy:
            out["ffn_order"], out["ffn_greedy_losses"] = greedy_ffn_order(L, suite_loss)
        else:
            out["ffn_order"] = np.argsort(agg_f, kind="stable").tolist()
    out["head_order_method"] = spec.head_order
    ind = induction_scores(model, n_seq=spec.induction_seqs, seed=spec.seed)
    out["induction"] = {"prefix": ind["prefix"].tolist(), "copying": ind["copying"].tolist()}
    out["induction_half"] = ind["half"]
    return out


# ----------------------------------------------------------------------------- induction heads


def repeated_sequences(n_seq: int, half: int, seed: int = 0) -> np.ndarray:
    """[n_seq, 1 + 2*half] int32: BOS, then `half` random letters/digits, then the same again."""
    rng = np.random.default_rng([seed, 7])
    r = REPEAT_ALPHABET[rng.integers(0, len(REPEAT_ALPHABET), (n_seq, half))]
    bos = np.full((n_seq, 1), S.BOS, np.int32)
    return np.concatenate([bos, r, r], axis=1).astype(np.int32)


@nnx.jit
def _trace(model: Transformer, tokens_BT: jax.Array):
    """Attention weights [L, B, N, T, S], per-head outputs before `wo` [L, B, T, N, H], and the
    residual stream entering the final norm [B, T, D], all float32."""
    x = model.embed(tokens_BT)
    probs, heads = [], []
    for block in model.blocks:
        q, k, v = block.attn.qkv(block.attn_norm(x))
        cfg = block.attn.cfg
        p_BNTS = attention_probs(q, k, mup.attention_scale(cfg) if mup.is_mup(cfg) else None)
        v_BSNH = jnp.repeat(v, q.shape[2] // v.shape[2], axis=2).astype(jnp.float32)
        probs.append(p_BNTS)
        heads.append(jnp.einsum("bnts,bsnh->btnh", p_BNTS, v_BSNH))
        x = block(x)
    return jnp.stack(probs), jnp.stack(heads), x.astype(jnp.float32)


@nnx.jit
def _copying(model: Transformer, heads_LBTNH, x_BTD, probs_LBNTS, tokens_BT, query_Q):
    """Copying score [L, N]: attention-weighted, vocabulary-centred direct logit of the attended
    tokens, over query positions `query_Q`."""
    norm = model.final_norm
    xf = x_BTD - x_BTD.mean(-1, keepdims=True) if norm.kind == "layernorm" else x_BTD
    inv_BT1 = jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + norm.eps)
    scale_D = norm.scale[...].astype(jnp.float32)
    onehot_BSV = jax.nn.one_hot(tokens_BT, model.cfg.vocab_size, dtype=jnp.float32)
    scores = []
    for layer, block in enumerate(model.blocks):
        wo_NHD = block.attn.wo[...].astype(jnp.float32)
        c_BTND = jnp.einsum("btnh,nhd->btnd", heads_LBTNH[layer], wo_NHD)
        if norm.kind == "layernorm":
            c_BTND = c_BTND - c_BTND.mean(-1, keepdims=True)
        y_BTND = c_BTND * inv_BT1[:, :, None] * scale_D
        y_BTND = y_BTND[:, query_Q]
        B, Q, N, D = y_BTND.shape
        logits_BQNV = model.logits(y_BTND.reshape(B, Q * N, D)).reshape(B, Q, N, -1)
        centred = logits_BQNV - logits_BQNV.mean(-1, keepdims=True)
        # expected logit raise of the attended token: sum_s p[t, s] * centred[t, tokens[s]]
        attended_BNQV = jnp.einsum("bnqs,bsv->bnqv", probs_LBNTS[layer][:, :, query_Q], onehot_BSV)
        scores.append(jnp.einsum("bqnv,bnqv->n", centred, attended_BNQV) / (B * Q))
    return jnp.stack(scores)


def induction_scores(
    model: Transformer, *, n_seq: int = 16, half: int | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Prefix-matching and copying scores per head ([L, N] each) on `n_seq` repeated random
    sequences of `half` tokens (default: as long as model.seq_len allows, at most 48)."""
    half = half or min((model.cfg.seq_len - 1) // 2, 48)
    tokens = repeated_sequences(n_seq, half, seed)
    probs, heads, x = _trace(model, jnp.asarray(tokens))
    query = np.arange(half + 1, 2 * half + 1)  # every token of the second copy
    key = query - half + 1  # the token after the earlier copy of the query's token
    p = np.asarray(probs)  # [L, B, N, T, S]
    prefix = p[:, :, :, query, key].mean(axis=(1, 3))
    copying = _copying(model, heads, x, probs, jnp.asarray(tokens), jnp.asarray(query))
    return {"prefix": prefix, "copying": np.asarray(copying, np.float64), "half": half}
