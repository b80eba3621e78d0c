"""Data pipeline: tokenizer, python_source corpus and manifest, resumable batches, task mix,
validation hold-out, and any TFDS dataset by name + data_dir (a toy one built here)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from scaling.config import DataConfig
from scaling.data import open_dataset, tokenizer
from scaling.data import python_source as ps
from scaling.errors import UserError

SEQ = 64
W = SEQ + 1


class ScalingToyText(tfds.core.GeneratorBasedBuilder):
    """A tiny text dataset with non-ASCII documents, prepared locally by the tests."""

    VERSION = tfds.core.Version("0.1.0")
    DOCS = {
        "train": [f"train doc {i}: héllo wörld ✓ " * (3 + i % 5) for i in range(40)],
        "test": [f"held-out doc {i}: ünïcode → {i * i}" * 4 for i in range(12)],
    }

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({"content": tfds.features.Text()})
        )

    def _split_generators(self, dl_manager):
        return {k: self._generate_examples(v) for k, v in self.DOCS.items()}

    def _generate_examples(self, docs):
        for i, text in enumerate(docs):
            yield i, {"content": text}


class ScalingToyFiles(ScalingToyText, skip_registration=True):
    """Not registered: opening it by name exercises TFDS's read-from-files path (as for a
    dataset prepared on another machine whose builder code is not importable here)."""


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tfds")


def _cfg(data_dir: Path, **kw) -> DataConfig:
    kw.setdefault("dataset", "python_source/small")
    kw.setdefault("val_tokens", 8192)
    kw.setdefault("task_mix", 0.0)
    return DataConfig(data_dir=str(data_dir), **kw)


@pytest.fixture(scope="session")
def small(data_dir):
    return open_dataset(_cfg(data_dir), SEQ, progress=False)


def _builder(data_dir: Path):
    return tfds.builder("python_source/small", data_dir=str(data_dir))


def test_tokenizer_round_trip_non_ascii():
    text = "def f(x):\n    return 'naïve café ✓ 日本語 🚀'\n"
    ids = tokenizer.encode(text)
    assert ids.dtype == np.uint16 and ids.max() < 256 and len(ids) == len(text.encode())
    assert tokenizer.decode(ids) == text
    doc = tokenizer.encode_document(text)
    assert doc[0] == tokenizer.BOS and doc[-1] == tokenizer.EOS
    assert tokenizer.decode(doc) == text
    assert tokenizer.VOCAB_SIZE == 259 and tokenizer.PAD == 258


def test_splits_disjoint_and_manifest_matches_files(small, data_dir):
    builder = _builder(data_dir)
    paths = {}
    for split in ("train", "validation"):
        src = builder.as_data_source(split=split)
        rows = src.__getitems__(list(range(len(src))))
        for r in rows:
            assert hashlib.sha256(r["text"]).hexdigest() == r["sha256"].decode()
        paths[split] = {r["path"].decode(): r["sha256"].decode() for r in rows}
    assert paths["train"] and paths["validation"]
    assert not set(paths["train"]) & set(paths["validation"])
    for rel in paths["validation"]:
        assert ps.is_validation(rel, builder.builder_config)
    # The stored manifest lists exactly the stored files, with the hashes of the files on disk.
    lines = (Path(builder.data_dir) / "manifest.tsv").read_text().splitlines()
    stored = dict(line.split("\t") for line in lines)
    assert stored == {**paths["train"], **paths["validation"]}
    root = ps.stdlib_root()
    for rel, digest in list(stored.items())[:20]:
        assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == digest
        assert "site-packages" not in rel
    assert builder.info.metadata["manifest_sha256"] == ps.manifest_digest(lines)
    assert small.info["manifest_sha256"] == ps.manifest_digest(lines)
    assert small.info["n_files"] == len(lines)
    assert 500_000 < small.info["n_train_tokens"] < 3_000_000  # the small config is ~1-2 MB


def test_batch_is_pure_function_of_seed_step_batch(small, data_dir):
    b = small.batch(5, 8, seed=1)
    assert b.shape == (8, W) and b.dtype == np.int32
    # A fresh object (as after a restart) and an out-of-order call reproduce step 5 exactly.
    fresh = open_dataset(_cfg(data_dir), SEQ, progress=False)
    fresh.batch(900, 8, seed=1)
    np.testing.assert_array_equal(fresh.batch(5, 8, seed=1), b)
    assert not np.array_equal(small.batch(6, 8, seed=1), b)
    assert not np.array_equal(small.batch(5, 8, seed=2), b)
    # Rows are global: step 1 at B=8 is the second half of step 0 at B=16.
    np.testing.assert_array_equal(small.batch(0, 16, seed=1)[8:], small.batch(1, 8, seed=1))


def test_batch_rows_are_stream_windows_and_epochs_cover(small):
    tokens = np.asarray(small.train_tokens)
    starts = small.row_starts(3, 16, seed=0)
    batch = small.batch(3, 16, seed=0)
    for row, s in zip(batch, starts, strict=True):
        np.testing.assert_array_equal(row, tokens[s : s + W])
    # One epoch visits n_windows distinct, non-overlapping windows on one shifted grid.
    n = small.n_windows
    all_starts = small.row_starts(0, n, seed=0)
    assert len(np.unique(all_starts)) == n
    assert len(np.unique(all_starts % W)) == 1 and all_starts.max() + W <= len(tokens)
    next_epoch = small.row_starts(1, n, seed=0)
    assert not np.array_equal(np.sort(all_starts), np.sort(next_epoch)) or n < 2


def test_validation_is_held_out(small, data_dir):
    cfg = _cfg(data_dir)
    batches = small.val_batches(16)
    wins = np.concatenate(batches)
    assert all(b.shape[1] == W for b in batches) and max(b.shape[0] for b in batches) == 16
    assert wins.shape[0] == (cfg.val_tokens - 1) // SEQ
    # Windows overlap by one token and tile the first val_tokens tokens of the val split.
    np.testing.assert_array_equal(wins[1:, 0], wins[:-1, -1])
    assert np.array_equal(wins[0], np.asarray(small.val_tokens[:W]))
    padded = small.val_batches(16, pad=True)
    assert all(b.shape == (16, W) for b in padded)
    # No validation document is a training document (the split is by file).
    builder = _builder(data_dir)

    def doc_hashes(split):
        src = builder.as_data_source(split=split)
        return {hashlib.sha256(r["text"]).hexdigest() for r in src.__getitems__(range(len(src)))}

    train_docs, val_docs = doc_hashes("train"), doc_hashes("validation")
    assert val_docs and not train_docs & val_docs
    # And the validation windows never occur in the training stream.
    train = np.asarray(small.train_tokens)
    probe = wins[len(wins) // 2]
    hits = np.flatnonzero(train[: len(train) - W] == probe[0])
    assert not any(np.array_equal(train[h : h + W], probe) for h in hits)


def test_task_mix_fraction_and_zero_mix_never_calls(data_dir):
    calls = []

    def fake_mix(rng, n_bytes):
        calls.append(n_bytes)
        return (b"TASK " * (n_bytes // 5 + 1))[:n_bytes]

    mixed = open_dataset(_cfg(data_dir, task_mix=0.25), SEQ, progress=False, mix_fn=fake_mix)
    rows, n_mixed = 0, 0
    for k in range(200):
        b = mixed.batch(k, 16, seed=0)
        is_task = np.array([tokenizer.decode(r).startswith("TASK TASK") for r in b])
        assert (b[is_task, 0] == tokenizer.BOS).all()
        np.testing.assert_array_equal(np.flatnonzero(is_task), mixed.mix_rows(k, 16, 0))
        rows, n_mixed = rows + 16, n_mixed + int(is_task.sum())
    assert abs(n_mixed / rows - 0.25) < 0.03
    np.testing.assert_array_equal(mixed.batch(7, 16, seed=0), mixed.batch(7, 16, seed=0))

    def boom(rng, n_bytes):
        raise AssertionError("mix_text called with task_mix = 0")

    plain = open_dataset(_cfg(data_dir, task_mix=0.0), SEQ, progress=False, mix_fn=boom)
    for k in range(20):
        plain.batch(k, 16, seed=0)


def test_task_mix_uses_evals_mix_text(data_dir):
    pytest.importorskip("scaling.evals.tasks")
    d = open_dataset(_cfg(data_dir, task_mix=0.5), SEQ, progress=False)
    k = next(k for k in range(50) if len(d.mix_rows(k, 8, 0)))
    row = d.batch(k, 8, seed=0)[d.mix_rows(k, 8, 0)[0]]
    assert row[0] == tokenizer.BOS and (row[1:] < 256).all()


def test_unknown_and_unprepared_datasets_are_user_errors(data_dir, tmp_path):
    with pytest.raises(UserError, match="no_such_dataset_xyz.*data.data_dir"):
        open_dataset(_cfg(data_dir, dataset="no_such_dataset_xyz"), SEQ, progress=False)
    with pytest.raises(UserError, match="python_source/huge.*python_source/small"):
        open_dataset(_cfg(data_dir, dataset="python_source/huge"), SEQ, progress=False)
    with pytest.raises(UserError, match="scaling_toy_text.*not prepared.*tfds build"):
        open_dataset(_cfg(tmp_path, dataset="scaling_toy_text"), SEQ, progress=False)
    with pytest.raises(UserError, match="val_tokens"):
        open_dataset(_cfg(data_dir, val_tokens=10**8), SEQ, progress=False)
    with pytest.raises(UserError, match="val_split"):
        open_dataset(_cfg(data_dir, val_split="train"), SEQ, progress=False)


@pytest.mark.parametrize("toy", [ScalingToyText, ScalingToyFiles])
def test_local_tfds_dataset_by_name_and_data_dir(tmp_path, toy):
    toy(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    cfg = DataConfig(
        dataset=toy.name,
        data_dir=str(tmp_path),
        text_key="content",
        val_split="test",
        val_tokens=200,
        task_mix=0.0,
    )
    with pytest.raises(UserError, match="text_key"):
        open_dataset(DataConfig(**{**cfg.__dict__, "text_key": "text"}), 16, progress=False)
    d = open_dataset(cfg, 16, progress=False)
    src = tfds.builder(toy.name, data_dir=str(tmp_path)).as_data_source(split="train")
    docs = [r["content"] for r in src.__getitems__(range(len(src)))]
    expected = np.concatenate([tokenizer.encode_document(t) for t in docs])
    np.testing.assert_array_equal(np.asarray(d.train_tokens), expected)
    assert sorted(t.decode() for t in docs) == sorted(ScalingToyText.DOCS["train"])
    assert d.info["tfds_name"] == f"{toy.name}/0.1.0" and d.info["n_val_tokens"] == 200
    assert d.batch(2, 4, seed=0).shape == (4, 17)
    assert "ünïcode" in tokenizer.decode(np.concatenate(d.val_batches(4)).ravel())


def test_stale_stdlib_manifest_rebuilds_and_keeps_tokenizers(tmp_path):
    cfg = _cfg(tmp_path)
    first = open_dataset(cfg, SEQ, progress=False)
    meta_path = Path(_builder(tmp_path).data_dir) / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["manifest_sha256"] = "0" * 64  # as if prepared by another interpreter
    meta_path.write_text(json.dumps(meta))
    user_model = meta_path.parent / "tokenizers" / "spm-bpe-512.model"  # the old default path
    user_model.parent.mkdir()
    user_model.write_bytes(b"a user's tokenizer")
    again = open_dataset(cfg, SEQ, progress=False)
    assert again.info["manifest_sha256"] == first.info["manifest_sha256"] != "0" * 64
    assert (
        user_model.read_bytes() == b"a user's tokenizer"
    )  # the rebuild keeps what it did not make
    np.testing.assert_array_equal(again.batch(0, 4, 0), first.batch(0, 4, 0))


def test_tfrecord_prepared_dataset_is_a_user_error(tmp_path, monkeypatch):
    """TFDS prepares tfrecord by default, and as_data_source() refuses it with a
    NotImplementedError (writing tfrecord needs TensorFlow, so the refusal is simulated)."""
    ScalingToyText(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()

    def refuse(self, split, **kw):
        raise NotImplementedError("Random access data source for file format tfrecord")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "as_data_source", refuse)
    cfg = DataConfig(
        dataset=ScalingToyText.name,
        data_dir=str(tmp_path),
        text_key="content",
        val_split="test",
        val_tokens=200,
        task_mix=0.0,
    )
    with pytest.raises(UserError, match="not array_record.*--file_format array_record"):
        open_dataset(cfg, 16, progress=False)


@pytest.mark.parametrize(
    ("train", "val", "ok"),
    [
        ("train", "validation", True),
        ("train[:99%]", "train[99%:]", True),
        ("train[:1000]", "train[1000:]", True),
        ("train[-1%:]", "train[:99%]", True),
        ("train[:50%]+test", "train[50%:]", True),
        ("train[:-1000]", "train[-1000:]", True),  # the last 1000: it was refused as unchecked
        ("train[-2000:-1000]", "train[-1000:]", True),
        ("train[:-500]", "train[-1000:]", False),
        ("train[:1000]", "train[-1000:]", False),  # apart only if the split holds >= 2000
        ("train", "train", False),
        ("train", "train[:1%]", False),  # a slice of the split trained on whole: it passed
        ("train[:90%]", "train", False),
        ("train[:50%]", "train[40%:60%]", False),
        ("train[:1000]", "train[500:]", False),
        ("train+validation", "validation", False),
        ("train[:1000]", "train[99%:]", False),  # mixed units: cannot be checked, refused
    ],
)
def test_validation_must_be_held_out_from_training(train, val, ok):
    from scaling.data import check_disjoint_splits

    if ok:
        check_disjoint_splits(train, val)
    else:
        with pytest.raises(UserError, match=r"data\.train_split = .* and data\.val_split = "):
            check_disjoint_splits(train, val)


class ScalingToyTwoFields(ScalingToyText):
    """Two text features per document, so data.text_key picks which one is tokenized."""

    def _info(self):
        text = tfds.features.Text()
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({"content": text, "title": text})
        )

    def _generate_examples(self, docs):
        for i, text in enumerate(docs):
            yield i, {"content": text, "title": f"title {i}"}


def test_text_key_is_part_of_the_token_cache(tmp_path):
    """Changing data.text_key tokenizes the other field, never the cache of the first."""
    ScalingToyTwoFields(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    kw = dict(dataset=ScalingToyTwoFields.name, data_dir=str(tmp_path), val_split="test")
    kw.update(val_tokens=50, task_mix=0.0)
    content = open_dataset(DataConfig(text_key="content", **kw), 8, progress=False)
    title = open_dataset(DataConfig(text_key="title", **kw), 8, progress=False)
    assert tokenizer.decode(np.asarray(title.train_tokens)).count("title ") == 40
    assert "title" not in tokenizer.decode(np.asarray(content.train_tokens))


@pytest.mark.parametrize(
    ("val", "err"),
    [
        ("test+train[:1]", None),
        ("train[:1]+nosuch", "'nosuch' is not a split"),
        ("nosuch", "'nosuch' is not a split"),
        ("test[:95%](closest)", "cannot be read"),
        ("test[:200%]", "cannot be read"),
    ],
)
def test_every_part_of_a_split_expression_is_checked(tmp_path, val, err):
    ScalingToyText(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    cfg = DataConfig(
        dataset=ScalingToyText.name,
        data_dir=str(tmp_path),
        text_key="content",
        train_split="train[1:]",
        val_split=val,
        val_tokens=50,
        task_mix=0.0,
    )
    if err is None:
        assert open_dataset(cfg, 8, progress=False).info["val_split"] == val
    else:
        with pytest.raises(UserError, match=f"{err}.*data.train_split / data.val_split"):
            open_dataset(cfg, 8, progress=False)


def test_data_dir_that_is_a_file_names_data_data_dir(tmp_path):
    (tmp_path / "afile").write_text("")
    for bad in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        with pytest.raises(UserError, match=r"^data\.data_dir = .*afile.*set data\.data_dir"):
            open_dataset(_cfg(bad), SEQ, progress=False)
