"""Few-shot suite: deterministic generators, disjoint pools, formats, training mix, scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scaling.config import from_dict
from scaling.evals import tasks as T

NON_COPY = [t for t in T.TASKS if t != "copy"]


def _line_candidates(line: str) -> list[tuple[str, str]]:
    """(task, key) pairs consistent with one `input -> output` line of task text."""
    inp, out = line.split(T.SEP)
    cands = []
    if inp.isalpha() and 3 <= len(inp) <= 6:
        if out == inp:
            cands.append(("copy", inp))
        if out == inp[::-1]:
            cands.append(("reverse", min(inp, out)))
    if "+" in inp:
        a, b = (int(x) for x in inp.split("+"))
        assert a + b == int(out)
        task = "add2" if a < 100 else "add3"
        cands.append((task, f"{min(a, b)}+{max(a, b)}"))
    if ":" in inp:
        cands.append(("kv_recall", inp))
    if out in T.identifiers() and sorted(inp) == sorted(out) and inp != out:
        cands.append(("unscramble", out))
    assert cands, line
    return cands


def test_generators_are_deterministic_and_seeded():
    for task in T.TASKS:
        a, b = T.test_items(task, 16, seed=0), T.test_items(task, 16, seed=0)
        assert a == b and len({it.key for it in a}) == 16
        assert a != T.test_items(task, 16, seed=1)
        d4 = T.demos_for(task, a[3], 3, 4, seed=0)
        assert d4 == T.demos_for(task, a[3], 3, 4, seed=0)
        assert T.demos_for(task, a[3], 3, 1, seed=0) == d4[:1]  # K-shot demos are nested
    x = T.mix_text(np.random.default_rng(7), 500)
    assert x == T.mix_text(np.random.default_rng(7), 500)
    assert x != T.mix_text(np.random.default_rng(8), 500)


def test_pools_partition_and_items_come_from_their_pool():
    for task in T.TASKS:
        queries = T.test_items(task, 32, seed=3)
        for i, q in enumerate(queries):
            assert T.pool_of(task, q.key) == "test"
            for d in T.demos_for(task, q, i, 4, seed=3):
                assert T.pool_of(task, d.key) == "demo"
                assert d.output != q.output  # copying a demo's answer can never pass
        rng = np.random.default_rng(0)
        mix = T.draw(task, "mix", rng, 32, avoid=None)
        assert all(T.pool_of(task, it.key) == "mix" for it in mix)
    counts = {p: 0 for p in T.POOLS}
    for i in range(5000):
        counts[T.pool_of("copy", str(i))] += 1
    assert abs(counts["mix"] / 5000 - 0.6) < 0.03 and abs(counts["test"] / 5000 - 0.2) < 0.03


def test_mix_text_has_exact_length_and_only_mix_pool_items():
    rng = np.random.default_rng(0)
    assert len(T.mix_text(rng, 129)) == 129 and T.mix_text(rng, 0) == b""
    text = T.mix_text(np.random.default_rng(1), 60_000)
    assert len(text) == 60_000 and isinstance(text, bytes)
    lines = text.decode("ascii").split("\n")[:-1]  # the last line may be cut
    pairs = [ln for ln in lines if T.SEP in ln]
    instructions = {t.instruction for t in T.TASKS.values()}
    assert all(ln in instructions or ln == "" or ln in pairs for ln in lines)
    assert len(pairs) > 2000
    for ln in pairs:
        assert any(T.pool_of(t, k) == "mix" for t, k in _line_candidates(ln)), ln
    seen = set(pairs)
    for task in T.TASKS:
        for seed in range(3):
            for it in T.test_items(task, 64, seed):
                if it.input != it.output:  # a palindrome line is also a copy line
                    assert f"{it.input}{T.SEP}{it.output}" not in seen
    # every task and every K in 0..4 occurs in the mix
    assert {t for ln in pairs for t, _ in _line_candidates(ln)} == set(T.TASKS)
    assert sum(ln in instructions for ln in lines) > 50


def test_prompt_format_zero_one_few_shot():
    q = T.Item("abc", "cba", "abc")
    d1, d2 = T.Item("xyz", "zyx", "xyz"), T.Item("pq", "qp", "pq")
    assert T.format_prompt("reverse", [], q, instruction=True) == "Reverse the text:\nabc ->"
    assert T.format_prompt("reverse", [d1], q, instruction=False) == "xyz -> zyx\nabc ->"
    assert T.format_prompt("reverse", [d1, d2], q, instruction=False) == (
        "pq -> qp\nxyz -> zyx\nabc ->"
    )
    assert T.format_target(q) == " cba\n"
    for task in T.TASKS:
        q = T.test_items(task, 4, 0)[2]
        d = T.demos_for(task, q, 2, 4, 0)
        p0 = T.format_prompt(task, d[:0], q, instruction=True)
        p1 = T.format_prompt(task, d[:1], q, instruction=False)
        p4 = T.format_prompt(task, d[:4], q, instruction=False)
        assert p0 == f"{T.TASKS[task].instruction}\n{q.input} ->"
        assert p4.endswith(p1) and p4.count("\n") == 4 and p1.count("\n") == 1
        assert p1 == f"{d[0].input} -> {d[0].output}\n{q.input} ->"


def test_copy_the_last_demo_baseline_cannot_pass():
    for task in NON_COPY:
        items = T.test_items(task, 64, 0)
        for k in (1, 4):
            guesses = [T.demos_for(task, q, i, k, 0)[0].output for i, q in enumerate(items)]
            assert np.mean([g == q.output for g, q in zip(guesses, items, strict=True)]) == 0.0
        if task != "reverse":  # echoing the query is the copy task, not these
            assert np.mean([q.input == q.output for q in items]) == 0.0


def test_unscramble_uses_corpus_identifiers_and_chance_levels():
    words = T.identifiers()
    assert list(words) == sorted(words) and len(words) > 500
    for it in T.test_items("unscramble", 32, 0):
        assert it.output in words and it.input != it.output
        assert sorted(it.input) == sorted(it.output) and it.key == it.output
    items = T.test_items("add2", 64, 0)
    c = T.chance("add2", items)
    assert c["token_acc"] == 0.1 and 1e-3 < c["exact_match"] < 1e-2
    assert T.chance("kv_recall", [])["exact_match"] == pytest.approx(1 / 3)
    assert T.chance("copy", T.test_items("copy", 8, 0))["token_acc"] == pytest.approx(1 / 26)


def test_identifiers_are_kept_on_disk_and_equal_a_fresh_scan(tmp_path, monkeypatch):
    import sysconfig
    from pathlib import Path

    monkeypatch.setenv("SCALING_DATA_DIR", str(tmp_path))
    T.identifiers.cache_clear()
    try:
        words = T.identifiers()  # scans, then writes the cache file
        (cached,) = (tmp_path / "identifiers").iterdir()
        T.identifiers.cache_clear()
        assert T.identifiers() == words  # read back from the file
        cached.write_text('["uncached"]')  # (the file is what a later process reads)
        T.identifiers.cache_clear()
        assert T.identifiers() == ("uncached",)
    finally:
        T.identifiers.cache_clear()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    assert words == T._scan_identifiers(stdlib, sorted(stdlib.glob("*.py")))


# ----------------------------------------------------------------------------- scoring (JAX)


def _cfg(**ev):
    ev = {"n_items": 8, **ev}
    return from_dict({"model": {"preset": "cpu-3xs", "seq_len": 128}, "eval": ev})


def _oracle(cfg, wrong_rows: tuple[int, ...] = ()):
    """An nnx module whose logits put all mass on the true next byte of every scored row (found
    by matching the prompt against a table of the rows); rows in `wrong_rows` end in "!" instead
    of the final newline. Rows are ordered task-major, then K, then item."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from scaling.evals import score as S

    groups = [
        S.build_group(t, k, cfg.eval.n_items, cfg.eval.seed, cfg.model.seq_len)
        for t in (cfg.eval.tasks or T.TASKS)
        for k in cfg.eval.shots
    ]
    rows = [r for g in groups for r in g.rows]
    table = np.full((len(rows), cfg.model.seq_len + 1), S.PAD, np.int32)
    for i, r in enumerate(rows):
        table[i, : len(r)] = r
    predict = table.copy()  # what the oracle says comes next (rows matched on the true table)
    for i in wrong_rows:
        predict[i, len(rows[i]) - 1] = ord("!")

    class Oracle(nnx.Module):
        def __init__(self):
            self.table = nnx.Variable(jnp.asarray(table))
            self.predict = nnx.Variable(jnp.asarray(predict))

        def __call__(self, x_BT):
            tab, W = self.table[...], x_BT.shape[1]
            f, x = tab[None, :, :W], x_BT[:, None, :]
            match = jnp.all((x == f) | (x == S.PAD) | (f == S.PAD), axis=-1)
            nxt_BT = self.predict[...][jnp.argmax(match, axis=1)][:, 1 : W + 1]
            return 30.0 * jax.nn.one_hot(nxt_BT, 259, dtype=jnp.float32)

    return Oracle()


def test_perfect_oracle_scores_one_and_decode_agrees():
    from scaling.evals.score import evaluate

    cfg = _cfg(shots=[0, 1, 4])
    oracle = _oracle(cfg)
    for decode in (False, True):
        out = evaluate(oracle, cfg, decode=decode)
        for task in T.TASKS:
            for k in ("0", "1", "4"):
                s = out["scores"][task][k]
                assert s["exact_match"] == 1.0 and s["token_acc"] == 1.0, (task, k, decode)
                assert -1e-3 < s["logprob"] <= 0 and s["n_items"] == 8


def test_wrong_final_newline_fails_exact_match_but_not_token_acc():
    from scaling.evals.score import evaluate

    cfg = _cfg(shots=[0], tasks=["copy"])
    oracle = _oracle(cfg, wrong_rows=(0, 2, 4, 6))
    for decode in (False, True):
        s = evaluate(oracle, cfg, decode=decode)["scores"]["copy"]["0"]
        assert s["exact_match"] == 0.5 and s["token_acc"] == 1.0
        assert s["logprob"] == pytest.approx(-15.0, abs=1e-3)  # 4 of 8 rows pay 30 nats


def test_evaluate_random_transformer_is_well_formed():
    pytest.importorskip("scaling.model")
    from flax import nnx

    from scaling.evals.score import evaluate
    from scaling.model import Transformer

    cfg = _cfg(shots=[0, 1, 4], n_items=16)
    model = Transformer(cfg.model, rngs=nnx.Rngs(0))
    out = evaluate(model, cfg)
    assert set(out) >= {"scores", "chance", "shots", "seconds"}
    assert out["shots"] == [0, 1, 4] and out["seconds"] > 0
    assert set(out["scores"]) == set(T.TASKS) == set(out["chance"])
    for task, by_k in out["scores"].items():
        assert set(by_k) == {"0", "1", "4"}
        for s in by_k.values():
            assert set(s) >= {"exact_match", "token_acc", "logprob", "n_items"}
            assert s["n_items"] == 16 and 0 <= s["exact_match"] <= 1 and 0 <= s["token_acc"] <= 1
            assert s["logprob"] < 0 and math.isfinite(s["logprob"])
        assert set(out["chance"][task]) == {"exact_match", "token_acc"}
    again = evaluate(model, cfg)
    assert again["scores"] == out["scores"]  # deterministic


def test_short_seq_len_truncates_farthest_demos_and_records_it():
    from scaling.evals.score import build_group

    g = build_group("unscramble", 4, 8, 0, 64)
    assert g.truncated > 0 and all(len(r) <= 64 for r in g.rows) and len(g.rows) == 8
    assert 0 < g.shots_used < 4 * 8
    full = build_group("unscramble", 4, 8, 0, 512)
    assert full.truncated == 0
    # the kept demos are the nearest ones: every truncated row is a suffix of the full row
    for short, long in zip(g.rows, full.rows, strict=True):
        assert np.array_equal(short[1:], long[len(long) - len(short) + 1 :])


def test_evaluate_under_a_device_mesh_matches_single_device():
    """train.py calls evaluate inside `jax.set_mesh(mesh)` (activations get sharded)."""
    pytest.importorskip("scaling.sharding")
    import jax
    from flax import nnx

    from scaling import sharding
    from scaling.config import from_dict as make
    from scaling.evals.score import evaluate
    from scaling.model import Transformer

    cfg = make(
        {
            "model": {"preset": "cpu-3xs"},
            "mesh": {"data": 2, "fsdp": 2, "tensor": 2},
            "eval": {"n_items": 8, "shots": [1], "tasks": ["add2", "kv_recall"]},
        }
    )
    model = Transformer(cfg.model, rngs=nnx.Rngs(1))
    plain = evaluate(model, cfg)["scores"]
    with jax.set_mesh(sharding.make_mesh(cfg)):
        sharded = evaluate(model, cfg)["scores"]
    for task in plain:
        a, b = plain[task]["1"], sharded[task]["1"]
        assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-3)
        assert a["token_acc"] == b["token_acc"] and a["exact_match"] == b["exact_match"]


def test_scorer_ids_match_tokenizer_and_width_choice():
    from scaling.data import tokenizer
    from scaling.evals import score as S

    assert (S.BOS, S.PAD) == (tokenizer.BOS, tokenizer.PAD)
    lengths = sorted([30] * 256 + [60] * 256 + [100] * 128)
    assert set(S.choose_widths(lengths, 128, 30_000, set())) == {128}  # one compile
    assert set(S.choose_widths(lengths, 128, 10_000_000, set())) == {32, 64, 128}
    assert set(S.choose_widths(lengths, 128, 30_000, {32, 64, 128})) == {32, 64, 128}  # cached
    assert S.choose_widths([200], 128, 30_000, set()) == [128]  # never above seq_len


def test_items_too_long_for_seq_len_are_counted_and_chance_covers_the_rest(capsys):
    """At seq_len 16 seven of copy's 16 test items (and all of kv_recall's) do not fit: they
    are counted per task and K, named on stderr, and chance is over the nine scored."""
    from flax import nnx

    from scaling.evals.score import evaluate
    from scaling.model import Transformer

    cfg = from_dict(
        {
            "model": {"preset": "cpu-3xs", "seq_len": 16},
            "eval": {"n_items": 16, "shots": [0, 1], "tasks": ["copy", "kv_recall"]},
        }
    )
    out = evaluate(Transformer(cfg.model, rngs=nnx.Rngs(0)), cfg)
    fits = [q for q in T.test_items("copy", 16, 0) if len(q.input) + len(q.output) + 6 <= 16]
    assert len(fits) == 9 and {s["n_items"] for s in out["scores"]["copy"].values()} == {9}
    assert out["dropped"] == {"copy": {"0": 7, "1": 7}, "kv_recall": {"0": 16, "1": 16}}
    assert out["chance"]["copy"] == T.chance("copy", fits) and "kv_recall" not in out["scores"]
    err = capsys.readouterr().err
    assert "model.seq_len = 16 were not scored (copy 7/16, kv_recall 16/16)" in err


@pytest.mark.parametrize(
    ("ev", "seq_len", "match"),
    [
        ({"tasks": ["add2"], "n_items": 900}, 64, r"eval.n_items = 900: .*add2.* <= \d+"),
        ({"tasks": ["add2"], "shots": [0, 900]}, 64, r"eval.shots = \[0, 900\].*<= \d+"),
        ({"tasks": ["kv_recall"]}, 16, r"model.seq_len = 16 .*kv_recall.* >= 20"),
    ],
)
def test_infeasible_eval_is_refused_before_training(ev, seq_len, match):
    from scaling.errors import UserError
    from scaling.train import _check_eval_tasks

    cfg = from_dict({"model": {"preset": "cpu-3xs", "seq_len": seq_len}, "eval": ev})
    with pytest.raises(UserError, match=match):
        _check_eval_tasks(cfg)
