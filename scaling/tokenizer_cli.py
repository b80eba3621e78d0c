"""`scaling tokenizer train`: a SentencePiece model trained locally on the configured corpus.

The corpus is the run config's `[data]` (default: the built-in `tiny` config, i.e. the embedded
stdlib corpus), or your own files with `--data GLOB` (as `data.dataset = "text_files"`). Only the
training split (`data.train_split`) is read. The model is saved under
`<data_dir>/tokenizers/<dataset>/<config>/<version>/`, outside the prepared copy (which a rebuild
replaces), unless `--out` says otherwise; runs name it by path (`data.tokenizer`), and the run
record carries its sha256.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from scaling.errors import UserError

CHUNK = 16384  # characters per training "sentence"


def _doc_chunks(src, text_key: str, max_bytes: int):
    from scaling.data.sources import _doc_text

    seen = 0
    for i in range(len(src)):
        text = _doc_text(src[i], text_key).decode("utf-8", errors="replace")
        for lo in range(0, len(text), CHUNK):
            piece = text[lo : lo + CHUNK]
            seen += len(piece.encode("utf-8"))
            yield piece
            if seen >= max_bytes:
                return


def _train(args: argparse.Namespace) -> int:
    from scaling import config as C
    from scaling.data import spm
    from scaling.data.sources import (
        TEXT_FILES,
        check_split,
        data_source,
        default_data_dir,
        get_builder,
    )

    overrides = list(args.overrides)
    if args.data:
        paths = ", ".join(f'"{p}"' for p in args.data)
        overrides += [f"data.dataset={TEXT_FILES}", f"data.paths=[{paths}]"]
    if args.vocab > spm.MAX_VOCAB:
        raise UserError(
            f"--vocab {args.vocab}: token ids are stored as uint16; use <= {spm.MAX_VOCAB}"
        )
    if args.vocab < spm.MIN_VOCAB:  # before the corpus is prepared
        raise UserError(
            f"--vocab {args.vocab}: needs at least {spm.MIN_VOCAB} (the ids below are reserved)"
        )
    if not args.max_mb > 0:  # "up to 0 MB" trained on one whole chunk
        raise UserError(f"--max-mb {args.max_mb:g}: must be > 0 (MB of text to train on)")
    if args.out:
        _check_out(Path(args.out))  # before the corpus is prepared and the model trained
    cfg = C.load(args.config, overrides + ["eval.enabled=false", 'data.tokenizer=""'])
    builder = get_builder(cfg.data, progress=not args.no_progress)
    feature = "text" if cfg.data.dataset == TEXT_FILES else cfg.data.text_key
    split = cfg.data.train_split
    check_split(builder, split, feature)  # UserError: unknown split or text key
    if args.out:
        out = Path(args.out)
    else:  # not inside builder.data_dir: a rebuild of the prepared copy deletes that folder
        root = default_data_dir(cfg.data) / "tokenizers" / builder.info.full_name
        out = root / f"spm-{args.model_type}-{args.vocab}.model"
    tmp = out.with_name(f".tmp{os.getpid()}-{out.stem}")
    src = data_source(builder, split)  # UserError: prepared as tfrecord
    chunks = _doc_chunks(src, feature, int(args.max_mb * 2**20))
    print(
        f"training a {args.model_type} SentencePiece model, vocab {args.vocab}, on "
        f"{cfg.data.dataset} {split} (up to {args.max_mb:g} MB) ...",
        file=sys.stderr,
    )
    try:
        model = spm.train_sentencepiece(chunks, tmp, args.vocab, args.model_type)
        os.replace(model, out)
        os.replace(tmp.with_suffix(".vocab"), out.with_suffix(".vocab"))
    finally:  # a failed training or move leaves no .tmp files beside --out
        for left in (tmp.with_suffix(".model"), tmp.with_suffix(".vocab")):
            left.unlink(missing_ok=True)
    tok = spm.get_tokenizer(str(out))
    print(f"wrote {out} (vocab {tok.vocab_size}, sha256 {tok.sha256[:16]})")
    print(
        f"use it: --set data.tokenizer='\"{out}\"' --set model.vocab_size={tok.vocab_size} "
        f"--set eval.enabled=false"
    )
    return 0


def _check_out(out: Path) -> None:
    """UserError unless `out` can become a model file: ends in .model, is not a directory, and
    no folder on its way is a file."""
    if out.suffix != ".model":
        raise UserError(f"--out {out}: a SentencePiece model file must end in .model")
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file path, e.g. {out / 'spm.model'}")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(
                f"--out {out}: {parent} is a file, not a directory; choose another path"
            )


def register(sub: argparse._SubParsersAction) -> None:
    """Add `tokenizer train` to the `scaling` CLI."""
    p = sub.add_parser("tokenizer", help="train a SentencePiece tokenizer on the local corpus")
    tsub = p.add_subparsers(dest="tokenizer_command", required=True)
    t = tsub.add_parser("train", help="train a SentencePiece (BPE or unigram) model")
    t.add_argument("config", nargs="?", default="tiny", help="run config whose [data] to use")
    t.add_argument("--vocab", type=int, default=4096, help="vocabulary size (default 4096)")
    t.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="GLOB",
        help="your own .txt/.jsonl files instead of the config's dataset (repeatable)",
    )
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    t.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe")
    t.add_argument("--max-mb", type=float, default=64.0, help="train on at most this many MB")
    t.add_argument("--out", default=None, help="model path (default: under DATA_DIR/tokenizers/)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(handler=_train)
