"""data.text_key must name a feature holding one string per example: a number was read as that
many zero bytes (a silent corpus of NULs), a sequence crashed with a TypeError."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from scaling import config as C
from scaling.config import DataConfig
from scaling.data import open_dataset
from scaling.errors import UserError


class ScalingMixedFeatures(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A toy dataset with one text feature beside a label, a number and a list of strings."""

    VERSION = tfds.core.Version("0.1.0")

    def _info(self):
        features = {
            "body": tfds.features.Text(),
            "raw": tfds.features.Tensor(shape=(), dtype=np.object_),
            "label": tfds.features.ClassLabel(num_classes=3),
            "n": tfds.features.Scalar(dtype=np.int64),
            "words": tfds.features.Sequence(tfds.features.Text()),
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 30), "test": self._generate_examples(100, 10)}

    def _generate_examples(self, base, n):
        for i in range(base, base + n):
            text = f"document {i} " * 8
            row = {"body": text, "raw": text.encode(), "label": i % 3, "n": 40 + i, "words": ["a"]}
            yield i, row


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tfds")
    ScalingMixedFeatures(data_dir=str(root), file_format="array_record").download_and_prepare()
    return root


def _cfg(data_dir: Path, key: str) -> DataConfig:
    return DataConfig(
        dataset="scaling_mixed_features",
        data_dir=str(data_dir),
        text_key=key,
        val_split="test",
        val_tokens=40,
        task_mix=0.0,
    )


@pytest.mark.parametrize(
    ("key", "kind"), [("label", "ClassLabel"), ("n", "Scalar"), ("words", "Sequence")]
)
def test_a_text_key_that_is_not_text_is_one_clear_error(
    data_dir: Path, key: str, kind: str
) -> None:
    with pytest.raises(UserError) as e:
        open_dataset(_cfg(data_dir, key), 8, progress=False)
    msg = str(e.value)
    assert f"data.text_key = {key!r} is a {kind} feature" in msg
    assert "set data.text_key to a text feature (body, raw)" in msg


@pytest.mark.parametrize("key", ["body", "raw"])
def test_text_and_string_tensor_features_are_read(data_dir: Path, key: str) -> None:
    d = open_dataset(_cfg(data_dir, key), 8, progress=False)
    head = np.asarray(d.train_tokens[:12])
    assert head[0] == 256 and bytes(head[1:10].astype(np.uint8)) == b"document "


def test_a_short_validation_split_names_a_seq_len_that_fits(data_dir: Path) -> None:
    """A validation split shorter than seq_len said 'set data.val_tokens <= n', which the static
    check then refused ('must exceed model.seq_len'): a circle. It now names the seq_len that
    fits both splits, and following it opens the dataset with a config that validates."""
    cfg = dataclasses.replace(_cfg(data_dir, "body"), val_tokens=5000)
    with pytest.raises(UserError) as e:
        open_dataset(cfg, 1200, progress=False)
    msg = str(e.value)
    assert "but data.val_tokens must exceed model.seq_len = 1200; set model.seq_len <= " in msg
    seq_len = int(re.search(r"model\.seq_len <= (\d+)", msg)[1])
    n_val = int(re.search(r"data\.val_tokens <= (\d+)", msg)[1])
    assert n_val == seq_len + 1
    fixed = dataclasses.replace(cfg, val_tokens=n_val)
    C.validate(C.from_dict({"model": {"preset": "cpu-3xs", "seq_len": seq_len}}))
    assert open_dataset(fixed, seq_len, progress=False).n_val_windows == 1
    with pytest.raises(UserError, match=r"fewer than two windows .* set model\.seq_len <= "):
        open_dataset(fixed, 10 * seq_len, progress=False)


def test_a_data_dir_that_does_not_exist_is_named_and_not_created(tmp_path: Path) -> None:
    """A typo in data.data_dir for a dataset prepared elsewhere made the folder (empty) and
    said TFDS could not find the dataset; it now says the folder does not exist."""
    missing = tmp_path / "no" / "such"
    with pytest.raises(UserError, match=r"^data\.data_dir = .*such' does not exist.*tfds build"):
        open_dataset(_cfg(missing, "body"), 8, progress=False)
    assert not (tmp_path / "no").exists()


def test_a_damaged_token_cache_is_tokenized_again(tmp_path: Path, capsys) -> None:
    """A truncated token cache (an interrupted copy of data_dir) was memory-mapped as it was: the
    run trained on part of the corpus, without a word. Now it is rebuilt, with a warning."""
    ScalingMixedFeatures(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    cfg = _cfg(tmp_path, "body")
    whole = np.array(open_dataset(cfg, 8, progress=False).train_tokens)
    (cache,) = tmp_path.rglob("train-*.tokens.u16")
    (index,) = tmp_path.rglob("train-*.docs.npy")
    for damage in (
        lambda: cache.write_bytes(cache.read_bytes()[:1001]),
        lambda: index.write_bytes(b""),
    ):
        damage()
        capsys.readouterr()
        again = open_dataset(cfg, 8, progress=False)
        assert f"token cache {cache.name} " in capsys.readouterr().err
        np.testing.assert_array_equal(np.asarray(again.train_tokens), whole)


def test_a_split_no_seq_len_fits_names_one_fix_once() -> None:
    """With no seq_len that fits, the fix read 'use a larger dataset, or use a larger dataset',
    and a one-token validation split 'use a larger dataset (and data.val_tokens <= 1)'."""
    from scaling.data import _check_sizes

    cfg = C.load("tiny").data
    for n_train, n_val, want in (
        (2, 100, "; use a larger dataset"),
        (100, 1, "; use a larger dataset or set data.val_split to a larger split"),
    ):
        with pytest.raises(UserError) as e:
            _check_sizes(cfg, 16, n_train, n_val)
        assert str(e.value).endswith(want) and str(e.value).count("larger dataset") == 1


def test_a_text_files_validation_too_small_says_to_add_documents() -> None:
    """text_files has two fixed splits, so 'set data.val_split to a larger split' named a fix
    that does not exist; its validation grows with the documents."""
    from scaling.data import _check_sizes

    cfg = C.load("tiny", ['data.dataset="text_files"', 'data.paths=["c/*.txt"]']).data
    with pytest.raises(UserError, match=r"add documents to data\.paths .*5% of them\)$"):
        _check_sizes(cfg, 16, 100, 11)
