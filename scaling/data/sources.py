"""Find a TFDS text dataset, prepare it if it is ours, and cache its splits as flat token arrays.

Every dataset goes through one path: `tfds.builder(name, data_dir=...)` -> `as_data_source(split)`
-> tokenize each document as BOS + ids + EOS (bytes, or `data.tokenizer`) -> one uint16 stream,
cached on disk and memory-mapped afterwards. Only `python_source` (the embedded stdlib corpus)
and `text_files` (your files) are prepared here; any other dataset must already be prepared in
`data_dir`, because nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from scaling.config import DataConfig
from scaling.data import tokenizer
from scaling.errors import UserError
from scaling.fileio import warn

EMBEDDED = "python_source"
TEXT_FILES = "text_files"  # local .txt/.jsonl files (scaling.data.text_files)
CACHE_DIRNAME = "scaling_tokens"
_READ_CHUNK = 1024  # documents per random-access read


def default_data_dir(cfg: DataConfig) -> Path:
    """cfg.data_dir, else $SCALING_DATA_DIR, else ~/.cache/scaling/tfds."""
    raw = cfg.data_dir or os.environ.get("SCALING_DATA_DIR") or "~/.cache/scaling/tfds"
    return Path(raw).expanduser()


@dataclass(frozen=True)
class Split:
    """One split as a flat token stream (memory-mapped) plus document start offsets."""

    tokens: np.ndarray  # uint16 [n_tokens]
    doc_starts: np.ndarray  # int64 [n_docs + 1]; doc i is tokens[doc_starts[i]:doc_starts[i+1]]
    cache_path: Path

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_docs(self) -> int:
        return int(self.doc_starts.shape[0] - 1)


@contextlib.contextmanager
def _file_lock(path: Path):
    """Exclusive advisory lock so parallel runs do not prepare the same data twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _is_embedded(name: str) -> bool:
    return name.split("/")[0].split(":")[0] == EMBEDDED


@lru_cache(maxsize=4)
def _stdlib_digest(config_name: str) -> str:
    from scaling.data import python_source

    config = next(c for c in python_source.PythonSource.BUILDER_CONFIGS if c.name == config_name)
    return python_source.current_manifest_digest(config)


def _checked_data_dir(cfg: DataConfig, *, create: bool = True) -> Path:
    """`default_data_dir(cfg)`, created if missing (only when `create`: a dataset prepared
    here); UserError naming data.data_dir when it is missing (not `create`), a file, or under
    one, or cannot be created."""
    data_dir = default_data_dir(cfg)
    which = "data.data_dir" if cfg.data_dir else "$SCALING_DATA_DIR (data.data_dir unset)"
    if not cfg.data_dir and not os.environ.get("SCALING_DATA_DIR"):
        which = "the default data.data_dir"
    if not create and not data_dir.exists():  # a typo: do not make it, say so
        raise UserError(
            f"{which} = {str(data_dir)!r} does not exist, so data.dataset = {cfg.dataset!r} "
            f"is not prepared there; set data.data_dir to the folder given to `tfds build "
            f"{cfg.dataset.split('/')[0]} --data_dir DIR --file_format array_record`"
        )
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        what = "is a file, not a directory" if data_dir.is_file() else "cannot be created"
        raise UserError(
            f"{which} = {str(data_dir)!r} {what} ({e.strerror or e}); set data.data_dir (or "
            f"$SCALING_DATA_DIR) to a directory for prepared datasets (created if missing)"
        ) from e
    return data_dir


def get_builder(cfg: DataConfig, *, progress: bool = True):
    """A prepared TFDS builder for `cfg.dataset`, or UserError saying how to get one."""
    import tensorflow_datasets as tfds

    tfds.display_progress_bar(progress and sys.stderr.isatty())
    name = cfg.dataset
    data_dir = _checked_data_dir(cfg, create=name == TEXT_FILES or _is_embedded(name))
    if name == TEXT_FILES:
        return _prepare_text_files(cfg, data_dir)
    if _is_embedded(name):
        from scaling.data import python_source  # noqa: F401  (registers the builder)

    try:
        builder = tfds.builder(name, data_dir=str(data_dir))
    except Exception as e:  # DatasetNotFoundError, bad config/version names, catalog imports
        if _is_embedded(name):
            raise UserError(
                f"data.dataset = {name!r}: unknown {EMBEDDED} variant; use {EMBEDDED} "
                f"(= {EMBEDDED}/full) or {EMBEDDED}/small"
            ) from e
        raise UserError(
            f"data.dataset = {name!r}: TFDS cannot load it ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}). Use {EMBEDDED!r} (or {EMBEDDED}/small), or "
            f"prepare the dataset once with TFDS (e.g. `tfds build {name.split('/')[0]} "
            f"--data_dir DIR --file_format array_record` on a machine with network) and set "
            f"data.data_dir = DIR "
            f"(now {str(data_dir)!r})"
        ) from e
    if _is_embedded(name):
        builder = _prepare_embedded(builder, data_dir)
    elif not _is_prepared(builder):
        raise UserError(
            f"data.dataset = {name!r} is not prepared in data.data_dir = {str(data_dir)!r} "
            f"(looked for {builder.data_dir}). Nothing is downloaded at run time: prepare it "
            f"with `tfds build {name.split('/')[0]} --data_dir DIR --file_format array_record` "
            f"and set data.data_dir = DIR"
        )
    return builder


def _is_prepared(builder: Any) -> bool:
    """`builder.is_prepared()`, without its warning for a variant dir TFDS has only created."""
    return (Path(builder.data_dir) / "dataset_info.json").exists() and builder.is_prepared()


def _prepare_embedded(builder: Any, data_dir: Path) -> Any:
    """Build python_source if absent, and rebuild it if the interpreter's stdlib changed.

    Runs under a lock in `data_dir`, and re-reads the builder inside it, so parallel runs
    (a local sweep) prepare once and the others wait and then read the finished copy.
    """
    config = builder.builder_config.name
    want = _stdlib_digest(config)

    def fresh() -> Any:
        return type(builder)(config=config, data_dir=str(data_dir))

    with _file_lock(data_dir / f".{EMBEDDED}.lock"):
        builder = fresh()
        if _is_prepared(builder):
            have = (builder.info.metadata or {}).get("manifest_sha256")
            if have == want:
                return builder
            print(
                f"{EMBEDDED}: prepared copy in {builder.data_dir} was built from another "
                f"stdlib (manifest {str(have)[:12]}, now {want[:12]}); rebuilding",
                file=sys.stderr,
            )
            builder = _rebuild(builder, fresh, data_dir)
        builder.download_and_prepare()
    return builder


def _rebuild(builder: Any, fresh, data_dir: Path) -> Any:
    """Delete the stale prepared copy (records and token caches) and prepare it again, keeping
    a `tokenizers/` folder in it (where `scaling tokenizer train` used to save models) in place."""
    kept = Path(builder.data_dir) / "tokenizers"
    aside = data_dir / f".{EMBEDDED}-tokenizers-{os.getpid()}"
    if kept.is_dir():
        os.replace(kept, aside)  # a crash leaves them here, not deleted
    shutil.rmtree(builder.data_dir)
    builder = fresh()
    builder.download_and_prepare()
    if aside.is_dir():
        os.replace(aside, Path(builder.data_dir) / "tokenizers")
    return builder


def _prepare_text_files(cfg: DataConfig, data_dir: Path) -> Any:
    """The `text_files` builder of the corpus `cfg.paths` names, prepared on first use.

    Its config name is the digest of the files' contents, so a changed corpus prepares a new
    copy (under a lock, like python_source) and an unchanged one is read as it is.
    """
    import tensorflow_datasets as tfds

    from scaling.data import text_files

    config = text_files.make_config(cfg.paths, cfg.text_key)  # UserError: paths, encodings
    with _file_lock(data_dir / f".{TEXT_FILES}.lock"), text_files.quiet_custom_config():
        builder = tfds.builder(TEXT_FILES, config=config, data_dir=str(data_dir))
        if not _is_prepared(builder):
            text_files.check_documents(config)  # UserError: empty corpus, bad JSONL line
            builder.download_and_prepare()
    return builder


def _fingerprint(
    builder: Any, split: str, tok_id: str = tokenizer.TOKENIZER_ID, text_key: str = "text"
) -> str:
    """What the cached tokens depend on: the data (manifest or split sizes), the feature read
    (`data.text_key`) and the tokenizer. `text_files` always reads its "text" feature (its
    text key is in its config name), so its key is left out and its older caches stay valid."""
    meta = dict(builder.info.metadata or {})
    info = builder.info
    splits = {k: [v.num_examples, v.num_bytes] for k, v in info.splits.items()}
    blob = {
        "dataset": builder.info.full_name,
        "split": split,
        "manifest": meta.get("manifest_sha256"),
        "splits": splits,
        "tokenizer": tok_id,
    }
    if builder.name != TEXT_FILES or text_key != "text":
        blob["text_key"] = text_key
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _cache_dir(builder: Any) -> Path:
    """Beside the prepared records when writable, else under ~/.cache/scaling/tokens."""
    here = Path(builder.data_dir) / CACHE_DIRNAME
    try:
        here.mkdir(parents=True, exist_ok=True)
        if os.access(here, os.W_OK):
            return here
    except OSError:
        pass
    alt = Path("~/.cache/scaling/tokens").expanduser() / builder.info.full_name
    alt.mkdir(parents=True, exist_ok=True)
    return alt


def _doc_text(example: Any, text_key: str) -> bytes:
    value = example[text_key]
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def load_split(
    builder: Any,
    split: str,
    text_key: str,
    *,
    progress: bool = True,
    label: str = "",
    tok: Any = None,
) -> Split:
    """Token stream of `split`, tokenized on first use and memory-mapped from the cache after."""
    check_split(builder, split, text_key)
    from scaling.data.spm import BYTES

    tok = tok or BYTES
    stem = f"{split.replace('/', '_')}-{_fingerprint(builder, split, tok.id, text_key)}"
    root = _cache_dir(builder)
    tok_path, idx_path = root / f"{stem}.tokens.u16", root / f"{stem}.docs.npy"
    with _file_lock(root / ".lock"):
        if not _cache_ok(tok_path, idx_path):
            _tokenize_split(builder, split, text_key, tok_path, idx_path, progress, label, tok)
    if tok_path.stat().st_size == 0:
        raise UserError(
            f"split {split!r} of {builder.info.full_name} has no documents; "
            f"set data.train_split / data.val_split to non-empty splits"
        )
    tokens = np.memmap(tok_path, dtype=np.uint16, mode="r")
    return Split(tokens=tokens, doc_starts=np.load(idx_path), cache_path=tok_path)


def _cache_ok(tok_path: Path, idx_path: Path) -> bool:
    """Whether both cache files exist and agree: the token file holds exactly the tokens the
    document index ends at. A truncated copy (an interrupted copy of data_dir) was read as a
    shorter corpus without a word; it is tokenized again, with a warning."""
    if not (tok_path.exists() and idx_path.exists()):
        return False
    try:
        starts = np.load(idx_path)
        want = 2 * int(starts[-1])  # uint16 tokens
    except (OSError, ValueError, EOFError, IndexError) as e:
        why = f"its document index is unreadable ({type(e).__name__})"
    else:
        if tok_path.stat().st_size == want:
            return True
        why = f"{tok_path.stat().st_size} bytes where its index says {want}"
    warn(f"token cache {tok_path.name} in {tok_path.parent} is damaged ({why}); tokenizing again")
    return False


def check_split(builder: Any, split: str, text_key: str) -> None:
    """UserError unless `text_key` is a feature, every `+` part of `split` names a split of the
    dataset, and TFDS can read the whole expression (slices, rounding)."""
    import tensorflow_datasets as tfds

    splits, name, features = builder.info.splits, builder.info.full_name, builder.info.features
    if text_key not in features:
        raise UserError(
            f"data.text_key = {text_key!r} is not a feature of {name}; "
            f"it has: {', '.join(features.keys())}"
        )
    if not _is_text(features[text_key]):
        text = sorted(k for k, f in features.items() if _is_text(f))
        raise UserError(
            f"data.text_key = {text_key!r} is a {type(features[text_key]).__name__} feature of "
            f"{name}, not one string per example; set data.text_key to a text feature "
            f"({', '.join(text) or 'it has none'})"
        )
    for part in split.split("+"):
        base = part.split("[")[0].split("(")[0].strip()
        if base not in splits:
            raise UserError(
                f"split {split!r}: {base!r} is not a split of {name}; available: "
                f"{', '.join(splits)} (set data.train_split / data.val_split)"
            )
    try:
        tfds.core.ReadInstruction.from_spec(split).to_absolute(splits)
    except (ValueError, AssertionError) as e:
        why = " ".join(str(e).split())[:200]
        raise UserError(
            f"split {split!r} of {name} cannot be read ({why}); set data.train_split / "
            f"data.val_split to a TFDS split expression such as 'train[:95%]' or 'train+test'"
        ) from e


def _is_text(feature: Any) -> bool:
    """One string (Text, or a scalar string Tensor) per example: what a document can be read
    from. A number would be read as that many zero bytes, a sequence would not be read at all."""
    try:
        kind = np.dtype(feature.np_dtype).kind
    except (AttributeError, TypeError):  # FeaturesDict and other nested features
        return False
    return tuple(feature.shape) == () and kind in "OSU"


def data_source(builder: Any, split: str, label: str = "") -> Any:
    """`builder.as_data_source(split)`; UserError when it was prepared as tfrecord."""
    try:
        return builder.as_data_source(split=split)
    except NotImplementedError as e:  # prepared as tfrecord: not random-access
        raise UserError(
            f"{label or builder.info.full_name}: the prepared files in {builder.data_dir} are "
            f"not array_record ({str(e).splitlines()[0][:160]}); rebuild them with `tfds build "
            f"... --file_format array_record`"
        ) from e


def _tokenize_split(
    builder: Any,
    split: str,
    text_key: str,
    tok_path: Path,
    idx_path: Path,
    progress: bool,
    label: str,
    tok: Any,
) -> None:
    from tqdm.auto import tqdm

    source = data_source(builder, split, label)
    n_docs = len(source)
    starts = np.zeros(n_docs + 1, dtype=np.int64)
    tmp = tok_path.with_name(tok_path.name + f".tmp{os.getpid()}")
    total = 0
    bar = tqdm(
        total=n_docs,
        desc=f"tokenizing {label or builder.info.full_name} {split}",
        unit="doc",
        disable=not progress or not sys.stderr.isatty(),
    )
    with open(tmp, "wb") as fh:
        for lo in range(0, n_docs, _READ_CHUNK):
            idx = list(range(lo, min(lo + _READ_CHUNK, n_docs)))
            for i, example in zip(idx, source.__getitems__(idx), strict=True):
                ids = tok.encode_document(_doc_text(example, text_key))
                fh.write(ids.tobytes())
                total += ids.shape[0]
                starts[i + 1] = total
            bar.update(len(idx))
    bar.close()
    tmp_idx = idx_path.with_name(f"tmp{os.getpid()}-" + idx_path.name)
    np.save(tmp_idx, starts)
    os.replace(tmp, tok_path)
    os.replace(tmp_idx, idx_path)
