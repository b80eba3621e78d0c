"""Tokenizers behind one small interface: UTF-8 bytes (default) or a local SentencePiece model.

`data.tokenizer = ""` keeps the byte tokenizer (`scaling.data.tokenizer`). A path names a
SentencePiece `.model` file trained locally by `scaling tokenizer train` (nothing is downloaded).
Its special ids are laid out so the engine's conventions hold for every tokenizer: unk 0, BOS 256,
EOS 257 and PAD 258 (the id the loss masks), the same as the byte tokenizer's specials, so a
vocabulary needs at least 260 pieces. The model is trained for exact round trips: identity
normalisation, no dummy prefix, whitespace kept, and byte fallback for anything unseen.

`token_bytes` gives the UTF-8 length of every id (0 for specials), from which bits per byte are
computed: total validation nats / (validation bytes x ln 2). That makes runs with different
tokenizers comparable, and fittable together.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from scaling.data import tokenizer as byte_tok
from scaling.errors import UserError

UNK, BOS, EOS, PAD = 0, byte_tok.BOS, byte_tok.EOS, byte_tok.PAD
MIN_VOCAB = PAD + 2
MAX_VOCAB = 1 << 16  # ids are stored as uint16


@dataclass(frozen=True)
class Tok:
    """What the data pipeline needs from a tokenizer."""

    id: str  # part of every token-cache key and of the run record
    vocab_size: int
    path: str  # "" for bytes
    sha256: str | None  # of the .model file

    def encode_document(self, text: str | bytes) -> np.ndarray:
        if not self.path:
            return byte_tok.encode_document(text)
        s = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
        ids = _processor(self.path, self.sha256).encode(s)
        return np.asarray([BOS, *ids, EOS], dtype=np.uint16)

    def decode(self, ids) -> str:
        if not self.path:
            return byte_tok.decode(ids)
        arr = [int(i) for i in np.asarray(ids).ravel() if int(i) not in (BOS, EOS, PAD)]
        return _processor(self.path, self.sha256).decode(arr)

    def token_bytes(self) -> np.ndarray:
        """UTF-8 bytes each id stands for (int64 [vocab_size]); 0 for specials."""
        return _token_bytes(self.path, self.sha256)


BYTES = Tok(byte_tok.TOKENIZER_ID, byte_tok.VOCAB_SIZE, "", None)


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def get_tokenizer(path: str) -> Tok:
    """The byte tokenizer for "", else the SentencePiece model at `path` (UserError if bad)."""
    if not path:
        return BYTES
    p = Path(path).expanduser()
    if p.is_dir():  # e.g. the folder `scaling tokenizer train` saved into
        models = ", ".join(sorted(m.name for m in p.glob("*.model"))[:3]) or "none"
        raise UserError(
            f"data.tokenizer = {path!r} is a directory, not a SentencePiece .model file; point "
            f"it at the .model file (in this directory: {models})"
        )
    if not p.is_file():
        raise UserError(
            f"data.tokenizer = {path!r}: no such file; train one with `scaling tokenizer train "
            f'--vocab 4096 CONFIG` or set data.tokenizer = "" for bytes'
        )
    digest = file_sha256(p)
    proc = _processor(str(p.resolve()), digest)
    if proc.pad_id() != PAD or proc.bos_id() != BOS or proc.eos_id() != EOS:
        raise UserError(
            f"data.tokenizer = {path!r} was not trained by `scaling tokenizer train` (its "
            f"specials are bos {proc.bos_id()}, eos {proc.eos_id()}, pad {proc.pad_id()}; "
            f"need {BOS}, {EOS}, {PAD}); retrain it with that command"
        )
    if proc.get_piece_size() > MAX_VOCAB:  # its ids would not fit the uint16 token caches
        raise UserError(
            f"data.tokenizer = {path!r} has {proc.get_piece_size()} pieces; token ids are stored "
            f"as uint16, so at most {MAX_VOCAB}: retrain it with `scaling tokenizer train "
            f"--vocab {MAX_VOCAB}` (or less)"
        )
    return Tok(f"spm-{digest[:16]}", int(proc.get_piece_size()), str(p.resolve()), digest)


@lru_cache(maxsize=8)
def _processor(path: str, sha256: str | None):
    import sentencepiece as sp  # noqa: PLC0415

    try:
        return sp.SentencePieceProcessor(model_file=path)
    except (OSError, RuntimeError) as e:
        raise UserError(
            f"data.tokenizer = {path!r} is not a SentencePiece model ({e}); point it at a "
            f"valid .model file, retrain one with `scaling tokenizer train --vocab 4096 CONFIG`, "
            f'or set data.tokenizer = "" for bytes'
        ) from e


@lru_cache(maxsize=8)
def _token_bytes(path: str, sha256: str | None) -> np.ndarray:
    if not path:
        out = np.ones(byte_tok.VOCAB_SIZE, dtype=np.int64)
        out[[BOS, EOS, PAD]] = 0
        return out
    proc = _processor(path, sha256)
    out = np.zeros(proc.get_piece_size(), dtype=np.int64)
    for i in range(proc.get_piece_size()):
        if proc.is_control(i) or proc.is_unknown(i):
            continue
        if proc.is_byte(i):
            out[i] = 1
        else:
            out[i] = len(proc.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
    return out


def bits_per_byte(nats_per_token: float, n_tokens: int, n_bytes: int) -> float | None:
    """Mean loss over `n_tokens` targets that spell `n_bytes` bytes, in bits per byte."""
    if n_bytes <= 0 or nats_per_token is None or not math.isfinite(nats_per_token):
        return None
    return nats_per_token * n_tokens / (n_bytes * math.log(2))


def train_sentencepiece(
    lines, out_prefix: Path, vocab: int, model_type: str = "bpe", max_lines: int = 2_000_000
) -> Path:
    """Train a round-trip-exact SentencePiece model on an iterator of text lines."""
    import sentencepiece as sp  # noqa: PLC0415

    if vocab < MIN_VOCAB:
        raise UserError(f"--vocab {vocab}: needs at least {MIN_VOCAB} (the ids below are reserved)")
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    try:
        sp.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_prefix=str(out_prefix),
            vocab_size=vocab,
            model_type=model_type,
            character_coverage=1.0,
            byte_fallback=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            split_digits=True,
            allow_whitespace_only_pieces=True,
            max_sentence_length=1 << 16,
            input_sentence_size=max_lines,
            shuffle_input_sentence=True,
            unk_id=UNK,
            bos_id=BOS,
            eos_id=EOS,
            pad_id=PAD,
            user_defined_symbols=["\n", "\t"],
            minloglevel=2,
        )
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        most = re.search(r"Vocabulary size too high \((\d+)\).*<= (\d+)", first)
        if most:  # the corpus has fewer distinct pieces than asked for
            raise UserError(
                f"--vocab {vocab}: this corpus yields at most {most.group(2)} pieces; use "
                f"--vocab {most.group(2)} or less, or train on more text"
            ) from e
        least = re.search(r"smaller than required_chars\. \d+ vs (\d+)", first)
        if least:  # every distinct character (and each special and byte) needs an id
            raise UserError(
                f"--vocab {vocab}: this corpus needs {least.group(1)} ids for its distinct "
                f"characters, the specials and the 256 bytes; use --vocab {least.group(1)} or more"
            ) from e
        raise UserError(f"SentencePiece training failed: {first[:200]}") from e
    return out_prefix.with_suffix(".model")
