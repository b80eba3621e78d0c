"""The persistent compilation cache (scaling.compile_cache): a rerun of a seen shape compiles
nothing, judged by JAX's cache events and the cache directory, not by time."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest

from scaling import compile_cache, config, engine
from scaling.errors import UserError
from scaling.train import train

# A shape no other test uses (d_model 20), so this process has not compiled it before.
CFG = [
    "model.d_model=20",
    "model.n_layers=1",
    "model.n_heads=5",
    "model.seq_len=16",
    "train.batch_size=8",
    "train.steps=6",
    "train.steps_per_dispatch=4",
    "data.dataset=python_source/small",
    "data.val_tokens=1024",
    "data.task_mix=0.0",
    "eval.enabled=false",
]


def _entries(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


def test_rerun_of_a_seen_shape_compiles_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "xla"
    monkeypatch.setenv(compile_cache.ENV, str(cache))
    cfg = config.load("tiny", CFG)
    engine._CACHE.clear()  # like a fresh process: every program is compiled (and written) now,
    jax.clear_caches()  # the small eager ones that earlier tests compiled in memory included
    before = compile_cache.cache_events()
    train(cfg, tmp_path / "a", progress=False)
    first = compile_cache.cache_events()
    assert first.get("cache_misses", 0) > before.get("cache_misses", 0)  # it compiled
    written = _entries(cache)
    assert any(name.startswith("jit_multi_step") for name in written)
    assert any(name.startswith("jit_init") for name in written)
    # A later process: nothing compiled in memory any more (same shape, another seed and lr).
    engine._CACHE.clear()
    jax.clear_caches()
    again = config.load("tiny", [*CFG, "train.seed=3", "train.lr=1e-3"])
    train(again, tmp_path / "b", progress=False)
    second = compile_cache.cache_events()
    assert second.get("cache_misses", 0) == first.get("cache_misses", 0)  # no compile
    assert second.get("cache_hits", 0) > first.get("cache_hits", 0)
    assert _entries(cache) == written


def test_cheap_init_compile_gives_bitwise_the_same_state() -> None:
    """The init compiles at LLVM -O1 on CPU (engine._init_options): the same bits as -O3."""
    import numpy as np

    from scaling import sharding

    cfg = config.load("tiny", CFG)
    mesh = sharding.make_mesh(cfg)
    eng = engine.engine(cfg, mesh)
    with jax.set_mesh(mesh):
        cheap = eng.init(jax.random.key(5))
        o3 = {"xla_backend_optimization_level": 3}  # explicit: tests default to -O1 (conftest)
        full = jax.jit(eng.init.__wrapped__, out_shardings=eng.state_shardings, compiler_options=o3)
        full = full(jax.random.key(5))
    same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), cheap, full)
    assert all(jax.tree.leaves(same))


def test_location_and_off_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    assert compile_cache.cache_dir(tmp_path / "tfds") == tmp_path / "tfds" / compile_cache.SUBDIR
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "elsewhere"))
    assert compile_cache.cache_dir(tmp_path / "tfds") == tmp_path / "elsewhere"
    for off in ("off", "0", "false"):
        monkeypatch.setenv(compile_cache.ENV, off)
        assert compile_cache.cache_dir(tmp_path / "tfds") is None
    previous = jax.config.jax_compilation_cache_dir
    try:
        assert compile_cache.enable(tmp_path / "tfds") is None
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        monkeypatch.setenv(compile_cache.ENV, previous or "off")
        compile_cache.enable(tmp_path / "tfds")


def _entry(i: int) -> str:
    """A file named as JAX names a cache entry (`compile_cache.ENTRY`)."""
    return f"jit_multi_step-{i:064x}-cache"


def test_prune_touches_only_jax_entries_in_a_directory_holding_other_files(tmp_path, monkeypatch):
    """$SCALING_COMPILE_CACHE set to a project directory (or ~/.cache): over the cap, only
    JAX's entries go; the researcher's files, however large or old, stay (they were deleted)."""
    mine = [tmp_path / "results.jsonl", tmp_path / "paper.tex", tmp_path / "runs" / "ckpt.bin"]
    for f in mine:
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"y" * 204800)
        os.utime(f, (1, 1))  # older than every entry
    for i in range(4):
        (tmp_path / _entry(i)).write_bytes(b"x" * 102400)
        os.utime(tmp_path / _entry(i), (1_000_000 + i, 1_000_000 + i))
    assert compile_cache.prune(tmp_path, 300_000) == 2  # 400 KiB of entries: keep 240 KB
    assert all(f.read_bytes() == b"y" * 204800 for f in mine)
    assert sorted(f.name for f in tmp_path.glob("jit_*")) == [_entry(2), _entry(3)]
    monkeypatch.setenv(compile_cache.ENV, str(mine[1]))  # a file: exit 2, before any compute
    with pytest.raises(UserError, match=r"paper.tex is a file, not a directory"):
        compile_cache.cache_dir(tmp_path / "tfds")


def test_prune_keeps_the_cache_under_its_cap_removing_least_recently_used(tmp_path, monkeypatch):
    for i in range(10):  # 10 entries of 100 KiB, entry 0 the least recently used
        f = tmp_path / _entry(i)
        f.write_bytes(b"x" * 102400)
        os.utime(f, (1_000_000 + i, 1_000_000 + i))
    assert compile_cache.prune(tmp_path, 2_000_000) == 0  # 1 MB fits under a 2 MB cap
    assert compile_cache.prune(tmp_path, 512_000) == 6  # down to 80% of the cap: 4 entries
    assert sorted(f.name for f in tmp_path.iterdir()) == [_entry(i) for i in range(6, 10)]
    monkeypatch.setenv(compile_cache.MAX_ENV, "1.5")
    assert compile_cache.max_bytes() == int(1.5 * 2**20)
    for bad in ("-1", "0", "lots", "inf"):
        monkeypatch.setenv(compile_cache.MAX_ENV, bad)
        with pytest.raises(UserError, match=compile_cache.MAX_ENV):
            compile_cache.max_bytes()


def test_the_cap_is_kept_at_every_run_not_only_when_the_cache_opens(tmp_path, monkeypatch):
    """A long sweep in one process: the cache it already uses is pruned before the next cell."""
    cache = tmp_path / "xla"
    previous = jax.config.jax_compilation_cache_dir
    monkeypatch.setenv(compile_cache.ENV, str(cache))
    try:
        assert compile_cache.enable(tmp_path) == cache  # opened (empty): nothing to prune
        for i in range(10):  # then the cells of this process add 1 MB of entries
            f = cache / _entry(i)
            f.write_bytes(b"x" * 102400)
            os.utime(f, (1_000_000 + i, 1_000_000 + i))
        monkeypatch.setenv(compile_cache.MAX_ENV, "0.5")  # 512 KiB: keep 80%, 4 entries
        assert compile_cache.enable(tmp_path) == cache  # the next run, same directory
        assert sorted(f.name for f in cache.iterdir()) == [_entry(i) for i in range(6, 10)]
    finally:
        monkeypatch.setenv(compile_cache.ENV, previous or "off")
        compile_cache.enable(tmp_path)


def test_prune_skips_entries_it_may_not_delete(tmp_path, monkeypatch):
    """A shared, read-only cache over the cap: pruning deletes what it can and never raises
    (a PermissionError here stopped every run with a traceback before it trained)."""
    for i in range(4):  # 4 entries of 100 KiB, entry0 the least recently used
        f = tmp_path / _entry(i)
        f.write_bytes(b"x" * 102400)
        os.utime(f, (1_000_000 + i, 1_000_000 + i))
    unlink = Path.unlink

    def guarded(self: Path, missing_ok: bool = False) -> None:
        if self.name == _entry(0):
            raise PermissionError(13, "Permission denied", str(self))
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", guarded)
    # 400 KiB against a 300 KB cap (keep 240 KB): entry0 stays (not ours), entry1 and 2 go
    assert compile_cache.prune(tmp_path, 300_000) == 2
    assert sorted(f.name for f in tmp_path.iterdir()) == [_entry(0), _entry(3)]


def test_bad_cache_cap_exits_2_before_the_run_directory_is_written(tmp_path, monkeypatch, capsys):
    from scaling.cli import main

    monkeypatch.setenv(compile_cache.MAX_ENV, "lots")
    out = tmp_path / "run"
    assert main(["train", "tiny", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and compile_cache.MAX_ENV in err[0]
    assert not (out / "config.toml").exists()
