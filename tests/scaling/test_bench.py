"""`python -m scaling.bench`: bad step counts exit 2 before compiling; the numbers add up."""

from __future__ import annotations

import pytest

from scaling import bench, flops

TINY = ["model.preset=cpu-3xs", "model.seq_len=32", "train.batch_size=8"]


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--steps", "0"], ["--steps 0", ">= 1"]),  # 0 used to run the default 30 steps
        (["--steps", "-1"], ["--steps -1", ">= 1"]),  # used to die in an UnboundLocalError
        (["--warmup", "-2", "--steps", "2"], ["--warmup -2", ">= 0"]),  # a TypeError
    ],
)
def test_bad_step_counts_exit_2(
    args: list[str], names: list[str], capsys: pytest.CaptureFixture
) -> None:
    sets = [x for o in TINY for x in ("--set", o)]
    assert bench.main([*args, *sets]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for name in names:
        assert name in err, err


def test_numbers_are_self_consistent() -> None:
    cfg, _ = bench.bench_config("small", TINY)
    r = bench.run_bench(cfg, steps=2, warmup=0)
    seconds = r["step_ms"] * r["steps"] / 1e3
    assert r["tokens_per_step"] == 8 * 32
    assert r["tokens_per_s"] * seconds == pytest.approx(r["steps"] * r["tokens_per_step"])
    assert r["flops_per_token"] == flops.flops_per_token(cfg.model)
    assert r["flops_per_s"] == pytest.approx(r["tokens_per_s"] * r["flops_per_token"])
    assert r["mfu"] is None  # CPU: no invented peak
    text = bench.format_result(r)
    assert flops.CONVENTION in text and "cost_analysis()" in text


@pytest.mark.parametrize(
    ("item", "names"),
    [
        ("train.steps=5", ["--set train.steps=5", "use --steps"]),  # was silently ignored
        ("train.warmup_steps=2", ["train.warmup_steps", "constant lr"]),
        ("train.steps_per_dispatch=4", ["one update per call"]),
        ("data.dataset=lm1b", ["data.dataset", "pseudo-random tokens"]),
    ],
)
def test_a_set_the_bench_would_ignore_exits_2(
    item: str, names: list[str], capsys: pytest.CaptureFixture
) -> None:
    assert bench.main(["--steps", "1", "--set", item]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for name in names:
        assert name in err, err


def test_seed_and_lr_are_honoured() -> None:
    """The init and the batches used key 0 whatever train.seed said."""
    runs = {
        sets: bench.run_bench(bench.bench_config("small", [*TINY, *sets])[0], steps=1, warmup=0)
        for sets in [(), ("train.seed=1",), ("train.lr=1e-2",)]
    }
    base, seeded, lr = runs.values()
    assert (base["seed"], seeded["seed"]) == (0, 1)
    assert seeded["final_loss"] != base["final_loss"]
    assert lr["lr"] == pytest.approx(1e-3) and base["lr"] == pytest.approx(3e-4)
    assert "constant (0.1 x train.lr), seed 1" in bench.format_result(seeded)
