"""Data: byte tokenizer, the embedded `python_source` TFDS corpus, packing, resumable batches.

`open_dataset(cfg.data, seq_len)` is the one entry point the trainer needs. Importing this
package does not import TFDS; that happens on the first `open_dataset`.
"""

from __future__ import annotations

from scaling.config import DataConfig
from scaling.data import spm, tokenizer
from scaling.data.packing import MixFn, TokenData
from scaling.data.sources import TEXT_FILES, default_data_dir, get_builder, load_split
from scaling.errors import UserError
from scaling.validation import check_disjoint_splits

BATCHING = "epoch-permuted-windows-v1"  # see scaling.data.packing; bump if the scheme changes

__all__ = [
    "TokenData",
    "check_disjoint_splits",
    "check_resume",
    "data_identity",
    "default_data_dir",
    "open_dataset",
    "tokenizer",
    "val_bpb",
]


def open_dataset(
    cfg: DataConfig, seq_len: int, *, progress: bool = True, mix_fn: MixFn | None = None
) -> TokenData:
    """Prepare (embedded corpus only) or find `cfg.dataset`, tokenize it once, return batches.

    `mix_fn(rng, n_bytes) -> bytes` replaces `scaling.evals.tasks.mix_text` (tests use it).
    Raises UserError for an unknown or unprepared dataset, a bad split or text key, or too
    little data for `seq_len` / `cfg.val_tokens`.
    """
    check_disjoint_splits(cfg.train_split, cfg.val_split)
    tok = spm.get_tokenizer(cfg.tokenizer)  # UserError: missing or foreign model file
    builder = get_builder(cfg, progress=progress)
    label = cfg.dataset
    feature = "text" if cfg.dataset == TEXT_FILES else cfg.text_key  # text_key: the JSONL field
    kw = dict(progress=progress, label=label, tok=tok)
    train = load_split(builder, cfg.train_split, feature, **kw)
    val = load_split(builder, cfg.val_split, feature, **kw)
    _check_sizes(cfg, seq_len, train.n_tokens, val.n_tokens)
    meta = dict(builder.info.metadata or {})
    info = {
        "dataset": cfg.dataset,
        "tfds_name": builder.info.full_name,
        "version": str(builder.info.version),
        "manifest_sha256": meta.get("manifest_sha256"),
        "python_version": meta.get("python_version"),
        "n_files": meta.get("n_files"),
        "n_skipped_non_utf8": meta.get("n_skipped_non_utf8"),
        "paths": list(cfg.paths) or None,
        "train_split": cfg.train_split,
        "val_split": cfg.val_split,
        "n_train_docs": train.n_docs,
        "n_train_tokens": train.n_tokens,
        "n_val_docs": val.n_docs,
        "n_val_split_tokens": val.n_tokens,
        "n_val_tokens": int(cfg.val_tokens),
        "task_mix": float(cfg.task_mix),
        "seq_len": int(seq_len),
        "tokenizer": tok.id,
        "tokenizer_path": tok.path or None,
        "tokenizer_sha256": tok.sha256,
        "vocab_size": tok.vocab_size,
        "batching": BATCHING,
        "data_dir": str(default_data_dir(cfg)),
    }
    data = TokenData(
        train.tokens,
        val.tokens[: cfg.val_tokens],
        seq_len,
        task_mix=cfg.task_mix,
        info=info,
        mix_fn=mix_fn,
        encode_document=tok.encode_document,
    )
    targets = data.val_windows()[:, 1:]  # what the validation loss averages over
    data.info["val_target_tokens"] = int((targets != tokenizer.PAD).sum())
    data.info["val_target_bytes"] = int(tok.token_bytes()[targets].sum())
    return data


def _check_sizes(cfg: DataConfig, seq_len: int, n_train: int, n_val: int) -> None:
    """UserError unless the training split holds two windows of seq_len + 1 tokens and the
    validation split data.val_tokens (which must exceed seq_len), naming the values that fit."""
    longest = min(n_train // 2, n_val) - 1  # the longest seq_len both splits can hold
    fit = f"set model.seq_len <= {longest}" if longest > 0 else ""  # none fits: only more data
    if n_train < 2 * (seq_len + 1):
        raise UserError(
            f"{cfg.dataset} {cfg.train_split} has only {n_train} tokens, fewer than two windows "
            f"of model.seq_len + 1 = {seq_len + 1}; {fit + ', or ' if fit else ''}use a larger "
            f"dataset"
        )
    if n_val <= seq_len:  # data.val_tokens must exceed seq_len and fit in the split
        fit = f"{fit} (and data.val_tokens <= {n_val}), or " if fit else "use a larger dataset or "
        more = (  # text_files has two fixed splits: validation is ~5% of the documents
            "add documents to data.paths (validation holds about 5% of them)"
            if cfg.dataset == TEXT_FILES
            else "set data.val_split to a larger split"
        )
        raise UserError(
            f"{cfg.dataset} {cfg.val_split} has only {n_val} tokens, but data.val_tokens must "
            f"exceed model.seq_len = {seq_len}; {fit}{more}"
        )
    if n_val < cfg.val_tokens:
        raise UserError(
            f"data.val_tokens = {cfg.val_tokens} but {cfg.dataset} {cfg.val_split} has only "
            f"{n_val} tokens; set data.val_tokens <= {n_val}"
        )


# What a checkpoint's training stream depends on beyond the run config (which the run id covers):
# the corpus contents, the tokenizer file and the batching scheme.
_IDENTITY = ("tfds_name", "manifest_sha256", "n_train_tokens", "tokenizer", "batching")


def data_identity(info: dict) -> dict:
    """The part of `TokenData.info` a resumed run must find unchanged (see `check_resume`)."""
    return {k: info.get(k) for k in _IDENTITY}


def check_resume(saved: dict | None, info: dict, step: int) -> None:
    """UserError when the checkpoint at `step` was trained on other data than `info` describes
    (a corpus file edited, a tokenizer retrained at the same path): resuming would continue on
    a different token stream. Checkpoints written before this was recorded are not checked."""
    now = data_identity(info)
    changed = [k for k in _IDENTITY if saved and k in saved and saved[k] != now[k]]
    if changed:
        k = changed[0]
        raise UserError(
            f"the checkpoint at step {step} was trained on other data: {k} was {saved[k]!r}, "
            f"now {now[k]!r} ({_why_changed(k)}); restore the data it was trained on, or train "
            f"into a new --out (or pass --restart to retrain this run from step 0)"
        )


def _why_changed(key: str) -> str:
    return {
        "tokenizer": "the data.tokenizer file changed",
        "batching": "the batching scheme of this version changed",
    }.get(key, "the corpus changed")


def val_bpb(val_loss: float | None, info: dict) -> float | None:
    """Validation loss in bits per byte: total nats over the validation targets divided by the
    UTF-8 bytes they spell (specials count 0 bytes) and by ln 2; comparable across tokenizers."""
    if val_loss is None:
        return None
    return spm.bits_per_byte(val_loss, info["val_target_tokens"], info["val_target_bytes"])
