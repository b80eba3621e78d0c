"""`data.dataset = "text_files"`: a researcher's own .txt/.jsonl files through TFDS, offline."""

from __future__ import annotations

import hashlib
import json
import logging
import sysconfig
from collections import Counter
from pathlib import Path

import pytest

from scaling import config
from scaling.config import DataConfig
from scaling.data import sources, text_files
from scaling.errors import UserError


def _corpus(root: Path) -> list[str]:
    """Write .txt files (one nested) and a .jsonl file; return the documents they hold."""
    (root / "corpus" / "sub").mkdir(parents=True)
    docs = [f"plain text document {i}: " + "ünïcödé ✓ " * (i + 1) for i in range(30)]
    for i, d in enumerate(docs[:20]):
        sub = "sub/" if i % 3 == 0 else ""
        (root / "corpus" / f"{sub}doc{i:02d}.txt").write_text(d, encoding="utf-8")
    lines = [json.dumps({"id": i, "body": d}) for i, d in enumerate(docs[20:])]
    (root / "more.jsonl").write_text("\n".join(lines[:5]) + "\n\n" + "\n".join(lines[5:]) + "\n")
    return docs


def _cfg(root: Path, **kw) -> DataConfig:
    kw.setdefault("paths", (str(root / "corpus/**/*.txt"), str(root / "more.jsonl")))
    kw.setdefault("text_key", "body")
    return DataConfig(dataset="text_files", data_dir=str(root / "tfds"), **kw)


def _read(builder, split: str) -> list[str]:
    src = builder.as_data_source(split=split)
    return [sources._doc_text(src[i], "text").decode("utf-8") for i in range(len(src))]


def test_round_trip_split_disjoint_and_stable(tmp_path: Path) -> None:
    docs = _corpus(tmp_path)
    b = sources.get_builder(_cfg(tmp_path), progress=False)
    train, val = _read(b, "train"), _read(b, "validation")
    assert Counter(train + val) == Counter(docs)  # documents in == documents out
    assert val and not set(train) & set(val)
    hashed = {d for d in docs if text_files.is_validation(d)}
    assert set(val) == hashed or (not hashed and len(val) == 1)
    meta = b.info.metadata
    assert meta["n_documents"] == 30 and meta["n_files"] == 21 and meta["n_skipped_non_utf8"] == 0
    again = sources.get_builder(_cfg(tmp_path), progress=False)  # prepared once: reused
    assert again.data_dir == b.data_dir and _read(again, "validation") == val
    # the split is a function of the text only: file order and names do not matter
    (tmp_path / "corpus" / "doc01.txt").rename(tmp_path / "corpus" / "zz_renamed.txt")
    moved = sources.get_builder(_cfg(tmp_path), progress=False)
    assert moved.data_dir != b.data_dir and sorted(_read(moved, "validation")) == sorted(val)


def test_edited_file_prepares_again(tmp_path: Path) -> None:
    _corpus(tmp_path)
    before = sources.get_builder(_cfg(tmp_path), progress=False)
    (tmp_path / "corpus" / "doc02.txt").write_text("an edited document", encoding="utf-8")
    after = sources.get_builder(_cfg(tmp_path), progress=False)
    assert after.data_dir != before.data_dir
    texts = _read(after, "train") + _read(after, "validation")
    assert "an edited document" in texts and not any(
        t.startswith("plain text document 2:") for t in texts
    )


def test_bad_inputs_are_one_clear_line(tmp_path: Path, capsys) -> None:
    _corpus(tmp_path)
    with pytest.raises(UserError, match=r"'nope/\*\.txt' matches no file"):
        text_files.resolve_paths(["nope/*.txt"])
    with pytest.raises(UserError, match="matches only directories"):
        text_files.resolve_paths([str(tmp_path / "corpus" / "sub")])
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(UserError, match=r"only \.txt .* and \.jsonl"):
        text_files.resolve_paths([str(tmp_path / "*")])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("")
    (empty / "b.txt").write_text("   \n")
    with pytest.raises(UserError, match="hold no documents"):
        sources.get_builder(_cfg(tmp_path, paths=(str(empty / "*.txt"),)), progress=False)
    # non-UTF-8: skipped and counted; all of them: an error
    (empty / "a.txt").write_text("first document")
    (empty / "b.txt").write_text("second document")
    (empty / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    capsys.readouterr()
    b = sources.get_builder(_cfg(tmp_path, paths=(str(empty / "*.txt"),)), progress=False)
    assert "warning: text_files: skipped 1 of 3 file(s) that are not valid UTF-8" in (
        capsys.readouterr().err
    )
    assert b.info.metadata["n_skipped_non_utf8"] == 1
    with pytest.raises(UserError, match="all 1 file.* not valid UTF-8"):
        text_files.make_config((str(empty / "latin1.txt"),), "text")
    assert capsys.readouterr().err == ""  # the error is the one line (no skip notice first)
    with pytest.raises(UserError, match=r"more\.jsonl:1: JSONL record has no 'text' key"):
        sources.get_builder(_cfg(tmp_path, text_key="text"), progress=False)
    (tmp_path / "broken.jsonl").write_text('{"body": "ok"}\n{"body": \n')
    with pytest.raises(UserError, match=r"broken\.jsonl:2: not valid JSON"):
        sources.get_builder(_cfg(tmp_path, paths=(str(tmp_path / "broken.jsonl"),)))
    with pytest.raises(UserError, match="needs data.paths"):
        config.load("tiny", ["data.dataset=text_files"])
    with pytest.raises(UserError, match='data.paths is read only with data.dataset = "text_files"'):
        config.load("tiny", ['data.paths=["x.txt"]'])


def test_tiny_run_on_own_files_lowers_validation_loss(tmp_path: Path) -> None:
    """Real text the test writes: 40 stdlib modules saved as .txt files."""
    from scaling.train import train

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    (tmp_path / "c").mkdir()
    names = ["argparse", "textwrap", "difflib", "fractions", "heapq", "shlex", "bisect", "glob"]
    for name in names:
        (tmp_path / "c" / f"{name}.txt").write_text((stdlib / f"{name}.py").read_text())
    cfg = config.load(
        "tiny",
        [
            "model.preset=cpu-3xs",
            "model.seq_len=32",
            "train.batch_size=16",
            "data.dataset=text_files",
            f'data.paths=["{tmp_path}/c/*.txt"]',
            f'data.data_dir="{tmp_path}/tfds"',
            "data.val_tokens=2048",
            "data.task_mix=0.0",
            "eval.enabled=false",
            "train.steps=24",
            "train.eval_every=8",
            "train.log_every=8",
        ],
    )
    result = train(cfg, tmp_path / "run", progress=False)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    vals = [json.loads(x)["val_loss"] for x in lines if "val_loss" in x]
    assert len(vals) == 3 and vals[-1] < vals[0] - 0.2
    info = result["data_info"]
    assert info["dataset"] == "text_files" and info["n_train_docs"] + info["n_val_docs"] == 8
    assert info["manifest_sha256"] and info["paths"] == [f"{tmp_path}/c/*.txt"]


def test_fallback_validation_takes_every_copy_of_its_text() -> None:
    """A corpus where no text hashes into validation: the chosen text goes there with all its
    copies, so validation never holds a text train also has; one repeated text is an error."""
    texts = [f"doc {i}" for i in range(200)]
    texts = [t for t in texts if not text_files.is_validation(t)][:3]
    docs = [(f"{i}", t, "x") for i, t in enumerate(texts * 3)]
    train, val = text_files.split_documents(docs)
    assert len(val) == 3 and len({d[1] for d in val}) == 1
    assert not {d[1] for d in train} & {d[1] for d in val} and len(train) == 6
    with pytest.raises(UserError, match="same text.*add distinct documents"):
        text_files.split_documents([(f"{i}", texts[0], "x") for i in range(4)])


def test_a_jsonl_file_saved_with_a_utf8_bom_is_read(tmp_path: Path) -> None:
    """Windows editors start UTF-8 files with a BOM; its first line was 'not valid JSON'."""
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "first doc"}\n{"text": "second doc"}\n')
    docs = [text for _, text, _ in text_files.iter_documents(text_files.scan([path]), "text")]
    assert docs == ["first doc", "second doc"]


def test_a_corpus_whose_every_text_hashes_into_validation_keeps_one_to_train_on() -> None:
    """Two distinct documents that both hash into validation were refused as 'all 2 documents
    of the corpus are the same text'; validation now takes one text (all its copies), as when
    none hashes there, and train keeps the rest."""
    texts = [t for t in (f"doc {i}" for i in range(400)) if text_files.is_validation(t)][:2]
    docs = [(f"{i}", t, "x") for i, t in enumerate([texts[0], texts[1], texts[1]])]
    train, val = text_files.split_documents(docs)
    assert len({d[1] for d in val}) == 1 and len(train) + len(val) == 3 and train
    assert not {d[1] for d in train} & {d[1] for d in val}
    assert {d[1] for d in text_files.split_documents(docs[::-1])[1]} == {d[1] for d in val}


def test_no_tfds_custom_config_warning_on_stderr(tmp_path: Path, caplog) -> None:
    """TFDS warned `Using custom data configuration: TextFilesConfig(...)` on every text_files
    run, a second stderr line beside a data error's one `error:` line."""
    _corpus(tmp_path)
    before = list(logging.getLogger("absl").filters)
    with caplog.at_level("WARNING"):
        sources.get_builder(_cfg(tmp_path), progress=False)
    assert not [r for r in caplog.records if "custom data configuration" in r.getMessage()]
    assert logging.getLogger("absl").filters == before  # the filter is removed again


def test_a_jsonl_unpaired_surrogate_escape_is_one_line_naming_the_line(tmp_path: Path) -> None:
    """`{"text": "a \\ud800 b"}` is valid JSON but not UTF-8 text: it was a UnicodeEncodeError
    traceback from the split's text hash."""
    (tmp_path / "s.jsonl").write_text(
        '{"text": "second doc"}\n{"text": "hello \\ud800 world"}\n{"text": "third"}\n'
    )
    cfg = DataConfig(
        dataset="text_files", data_dir=str(tmp_path / "tfds"), paths=(str(tmp_path / "s.jsonl"),)
    )
    with pytest.raises(UserError, match=r"s\.jsonl:2: 'text' holds an unpaired surrogate escape"):
        sources.get_builder(cfg, progress=False)


def test_a_txt_file_saved_with_a_utf8_bom_is_read_without_it(tmp_path: Path) -> None:
    """The BOM of a .txt file (Windows editors) was trained on as 3 bytes of text, and made the
    file another document than the same text saved without one; a JSONL BOM was dropped."""
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfhello")
    (tmp_path / "plain.txt").write_bytes(b"world")
    files = text_files.scan([tmp_path / "bom.txt", tmp_path / "plain.txt"])
    assert [t for _, t, _ in text_files.iter_documents(files, "text")] == ["hello", "world"]
    plain = text_files.scan([tmp_path / "plain.txt"])  # no BOM: the digest is what it was
    assert (
        text_files.corpus_digest(plain, "text")
        == hashlib.sha256(
            f"{(tmp_path / 'plain.txt').as_posix()}\t{plain[0].sha256}\ntext_key\ttext\n"
            f"val_per_mille\t{text_files.VAL_PER_MILLE}\nv1".encode()
        ).hexdigest()
    )
