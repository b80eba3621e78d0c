"""Packed training windows whose batch for step k is a pure function of (seed, k, batch_size).

The train split is one token stream (documents as BOS + bytes + EOS, concatenated). A window is
W = seq_len + 1 consecutive tokens (inputs = w[:-1], targets = w[1:]). Global row r of the
training stream (row j of step k is r = k * batch_size + j) lives in epoch e = r // n_windows:

    offset_e = Generator([seed, e, 1]).integers(W)        # shifts the window grid per epoch
    perm_e   = Generator([seed, e, 0]).permutation(n_windows)
    row r    = tokens[offset_e + perm_e[r % n_windows] * W : ... + W]

so within an epoch every window is seen once, in random order, and each epoch cuts the stream
at different places. Nothing depends on earlier calls: resuming at step k (or asking for any
k in any order) reproduces the stream exactly, and the rows of step k with batch B are the
global rows k*B ... k*B+B-1.

Task mix: for step k, Generator([seed, k, MIX]) draws n = floor(task_mix * B + u), u ~ U[0,1)
(expected fraction exactly task_mix) and which rows; each such row is replaced by few-shot task
text from `scaling.evals.tasks.mix_text(Generator([seed, k, j, MIX]), n_bytes)`, tokenized as
BOS + bytes + EOS documents and cut to W. The replaced stream windows are skipped, not shifted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from scaling.data import tokenizer

_PERM, _OFFSET = 0, 1
_MIX = 0x6D6978  # "mix"

MixFn = Callable[[np.random.Generator, int], bytes]


def _default_mix_text(rng: np.random.Generator, n_bytes: int) -> bytes:
    from scaling.evals.tasks import mix_text  # lazy: only when task_mix > 0

    return mix_text(rng, n_bytes)


class TokenData:
    """Training batches and fixed validation windows over packed token streams."""

    def __init__(
        self,
        train_tokens: np.ndarray,
        val_tokens: np.ndarray,
        seq_len: int,
        *,
        task_mix: float = 0.0,
        info: dict[str, Any] | None = None,
        mix_fn: MixFn | None = None,
        encode_document: Callable[[str], np.ndarray] | None = None,
    ) -> None:
        self.seq_len = int(seq_len)
        self.window = self.seq_len + 1
        self.train_tokens = train_tokens
        self.val_tokens = val_tokens
        self.task_mix = float(task_mix)
        # Usable windows for any grid offset in [0, W): offset + n * W <= n_tokens.
        self.n_windows = (int(train_tokens.shape[0]) - (self.window - 1)) // self.window
        if self.n_windows < 1:
            raise ValueError(f"train stream of {train_tokens.shape[0]} tokens < one window")
        self.info = dict(info or {})
        self._mix_fn = mix_fn
        self._encode = encode_document or tokenizer.encode_document  # the run's tokenizer
        self._epochs: OrderedDict[tuple[int, int], tuple[np.ndarray, int]] = OrderedDict()

    # ------------------------------------------------------------------ training stream
    def _epoch(self, seed: int, epoch: int) -> tuple[np.ndarray, int]:
        key = (seed, epoch)
        if key not in self._epochs:
            perm = np.random.default_rng([seed, epoch, _PERM]).permutation(self.n_windows)
            offset = int(np.random.default_rng([seed, epoch, _OFFSET]).integers(self.window))
            self._epochs[key] = (perm, offset)
            while len(self._epochs) > 2:
                self._epochs.popitem(last=False)
        return self._epochs[key]

    def row_starts(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        """Start offsets in the train stream of the stream windows of step `step` (int64 [B])."""
        rows = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
        epochs = rows // self.n_windows
        starts = np.empty_like(rows)
        for e in np.unique(epochs):
            perm, offset = self._epoch(seed, int(e))
            sel = epochs == e
            starts[sel] = offset + perm[rows[sel] % self.n_windows] * self.window
        return starts

    def mix_rows(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        """Sorted row indices of step `step` that hold task text instead of corpus windows."""
        if self.task_mix <= 0:
            return np.zeros(0, dtype=np.int64)
        rng = np.random.default_rng([seed, step, _MIX])
        n = min(batch_size, int(np.floor(self.task_mix * batch_size + rng.random())))
        return np.sort(rng.choice(batch_size, size=n, replace=False)).astype(np.int64)

    def _mix_row(self, seed: int, step: int, j: int) -> np.ndarray:
        rng = np.random.default_rng([seed, step, j, _MIX])
        fn = self._mix_fn or _default_mix_text
        parts, n = [], 0
        while n < self.window:
            ids = self._encode(fn(rng, self.window - 1))
            parts.append(ids)
            n += ids.shape[0]
        return np.concatenate(parts)[: self.window]

    def batch(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        """int32 [batch_size, seq_len + 1] for training step `step`; a pure function of its args."""
        if step < 0 or batch_size <= 0:
            raise ValueError(f"batch(step={step}, batch_size={batch_size}): need step >= 0, B > 0")
        starts = self.row_starts(step, batch_size, seed)
        idx = starts[:, None] + np.arange(self.window, dtype=np.int64)[None, :]
        out = np.asarray(self.train_tokens[idx], dtype=np.int32)
        for j in self.mix_rows(step, batch_size, seed):
            out[j] = self._mix_row(seed, step, int(j))
        return out

    # ------------------------------------------------------------------ validation
    @property
    def n_val_windows(self) -> int:
        return (int(self.val_tokens.shape[0]) - 1) // self.seq_len

    def val_windows(self) -> np.ndarray:
        """All validation windows, int32 [n, seq_len + 1], overlapping by one token so every
        held-out token after the first is predicted exactly once."""
        n, t = self.n_val_windows, self.seq_len
        idx = np.arange(n, dtype=np.int64)[:, None] * t + np.arange(t + 1)[None, :]
        return np.asarray(self.val_tokens[idx], dtype=np.int32)

    def val_batches(self, batch_size: int, *, pad: bool = False) -> list[np.ndarray]:
        """The fixed validation windows in batches of `batch_size` (the last may be smaller).

        With `pad=True` the last batch is filled up to `batch_size` with all-PAD rows (so every
        batch has one shape for sharding); the loss must then mask targets equal to PAD.
        """
        wins = self.val_windows()
        out = [wins[i : i + batch_size] for i in range(0, wins.shape[0], batch_size)]
        if pad and out and out[-1].shape[0] < batch_size:
            fill = np.full((batch_size - out[-1].shape[0], self.window), tokenizer.PAD, np.int32)
            out[-1] = np.concatenate([out[-1], fill])
        return out
