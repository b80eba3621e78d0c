"""Few-shot task suite: deterministic generators, disjoint item pools, GPT-3 prompt format.

Pure Python + numpy (no JAX), so the data pipeline can import it for the training mix.

Format (every byte matters for a byte-level model)::

    K = 0:  "<instruction>\\n<query> ->"          target " <answer>\\n"
    K > 0:  "<d_K> -> <a_K>\\n ... <d_1> -> <a_1>\\n<query> ->"   target " <answer>\\n"

Demonstration d_1 is the one nearest the query; truncation drops the farthest ones first.
Scoring feeds BOS + prompt + target (see scaling.evals.score).

Pools: every task has a canonical key per item (the string the answer is a function of, up to
symmetry: sorted operands for addition, the unscrambled word, the string or its reverse). A fixed,
seed-independent hash of (task, key) puts the item in exactly one pool: "mix" (60% of the key
space, training text), "demo" (20%, demonstrations) or "test" (20%, queries). So no test item can
appear in the training mix or as a demonstration, whatever the seeds. Demonstrations are also
chosen so that no demo's answer equals the query's answer: copying an answer from the prompt
scores exactly 0 (except on `copy`, where copying the query is the task).

Held-out tasks (`HELD_OUT_TASKS`, e.g. `upper`) are never in the pre-training mix nor in the
default few-shot suite: they exist for `scaling finetune`, which trains on a task's training pool
("mix", `TRAIN_POOL`) and scores its test pool, so fine-tuning measures transfer to a task the
model never saw. A task with `trainable=False` is eval-only: it has no training pool to draw from.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import sysconfig
import tokenize
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from scaling.errors import DiskFullError, UserError
from scaling.fileio import atomic_write

POOLS = ("mix", "demo", "test")
TRAIN_POOL = "mix"  # the training pool: pre-training mix text and fine-tuning examples
_POOL_EDGES = (60, 80, 100)  # hash % 100 < 60: mix, < 80: demo, else test
SEP = " -> "
LETTERS = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
MIX_MAX_SHOTS = 4  # training-mix episodes use K uniform in 0..MIX_MAX_SHOTS
_MAX_TRIES = 200_000


@dataclass(frozen=True)
class Item:
    """One task instance: `input -> output`; `key` decides its pool."""

    input: str
    output: str
    key: str


@dataclass(frozen=True)
class Task:
    """A task: an instruction line (zero-shot), an item sampler and its chance model.

    `alphabet` is the set of answer characters; chance token accuracy is 1/len(alphabet) and
    chance exact match is the mean of len(alphabet)**-len(answer), unless `fixed_chance` is set
    (a task whose natural guess is not uniform over the alphabet, e.g. key-value recall)."""

    name: str
    instruction: str
    alphabet: str
    sample: Callable[[np.random.Generator], Item]
    fixed_chance: float | None = None
    trainable: bool = True  # False: eval-only, no training pool (fine-tuning refuses it)


# ----------------------------------------------------------------------------- samplers


def _letters(rng: np.random.Generator, lo: int, hi: int) -> str:
    n = int(rng.integers(lo, hi + 1))
    return "".join(LETTERS[i] for i in rng.integers(0, 26, n))


def _copy(rng: np.random.Generator) -> Item:
    s = _letters(rng, 3, 6)
    return Item(s, s, s)


def _reverse(rng: np.random.Generator) -> Item:
    s = _letters(rng, 3, 6)
    return Item(s, s[::-1], min(s, s[::-1]))


def _adder(lo: int, hi: int) -> Callable[[np.random.Generator], Item]:
    def sample(rng: np.random.Generator) -> Item:
        a, b = (int(x) for x in rng.integers(lo, hi + 1, 2))
        return Item(f"{a}+{b}", str(a + b), f"{min(a, b)}+{max(a, b)}")

    return sample


KV_PAIRS = 3


def _kv_recall(rng: np.random.Generator) -> Item:
    keys = [LETTERS[i] for i in rng.choice(26, KV_PAIRS, replace=False)]
    vals = [DIGITS[i] for i in rng.choice(10, KV_PAIRS, replace=False)]
    q = int(rng.integers(KV_PAIRS))
    text = " ".join(f"{k}:{v}" for k, v in zip(keys, vals, strict=True)) + f" {keys[q]}"
    return Item(text, vals[q], text)


@lru_cache(maxsize=1)
def identifiers() -> tuple[str, ...]:
    """Lowercase alphabetic identifiers of 5-8 letters (>= 2 distinct letters) that occur as
    Python NAME tokens in the top-level stdlib modules of the running interpreter, sorted.

    Tokenizing the stdlib takes about 5 CPU-s, so the list is kept on disk beside the prepared
    data (`<data dir>/identifiers/<key>.json`), keyed by the interpreter version, the stdlib
    path and every module's size and mtime; any change there recomputes it."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    paths = sorted(stdlib.glob("*.py"))
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    key = hashlib.sha256(repr((sys.version, str(stdlib), stats)).encode()).hexdigest()[:16]
    from scaling.config import DataConfig  # noqa: PLC0415
    from scaling.data.sources import default_data_dir  # noqa: PLC0415

    cached = default_data_dir(DataConfig()) / "identifiers" / f"{key}.json"
    try:
        return tuple(json.loads(cached.read_text()))
    except (OSError, ValueError):
        pass
    words = _scan_identifiers(stdlib, paths)
    try:
        atomic_write(cached, json.dumps(words))
    except (OSError, DiskFullError):
        pass  # a read-only or full cache dir: computed again next time
    return words


def _scan_identifiers(stdlib: Path, paths: list[Path]) -> tuple[str, ...]:
    names: set[str] = set()
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
            for tok in tokenize.generate_tokens(io.StringIO(text).readline):
                if tok.type == tokenize.NAME:
                    names.add(tok.string)
        except (tokenize.TokenError, SyntaxError, OSError):
            continue
    words = sorted(
        w
        for w in names
        if w.isascii() and w.isalpha() and w.islower() and 5 <= len(w) <= 8 and len(set(w)) > 1
    )
    if len(words) < 100:
        raise UserError(f"only {len(words)} identifiers found under {stdlib}; need >= 100")
    return tuple(words)


def _unscramble(rng: np.random.Generator) -> Item:
    words = identifiers()
    word = words[int(rng.integers(len(words)))]
    while True:
        scrambled = "".join(word[i] for i in rng.permutation(len(word)))
        if scrambled != word:
            return Item(scrambled, word, word)


UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _upper(rng: np.random.Generator) -> Item:
    s = _letters(rng, 3, 6)
    return Item(s, s.upper(), s)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("copy", "Copy the text:", LETTERS, _copy),
        Task("reverse", "Reverse the text:", LETTERS, _reverse),
        Task("add2", "Add the numbers:", DIGITS, _adder(10, 99)),
        Task("add3", "Add the numbers:", DIGITS, _adder(100, 999)),
        Task("kv_recall", "Look up the last key:", DIGITS, _kv_recall, 1 / KV_PAIRS),
        Task("unscramble", "Unscramble the word:", LETTERS, _unscramble),
    )
}


def _repeat(rng: np.random.Generator) -> Item:
    s = _letters(rng, 8, 12)
    return Item(s, s, s)


# Opt-in tasks: scored when named (eval.tasks, `scaling ablate --tasks`), never part of the
# default suite or the training mix (adding them there would change every existing run's data).
# `repeat` is the repeated-sequence copy task of the induction-head literature in this format:
# after the first answer letter, every letter is predictable by attending to the token after
# its earlier copy in the query, so token accuracy measures induction and exact match also
# needs the first letter (knowing the task from the instruction or the demonstrations).
OPT_IN: dict[str, Task] = {"repeat": Task("repeat", "Repeat the text:", LETTERS, _repeat)}

# Fine-tuning-only tasks: never in the pre-training mix or the default few-shot suite.
HELD_OUT_TASKS: dict[str, Task] = {
    t.name: t for t in (Task("upper", "Uppercase the text:", UPPER, _upper),)
}


def get_task(name: str) -> Task:
    if name in TASKS:
        return TASKS[name]
    if name in OPT_IN:
        return OPT_IN[name]
    if name not in HELD_OUT_TASKS:
        raise UserError(
            f"unknown eval task {name!r}; choose from {', '.join(TASKS)} (or opt-in: "
            f"{', '.join(OPT_IN)}; fine-tuning only: {', '.join(HELD_OUT_TASKS)})"
        )
    return HELD_OUT_TASKS[name]


def require_byte_tokenizer(tokenizer: str, what: str) -> None:
    """UserError for a run trained with a SentencePiece model (`data.tokenizer` set): the task
    suite is scored and fine-tuned on as UTF-8 bytes (scaling.evals.score), which would be
    nonsense ids to such a model, not an error."""
    if tokenizer:
        raise UserError(
            f"{what}: data.tokenizer = {tokenizer!r} is a SentencePiece model, but the few-shot "
            f"tasks encode with the byte tokenizer only; use a run trained with bytes "
            f'(data.tokenizer = "")'
        )


# ----------------------------------------------------------------------------- pools


def pool_of(task: str, key: str) -> str:
    """The pool ("mix" | "demo" | "test") of an item, from a fixed hash of (task, key)."""
    h = int.from_bytes(hashlib.blake2b(f"{task}\x00{key}".encode(), digest_size=8).digest())
    bucket = h % 100
    return next(p for p, edge in zip(POOLS, _POOL_EDGES, strict=True) if bucket < edge)


def _task_id(name: str) -> int:
    return zlib.crc32(name.encode())


def draw(
    task: str, pool: str, rng: np.random.Generator, n: int, *, avoid: Callable[[Item], bool] | None
) -> list[Item]:
    """`n` items of `task` with distinct keys from `pool`, skipping items where `avoid(item)`."""
    t = get_task(task)
    items: list[Item] = []
    seen: set[str] = set()
    for _ in range(_MAX_TRIES):
        if len(items) == n:
            return items
        item = t.sample(rng)
        if item.key in seen or pool_of(task, item.key) != pool or (avoid and avoid(item)):
            continue
        seen.add(item.key)
        items.append(item)
    if len(items) == n:
        return items
    raise PoolTooSmall(task, pool, n, len(items))


class PoolTooSmall(UserError):
    """`draw` found only `found` < `want` distinct usable items of `task` in `pool`."""

    def __init__(self, task: str, pool: str, want: int, found: int):
        super().__init__(
            f"task {task!r}: could not draw {want} distinct {pool}-pool items (found {found}); "
            f"lower n"
        )
        self.task, self.pool, self.want, self.found = task, pool, want, found


def test_items(task: str, n: int, seed: int) -> list[Item]:
    """The `n` test queries of `task` for eval seed `seed` (distinct; the same for every K)."""
    rng = np.random.default_rng([seed, _task_id(task), 2])
    return draw(task, "test", rng, n, avoid=None)


def train_items(task: str, n: int, seed: int) -> list[Item]:
    """`n` distinct training-pool items of `task` (fine-tuning data), nested in `n`: the first
    64 of a 256-item draw are the 64-item draw. UserError for an eval-only task."""
    if not get_task(task).trainable:
        raise UserError(
            f"task {task!r} is eval-only (it has no training pool); fine-tune on one of "
            f"{', '.join(t for t in (*TASKS, *OPT_IN, *HELD_OUT_TASKS) if get_task(t).trainable)}"
        )
    rng = np.random.default_rng([seed, _task_id(task), 3])
    return draw(task, TRAIN_POOL, rng, n, avoid=None)


def demos_for(task: str, query: Item, index: int, k: int, seed: int) -> list[Item]:
    """`k` distinct demo-pool items for query number `index`, nearest-first: the K-shot prompt of
    this query uses the first K, so the 1-shot demo is also the last demo of the 4-shot prompt.
    No demo's answer equals the query's answer."""
    if k == 0:
        return []
    rng = np.random.default_rng([seed, _task_id(task), 1, index])
    return draw(task, "demo", rng, k, avoid=lambda d: d.output == query.output)


# ----------------------------------------------------------------------------- formatting


def format_prompt(task: str, demos: list[Item], query: Item, *, instruction: bool) -> str:
    """GPT-3 style prompt; `demos` nearest-first (they are written farthest-first)."""
    lines = [f"{d.input}{SEP}{d.output}\n" for d in reversed(demos)]
    head = f"{get_task(task).instruction}\n" if instruction else ""
    return head + "".join(lines) + f"{query.input}{SEP.rstrip()}"


def format_target(item: Item) -> str:
    """What the model must produce after the prompt: a space, the answer, a newline."""
    return f" {item.output}\n"


def chance(task: str, items: list[Item]) -> dict[str, float]:
    """Chance exact match and token accuracy of a uniform guesser over the answer alphabet
    (answer length known), averaged over `items`; key-value recall uses 1/KV_PAIRS (a model
    that returns one of the listed values at random)."""
    t = get_task(task)
    if t.fixed_chance is not None:
        return {"exact_match": t.fixed_chance, "token_acc": t.fixed_chance}
    a = len(t.alphabet)
    em = float(np.mean([a ** -len(it.output) for it in items])) if items else 0.0
    return {"exact_match": em, "token_acc": 1.0 / a}


# ----------------------------------------------------------------------------- training mix


def mix_episode(rng: np.random.Generator, tasks: tuple[str, ...] = ()) -> str:
    """One training episode from the mix pool: K ~ U{0..4} demos + query + target."""
    names = tasks or tuple(TASKS)
    task = names[int(rng.integers(len(names)))]
    k = int(rng.integers(MIX_MAX_SHOTS + 1))
    (query,) = draw(task, "mix", rng, 1, avoid=None)
    demos = draw(
        task, "mix", rng, k, avoid=lambda d: d.output == query.output or d.key == query.key
    )
    return format_prompt(task, demos, query, instruction=k == 0) + format_target(query)


def mix_text(rng: np.random.Generator, n_bytes: int) -> bytes:
    """Exactly `n_bytes` of task-formatted training text (mix pool only): episodes separated by a
    blank line, starting at an episode boundary, cut at `n_bytes`. Pure function of `rng` state."""
    if n_bytes <= 0:
        return b""
    parts: list[str] = []
    size = 0
    while size < n_bytes:
        episode = mix_episode(rng) + "\n"
        parts.append(episode)
        size += len(episode)
    return "".join(parts).encode("ascii")[:n_bytes]
