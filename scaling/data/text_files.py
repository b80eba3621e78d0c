"""TFDS builder `text_files`: a researcher's own `.txt` / `.jsonl` files as a text corpus.

`data.dataset = "text_files"` with `data.paths = ["corpus/**/*.txt", "more.jsonl"]` (globs,
relative to the working directory; `**` recurses). A `.txt` file is one document; a `.jsonl` file
holds one document per line, the string under `data.text_key` (a UTF-8 byte order mark
opening either kind of file is dropped, not read as text). Documents are split into train
and validation by a hash of their text (5%, `VAL_PER_MILLE`), so the split is stable across
machines, file orders and renames, and a document never lands in both (a corpus too small for
any document to hash into validation, or for any to stay in train, gives validation the text
with the smallest hash, every copy).

The corpus is prepared once into TFDS array_record files through the same `tfds.builder` ->
`download_and_prepare` -> `as_data_source` path as `python_source`. The builder config's name is
a digest of every file's path and content sha256 plus the text key (`corpus_digest`), so editing,
adding or removing a file prepares a new copy, and an unchanged corpus is never prepared twice.
Files that are not valid UTF-8 are skipped and counted (one line on stderr, and
`n_skipped_non_utf8` in the prepared metadata).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import logging
import os
from pathlib import Path

import tensorflow_datasets as tfds

from scaling.errors import UserError
from scaling.fileio import warn

NAME = "text_files"
VAL_PER_MILLE = 50  # validation if hash(text) % 1000 < 50
SUFFIXES = (".txt", ".jsonl")
_BOM = b"\xef\xbb\xbf"  # UTF-8 byte order mark


@dataclasses.dataclass(frozen=True)
class CorpusFile:
    """One input file: its absolute path and content sha256 (None when not UTF-8)."""

    path: Path
    sha256: str
    utf8: bool


def resolve_paths(patterns: tuple[str, ...] | list[str]) -> list[Path]:
    """Sorted, de-duplicated files matched by the `data.paths` globs; UserError naming the
    pattern that matches nothing, a directory, or a file type other than .txt/.jsonl."""
    if not patterns:
        raise UserError(
            f'data.dataset = "{NAME}" needs data.paths, e.g. data.paths = ["corpus/**/*.txt"]'
        )
    out: set[Path] = set()
    for pat in patterns:
        hits = [Path(p) for p in glob.glob(os.path.expanduser(pat), recursive=True)]
        files = [p for p in hits if p.is_file()]
        if not files:
            what = "only directories" if hits else "no file"
            raise UserError(
                f"data.paths entry {pat!r} matches {what} (relative to {os.getcwd()}); give "
                f"file globs such as 'corpus/**/*.txt' or 'docs.jsonl'"
            )
        for p in files:
            if p.suffix.lower() not in SUFFIXES:
                raise UserError(
                    f"data.paths entry {pat!r} matches {str(p)!r}: only .txt (one document per "
                    f"file) and .jsonl (one per line) are read; narrow the glob, e.g. '*.txt'"
                )
            out.add(p.resolve())
    return sorted(out)


def scan(paths: list[Path]) -> list[CorpusFile]:
    """Hash every file and note which are valid UTF-8."""
    files = []
    for p in paths:
        data = p.read_bytes()
        try:
            data.decode("utf-8")
            ok = True
        except UnicodeDecodeError:
            ok = False
        files.append(CorpusFile(p, hashlib.sha256(data).hexdigest(), ok))
    return files


def corpus_digest(files: list[CorpusFile], text_key: str) -> str:
    """What the prepared copy depends on: every path and content hash, the key and the split."""
    lines = [f"{f.path.as_posix()}\t{f.sha256}" for f in files]
    lines += [f"text_key\t{text_key}", f"val_per_mille\t{VAL_PER_MILLE}", "v1"]
    if any(_txt_with_bom(f) for f in files):  # once prepared with the BOM kept as text: a new
        lines.append("txt_bom\tstripped")  # copy; a corpus without one keeps its digest
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _txt_with_bom(f: CorpusFile) -> bool:
    if not f.utf8 or f.path.suffix.lower() != ".txt":
        return False
    with open(f.path, "rb") as fh:
        return fh.read(3) == _BOM


def _text_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def is_validation(text: str) -> bool:
    return _text_hash(text) % 1000 < VAL_PER_MILLE


def split_documents(docs: list[tuple[str, str, str]]) -> tuple[list, list]:
    """(train, validation) by text hash. A corpus too small for any document to hash into
    validation (or for any to hash into train) gives validation the text with the smallest
    hash, every copy of it (still a function of the contents alone); UserError below 2
    documents, or 2 distinct texts."""
    if len(docs) < 2:
        raise UserError(
            f"data.paths: the corpus has {len(docs)} document(s); it needs at least 2 (one for "
            f"validation). Add files, or JSONL lines"
        )
    val = [d for d in docs if is_validation(d[1])]
    if not val or len(val) == len(docs):  # none (or all) hashed into validation: hold out
        # one text, every copy of it, so none of it stays in train
        chosen = min(docs, key=lambda d: (_text_hash(d[1]) % 1000, d[1]))[1]
        val = [d for d in docs if d[1] == chosen]
    keys = {d[0] for d in val}
    train = [d for d in docs if d[0] not in keys]
    if not train:
        raise UserError(
            f"data.paths: all {len(docs)} documents of the corpus are the same text, so none is "
            f"left to train on once one is held out for validation; add distinct documents"
        )
    return train, val


def iter_documents(files: list[CorpusFile], text_key: str):
    """(key, text, source) for every document of the UTF-8 files; UserError for a bad JSONL line."""
    for i, f in enumerate(files):
        if not f.utf8:
            continue
        # a UTF-8 BOM (Windows editors) is a file marker, not text: not trained on, not JSON
        text = f.path.read_text(encoding="utf-8").removeprefix("\ufeff")
        if f.path.suffix.lower() == ".txt":
            if text.strip():
                yield f"{i}", text, str(f.path)
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{f.path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{where}: not valid JSON ({e.msg}); fix or remove the line") from e
            if not isinstance(rec, dict) or text_key not in rec:
                keys = ", ".join(map(repr, rec)) if isinstance(rec, dict) else type(rec).__name__
                raise UserError(
                    f"{where}: JSONL record has no {text_key!r} key (data.text_key; it has "
                    f"{keys or 'no keys'}); set data.text_key to the field holding the text"
                )
            value = rec[text_key]
            if not isinstance(value, str):
                raise UserError(
                    f"{where}: {text_key!r} holds a {type(value).__name__}, not text; "
                    f"set data.text_key to a string field"
                )
            _check_encodable(value, where, text_key)
            if value.strip():
                yield f"{i}:{lineno}", value, where


def _check_encodable(value: str, where: str, text_key: str) -> None:
    """UserError for a JSON escape of half a surrogate pair (`"\\ud800"`): valid JSON, but not
    text UTF-8 can hold, so hashing or tokenizing the document was a UnicodeEncodeError."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserError(
            f"{where}: {text_key!r} holds an unpaired surrogate escape "
            f"({value[e.start].encode('unicode_escape').decode()} at character {e.start}), which "
            f"is not text; fix or remove the line"
        ) from None


def check_documents(config: TextFilesConfig) -> int:
    """Read every document once (UserError for a bad JSONL line); UserError when there are
    none. Returns the number of documents."""
    docs = list(iter_documents(list(config.files), config.text_key))
    n = len(docs)
    if n == 0:
        skipped = sum(not f.utf8 for f in config.files)
        raise UserError(
            f"data.paths: the {len(config.files)} file(s) hold no documents"
            + (f" ({skipped} skipped as not UTF-8)" if skipped else "")
            + "; point data.paths at non-empty .txt or .jsonl files"
        )
    split_documents(docs)  # UserError below 2 documents
    return n


@contextlib.contextmanager
def quiet_custom_config():
    """Drop TFDS's `WARNING absl: Using custom data configuration: TextFilesConfig(...)`, which
    every text_files run printed to stderr (the corpus config is ours by design), before its
    output and before an `error:` line that was to be the only one."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Using custom data configuration")

    log = logging.getLogger("absl")
    log.addFilter(keep)
    try:
        yield
    finally:
        log.removeFilter(keep)


@dataclasses.dataclass(eq=False)
class TextFilesConfig(tfds.core.BuilderConfig):
    """One corpus: the files (with hashes) and the JSONL text key. `name` is its digest."""

    files: tuple[CorpusFile, ...] = dataclasses.field(default=(), repr=False)
    text_key: str = "text"


class TextFiles(tfds.core.GeneratorBasedBuilder):
    """A local corpus of .txt / .jsonl files (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: .txt/.jsonl documents, text-hash split."}
    BUILDER_CONFIGS = []  # one config per corpus, made by `make_config`

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Local .txt / .jsonl documents (scaling text_files).",
            features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "source": tfds.features.Text()}
            ),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing is downloaded
        cfg = self.builder_config
        docs = list(iter_documents(list(cfg.files), cfg.text_key))
        skipped = [f for f in cfg.files if not f.utf8]
        self.info.metadata.update(
            manifest_sha256=cfg.name,
            n_files=len(cfg.files) - len(skipped),
            n_skipped_non_utf8=len(skipped),
            n_documents=len(docs),
            text_key=cfg.text_key,
        )
        lines = [f"{f.path}\t{f.sha256}\t{'utf8' if f.utf8 else 'skipped'}" for f in cfg.files]
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.data_dir) / "manifest.tsv").write_text("\n".join(lines) + "\n")
        train, val = split_documents(docs)
        return {"train": self._generate_examples(train), "validation": self._generate_examples(val)}

    def _generate_examples(self, docs):
        for key, text, source in docs:
            yield key, {"text": text, "source": source}


def make_config(patterns: tuple[str, ...], text_key: str) -> TextFilesConfig:
    """Resolve the globs, hash the files, report non-UTF-8 ones: the corpus's builder config."""
    files = scan(resolve_paths(patterns))
    skipped = [f for f in files if not f.utf8]
    if skipped and len(skipped) == len(files):  # the one line is the error
        raise UserError(
            f"data.paths: all {len(files)} file(s) are not valid UTF-8 (first: "
            f"{skipped[0].path}); convert them to UTF-8 text"
        )
    if skipped:
        warn(
            f"{NAME}: skipped {len(skipped)} of {len(files)} file(s) that are not valid UTF-8 "
            f"(first: {skipped[0].path})"
        )
    digest = corpus_digest(files, text_key)[:16]
    return TextFilesConfig(
        name=digest,
        version=TextFiles.VERSION,
        description=f"{len(files)} file(s), text key {text_key!r}",
        files=tuple(files),
        text_key=text_key,
    )
