"""A resumed run must continue on the token stream its checkpoint was trained on: an edited
corpus (same globs, so the same run id) or a tokenizer retrained at the same path resumed
silently on another stream, repeating and skipping data."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaling import config as C
from scaling.data import check_resume, data_identity
from scaling.errors import UserError
from scaling.train import train

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")


def _cfg(root: Path) -> C.RunConfig:
    return C.load(
        "tiny",
        [
            "train.steps=8",
            "train.checkpoint_every=4",
            "model.seq_len=32",
            "data.val_tokens=200",
            "data.dataset=text_files",
            f'data.paths=["{root / "c" / "*.txt"}"]',
            f'data.data_dir="{root / "tfds"}"',
            "eval.enabled=false",
        ],
    )


def test_a_resume_on_an_edited_corpus_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    for i in range(40):
        text = " ".join(WORDS[(i * j) % 6] for j in range(60))
        (tmp_path / "c" / f"d{i}.txt").write_text(f"doc {i}: {text}\n")
    cfg, out = _cfg(tmp_path), tmp_path / "run"
    assert train(cfg, out, progress=False, stop_after=6)["status"] == "stopped"
    before = (out / "metrics.jsonl").read_text()
    events = sorted(p.name for p in (out / "tensorboard").iterdir())
    doc = tmp_path / "c" / "d3.txt"
    original = doc.read_text()
    doc.write_text(original + "an edit\n")
    with pytest.raises(UserError, match=r"checkpoint at step 4 was trained on other data.*--out"):
        train(cfg, out, progress=False)
    assert (out / "metrics.jsonl").read_text() == before  # refused before anything was logged
    # ... and before a tracker opened (TensorBoard wrote a new events file with a purge marker)
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == events
    doc.write_text(original)  # the data it was trained on: the resume goes on
    r = train(cfg, out, progress=False)
    assert r["status"] == "done" and r["resumed_from_step"] == 4


def test_check_resume_names_a_changed_tokenizer() -> None:
    info = {"tfds_name": "x/1.0.0", "n_train_tokens": 10, "tokenizer": "spm-aaaa", "batching": "b"}
    saved = data_identity(info)
    check_resume(saved, info, 4)
    check_resume(None, {**info, "tokenizer": "spm-bbbb"}, 4)  # older checkpoints: not checked
    with pytest.raises(UserError, match="tokenizer was 'spm-aaaa', now 'spm-bbbb'.*data.tokenizer"):
        check_resume(saved, {**info, "tokenizer": "spm-bbbb"}, 4)
