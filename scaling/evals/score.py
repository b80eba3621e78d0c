"""Score a model on the few-shot suite: `evaluate(model, cfg) -> evals block` (batched, jitted).

Every (task, K) row is `BOS + prompt + target` right-padded with PAD into a fixed [R, T] chunk
(R = CHUNK_ROWS; T from a few widths <= model.seq_len, see `choose_widths`). Right padding keeps
every prompt at position 0, and the causal mask makes the padding invisible to the scored tokens.
ONE teacher-forced forward per chunk gives, per item:

- logprob:     sum of log p(target token) over the target " <answer>\\n" (nats);
- token_acc:   fraction of answer characters whose argmax is right (format bytes excluded);
- exact_match: the greedy completion equals the target. Computed exactly from the same forward:
  greedy decoding reproduces the target iff at every target position the argmax given the
  target prefix is the next target token (by induction over positions). `decode=True` runs the
  real fixed-length greedy loop instead (one full forward per generated token) and returns
  the same numbers at ~10x the cost; tests check the two agree.

Prompts that do not fit `seq_len` lose their farthest demonstrations first; `truncated[task][K]`
(only where it happened) gives the number of items affected and the mean demos actually kept.
An item whose bare query and target alone exceed `seq_len` is not scored: `dropped[task][K]`
counts them, a warning names them, and chance is over the items scored (training refuses a
task none of whose items fits, before compute). `majority` is the score of a predictor that knows
only the answers' distribution (scaling.evals.prior) on the same items.
Jitted functions are module-level (graphdef static), so runs with the same model shape reuse
the compilation of every chunk width.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scaling.config import RunConfig
from scaling.engine import replicated_inputs, to_host
from scaling.evals import prior
from scaling.evals import tasks as T
from scaling.fileio import warn

BOS, PAD = 256, 258  # scaling.data.tokenizer ids
COMPILE_FLOPS = 5e10  # one XLA:CPU compile of the scorer ~ 1 s ~ this many forward FLOPs
CHUNK_ROWS = 64
TARGET_SLOTS = 16  # max target tokens (" " + answer + "\n"); every task here needs <= 10


@dataclass
class _Group:
    """The encoded rows of one (task, K)."""

    task: str
    k: int
    rows: list[np.ndarray] = field(default_factory=list)  # BOS + prompt + target, int32
    starts: list[int] = field(default_factory=list)  # index of the target's first token
    truncated: int = 0  # items that lost demos (or, at K = 0, the instruction)
    dropped: int = 0  # items not scored: even the bare query + target exceed seq_len
    queries: list = field(default_factory=list)  # the scored items (T.Item), in row order
    shots_used: int = 0  # demonstrations kept, summed over items


def _encode(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("ascii"), np.uint8).astype(np.int32)


@functools.lru_cache(maxsize=64)
def _queries_and_demos(task: str, n_items: int, seed: int, k_max: int):
    """Test items and their k_max nearest-first demos; the K-shot demos are the first K (draws
    are sequential, so `demos_for(..., K)` is a prefix of `demos_for(..., k_max)`)."""
    queries = T.test_items(task, n_items, seed)
    return [(q, T.demos_for(task, q, i, k_max, seed)) for i, q in enumerate(queries)]


@functools.lru_cache(maxsize=256)
def build_group(task: str, k: int, n_items: int, seed: int, seq_len: int, k_max: int = 0) -> _Group:
    """Encode the K-shot rows of `task`, dropping farthest demos until each fits `seq_len`.
    Pass k_max = max(shots) so that all K of a task share one draw of demonstrations."""
    group = _Group(task, k)
    for query, all_demos in _queries_and_demos(task, n_items, seed, max(k, k_max)):
        demos = all_demos[:k]
        target = _encode(T.format_target(query))
        for used in range(k, -1, -1):
            prompt = T.format_prompt(task, demos[:used], query, instruction=k == 0)
            if 1 + len(prompt) + len(target) <= seq_len:
                break
        else:  # even the bare query does not fit: drop the instruction too, else skip
            prompt = T.format_prompt(task, [], query, instruction=False)
            if 1 + len(prompt) + len(target) > seq_len:
                group.dropped += 1
                continue
        group.truncated += int(used < k or (k == 0 and T.get_task(task).instruction not in prompt))
        group.shots_used += used
        p = np.concatenate([[BOS], _encode(prompt)]).astype(np.int32)
        group.rows.append(np.concatenate([p, target]))
        group.starts.append(len(p))
        group.queries.append(query)
    return group


def min_row_len(task: str, n_items: int, seed: int) -> int:
    """Tokens the shortest test item of `task` needs: BOS + bare query + target."""
    return min(
        1 + len(T.format_prompt(task, [], q, instruction=False)) + len(T.format_target(q))
        for q in T.test_items(task, n_items, seed)
    )


def choose_widths(lengths: list[int], seq_len: int, n_params: int, compiled: set[int]) -> list[int]:
    """Padded input width per chunk of CHUNK_ROWS rows (rows sorted by length; `lengths` are the
    input lengths). Each new width costs one compilation (~1 CPU-second, COMPILE_FLOPS) and each
    chunk costs R * width * 2 * n_params FLOPs, so small models get one width (seq_len) and larger
    ones also the finer powers of two when that saves more compute than the compile costs.
    Widths already in `compiled` are free."""
    options = sorted({w for w in (32, 64, 128, 256, 512, 1024) if w < seq_len} | {seq_len})
    needs = [max(lengths[c : c + CHUNK_ROWS]) for c in range(0, len(lengths), CHUNK_ROWS)]
    best: tuple[float, list[int]] | None = None
    for mask in range(1 << (len(options) - 1)):  # subsets that contain seq_len
        allowed = [w for i, w in enumerate(options[:-1]) if mask >> i & 1] + [seq_len]
        widths = [min((w for w in allowed if w >= need), default=seq_len) for need in needs]
        new = set(widths) - compiled
        cost = len(new) * COMPILE_FLOPS + sum(CHUNK_ROWS * w * 2 * n_params for w in widths)
        if best is None or cost < best[0]:
            best = (cost, widths)
    assert best is not None
    return best[1]


def _pack(rows: list[np.ndarray], starts: list[int], width: int):
    """Right-pad up to CHUNK_ROWS rows into [R, width+1] tokens, and describe the target as
    TARGET_SLOTS gather slots per row: the position whose logits predict each target token,
    that token, whether the slot is used, and whether it is an answer character."""
    R, L = CHUNK_ROWS, TARGET_SLOTS
    tokens = np.full((R, width + 1), PAD, np.int32)
    pos, tgt = np.zeros((R, L), np.int32), np.zeros((R, L), np.int32)
    used, ans = np.zeros((R, L), bool), np.zeros((R, L), bool)
    for i, (row, s) in enumerate(zip(rows, starts, strict=True)):
        tokens[i, : len(row)] = row
        n = len(row) - s  # target tokens are row[s:]: " ", answer..., "\n"
        if n > L:
            raise ValueError(f"target of {n} tokens exceeds TARGET_SLOTS = {L}")
        pos[i, :n] = np.arange(s - 1, len(row) - 1)  # logits at p predict token p + 1
        tgt[i, :n] = row[s:]
        used[i, :n] = True
        ans[i, 1 : n - 1] = True  # skip the leading space and the final newline
    return tokens, pos, tgt, used, ans


@functools.partial(jax.jit, static_argnums=0)
def _score_chunk(graphdef, state, x_RT, pos_RL, tgt_RL, used_RL, ans_RL, masks=(None, None)):
    """Per-row summed target logprob, answer token accuracy, and all-target-argmax-correct;
    softmax and argmax only at the gathered target positions. `masks` = (head_mask, ffn_mask)
    of `scaling.model.Transformer` (None: unmasked; mask values are traced, not recompiled)."""
    model = nnx.merge(graphdef, state)
    if all(m is None for m in masks):  # any callable model (tests score oracles)
        logits_RTV = model(x_RT)
    else:
        logits_RTV = model(x_RT, head_mask=masks[0], ffn_mask=masks[1])
    sel_RLV = jnp.take_along_axis(logits_RTV, pos_RL[..., None], axis=1).astype(jnp.float32)
    logp_RLV = jax.nn.log_softmax(sel_RLV, axis=-1)
    tok_lp_RL = jnp.take_along_axis(logp_RLV, tgt_RL[..., None], axis=-1)[..., 0]
    correct_RL = jnp.argmax(sel_RLV, axis=-1) == tgt_RL
    lp_R = jnp.sum(jnp.where(used_RL, tok_lp_RL, 0.0), axis=-1)
    n_ans_R = jnp.maximum(jnp.sum(ans_RL, axis=-1), 1)
    acc_R = jnp.sum(correct_RL & ans_RL, axis=-1) / n_ans_R
    em_R = jnp.all(correct_RL | ~used_RL, axis=-1)
    return lp_R, acc_R, em_R


@functools.partial(jax.jit, static_argnums=(0, 5))
def _greedy_chunk(graphdef, state, buf_RT, start_R, n_R, steps: int):
    """Greedy decoding: `steps` tokens per row continuing from position start_R[r] (one full
    forward per step: fine for CPU-sized models, no KV cache). Returns generated [R, steps];
    row r stops feeding its own tokens back after n_R[r] of them."""
    R, T_ = buf_RT.shape
    rows = jnp.arange(R)

    def step(j, carry):
        buf, gen_RS = carry
        logits_RTV = nnx.merge(graphdef, state)(buf)
        read = jnp.minimum(start_R - 1 + j, T_ - 1)
        nxt_R = jnp.argmax(logits_RTV[rows, read], axis=-1).astype(buf.dtype)
        pos = start_R + j
        write = jnp.minimum(pos, T_ - 1)
        ok_R = (j < n_R) & (pos < T_)
        buf = buf.at[rows, write].set(jnp.where(ok_R, nxt_R, buf[rows, write]))
        return buf, gen_RS.at[:, j].set(nxt_R)

    gen = jnp.zeros((R, steps), buf_RT.dtype)
    return jax.lax.fori_loop(0, steps, step, (buf_RT, gen))[1]


_COMPILED: dict[object, set[int]] = {}  # graphdef -> widths compiled in this process


def score_rows(
    model: nnx.Module,
    groups: list[_Group],
    seq_len: int,
    *,
    decode: bool = False,
    masks: tuple[jax.Array | None, jax.Array | None] = (None, None),
):
    """Per-item (logprob, token_acc, exact_match) arrays per (task, K). Rows of all groups are
    sorted by length and cut into chunks of CHUNK_ROWS rows; each chunk is padded to a width
    from `choose_widths` (one compiled shape per width, reused across runs of the same shape).
    `masks` (head_mask [L, N], ffn_mask [L]) ablate components; not with `decode`."""
    if decode and any(m is not None for m in masks):
        raise ValueError("score_rows: masks are not supported with decode=True")
    graphdef, state = nnx.split(model)
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    flat = [(gi, i) for gi, g in enumerate(groups) for i in range(len(g.rows))]
    flat.sort(key=lambda t: len(groups[t[0]].rows[t[1]]))
    lengths = [len(groups[gi].rows[i]) - 1 for gi, i in flat]
    compiled = _COMPILED.setdefault(graphdef, set())
    widths = choose_widths(lengths, seq_len, n_params, compiled)
    res = {gi: np.zeros((len(g.rows), 3)) for gi, g in enumerate(groups)}
    for c, width in zip(range(0, len(flat), CHUNK_ROWS), widths, strict=True):
        chunk = flat[c : c + CHUNK_ROWS]
        rows = [groups[gi].rows[i] for gi, i in chunk]
        starts = [groups[gi].starts[i] for gi, i in chunk]
        tokens, *target = _pack(rows, starts, width)
        inputs = replicated_inputs(state, [tokens[:, :-1], *target])  # multi-process: global
        out = _score_chunk(graphdef, state, *inputs, _replicate_masks(state, masks))
        lp, acc, em = (to_host(a) for a in out)
        compiled.add(width)
        if decode:
            em = _decode_exact_match(graphdef, state, tokens, target[2].sum(axis=1), starts)
        for j, (gi, i) in enumerate(chunk):
            res[gi][i] = lp[j], acc[j], em[j]
    return {(g.task, g.k): tuple(res[gi].T) for gi, g in enumerate(groups) if g.rows}


def _replicate_masks(state, masks):
    """Host masks as jit inputs beside `state` (global replicated arrays with several processes)."""
    return tuple(None if m is None else replicated_inputs(state, [np.asarray(m)])[0] for m in masks)


def _decode_exact_match(graphdef, state, tokens, n_tgt, starts) -> np.ndarray:
    """Exact match of the real greedy completion (decode length = longest target in chunk)."""
    n_tgt = n_tgt.astype(np.int32)
    start = np.ones(len(tokens), np.int32)
    start[: len(starts)] = starts
    cols = np.arange(tokens.shape[1] - 1)[None]
    prompt = np.where(cols < start[:, None], tokens[:, :-1], PAD)
    prompt, start_in, n_in = replicated_inputs(state, [prompt, start, n_tgt])
    gen = to_host(_greedy_chunk(graphdef, state, prompt, start_in, n_in, int(n_tgt.max())))
    want = [tokens[r, s : s + n] for r, (s, n) in enumerate(zip(start, n_tgt, strict=True))]
    return np.array([np.array_equal(gen[r, : len(w)], w) for r, w in enumerate(want)])


def evaluate(model: nnx.Module, cfg: RunConfig, *, decode: bool = False) -> dict:
    """Few-shot scores of `model` for every task in cfg.eval.tasks (all when empty) and every K
    in cfg.eval.shots on cfg.eval.n_items test items: the `evals` block of result.json
    (scores, the nominal `chance` and the answer-prior `majority` per task, ...)."""
    t0 = time.perf_counter()
    e, seq_len = cfg.eval, cfg.model.seq_len
    names = tuple(e.tasks) or tuple(T.TASKS)
    for name in names:
        T.get_task(name)  # UserError on an unknown task, before any work
    k_max = max(e.shots, default=0)
    groups = [build_group(t, k, e.n_items, e.seed, seq_len, k_max) for t in names for k in e.shots]
    results = score_rows(model, groups, seq_len, decode=decode)
    scores: dict[str, dict[str, dict]] = {}
    truncated: dict[str, dict[str, dict]] = {}
    dropped: dict[str, dict[str, int]] = {}
    scored: dict[str, list] = {}  # task -> items scored (the same for every K)
    for g in groups:
        if g.dropped:
            dropped.setdefault(g.task, {})[str(g.k)] = g.dropped
        if (g.task, g.k) not in results:
            continue  # no item fits seq_len
        scored.setdefault(g.task, g.queries)
        lp, acc, em = results[(g.task, g.k)]
        scores.setdefault(g.task, {})[str(g.k)] = {
            "exact_match": float(em.mean()),
            "token_acc": float(acc.mean()),
            "logprob": float(lp.mean()),
            "n_items": len(g.rows),
        }
        if g.truncated:
            truncated.setdefault(g.task, {})[str(g.k)] = {
                "n_items": g.truncated,
                "mean_shots": g.shots_used / max(len(g.rows), 1),
            }
    chance = {t: T.chance(t, items) for t, items in scored.items()}  # over the items scored
    majority = {t: prior.majority(t, items) for t, items in scored.items()}
    _warn_dropped(dropped, e.n_items, seq_len)
    return {
        "scores": scores,
        "chance": chance,
        "majority": majority,
        "shots": [int(k) for k in e.shots],
        "seconds": time.perf_counter() - t0,
        "truncated": truncated,
        "dropped": dropped,
    }


def _warn_dropped(dropped: dict[str, dict[str, int]], n_items: int, seq_len: int) -> None:
    """One stderr line naming the tasks with items too long for seq_len (not scored)."""
    if not dropped:
        return
    worst = {t: max(by_k.values()) for t, by_k in dropped.items()}
    what = ", ".join(f"{t} {n}/{n_items}" for t, n in sorted(worst.items()))
    warn(
        f"eval items longer than model.seq_len = {seq_len} were not scored ({what}); "
        f"scores and chance cover the rest (evals.dropped has the counts per task and K)"
    )
