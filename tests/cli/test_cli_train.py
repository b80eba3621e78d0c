"""`scaling train` through scaling.cli.main: bad configs exit 2 before any compute; a run works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaling import cli

FAST = [
    "model.preset=cpu-3xs",
    "model.seq_len=32",
    "train.batch_size=16",
    "train.steps=6",
    "data.dataset=python_source/small",
    "data.val_tokens=2048",
    "data.task_mix=0.0",
    "eval.enabled=false",
]


def _argv(out: Path, *overrides: str) -> list[str]:
    sets = [x for o in (*FAST, *overrides) for x in ("--set", o)]
    return ["train", "tiny", *sets, "--out", str(out), "--no-progress"]


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["model.n_heads=3"], ["model.n_heads", "model.d_model"]),  # 3 does not divide 16
        (["mesh.data=3", "train.batch_size=24"], ["mesh", "devices"]),  # 3 asked, 8 visible
        # batch vs a fixed data x fsdp fails without looking at devices (sweep plan too)
        (["mesh.data=1", "mesh.fsdp=3"], ["train.batch_size = 16", "1 x 3 = 3"]),
        (["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=1"], ["mesh", "devices"]),
        (["data.dataset=no_such_dataset_xyz"], ["no_such_dataset_xyz"]),
        (["model.preset=gpt5-huge"], ["model.preset", "gpt5-huge"]),
        (["train.steps=0"], ["train.steps"]),
        (["train.steps=-5"], ["train.steps"]),
        (["train.batch_size=0"], ["train.batch_size"]),
        (["train.batch_size=-16"], ["train.batch_size"]),
        (["train.batch_size=12"], ["train.batch_size", "data x fsdp = 8"]),  # 12 % 8 != 0
        (["mesh.data=2", "mesh.fsdp=-1", "train.batch_size=20"], ["train.batch_size"]),
        (["train.stepz=10"], ["stepz"]),
        (["model.vocab_size=100"], ["model.vocab_size = 100", "259"]),  # NaN at step 1
        (["train.seed=-1"], ["train.seed = -1"]),
        (["eval.enabled=true", "eval.tasks=['no_such_task']"], ["no_such_task"]),
    ],
)
def test_bad_config_exits_2_before_compute(
    tmp_path: Path, capsys: pytest.CaptureFixture, overrides: list[str], names: list[str]
) -> None:
    from scaling import engine  # noqa: PLC0415 - loaded after cli, like the real command

    compiled_before = dict(engine._CACHE)
    out = tmp_path / "run"
    assert cli.main(_argv(out, *overrides)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    for name in names:
        assert name in err, err
    assert not out.exists()  # nothing written ...
    assert engine._CACHE == compiled_before  # ... and nothing compiled


def test_unknown_attention_override_exits_2_before_compute(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SCALING_ATTENTION=flash used to be ignored silently (the automatic choice ran)."""
    from scaling import engine  # noqa: PLC0415 - loaded after cli, like the real command

    compiled_before = dict(engine._CACHE)
    monkeypatch.setenv("SCALING_ATTENTION", "flash")
    out = tmp_path / "run"
    assert cli.main(_argv(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "SCALING_ATTENTION='flash'" in err and "xla, cudnn, einsum" in err, err
    assert not out.exists() and engine._CACHE == compiled_before


def test_missing_tracker_exits_2_before_compute(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SCALING_TRACK naming an uninstalled backend used to fail only once the tracker opened:
    after the model init, leaving config.toml, checkpoints/ and an event file behind."""
    import importlib.util  # noqa: PLC0415

    from scaling import engine  # noqa: PLC0415 - loaded after cli, like the real command

    missing = "mlflow" if importlib.util.find_spec("mlflow") is None else "wandb"
    if importlib.util.find_spec(missing) is not None:
        pytest.skip("both wandb and mlflow are installed")
    compiled_before = dict(engine._CACHE)
    monkeypatch.setenv("SCALING_TRACK", missing)
    out = tmp_path / "run"
    assert cli.main(_argv(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert f"SCALING_TRACK asks for {missing}" in err and "pip install" in err, err
    assert not out.exists() and engine._CACHE == compiled_before


def test_from_step_that_does_not_exist_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`--from-step 4` on a new directory used to write config.toml and an empty checkpoints/
    (the step was checked only once Orbax's manager had made it) before exiting 2."""
    out = tmp_path / "run"
    assert cli.main([*_argv(out), "--from-step", "4"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: --from-step 4: no checkpoint step 4 in ") and "(steps none)" in err
    )
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    (out / "checkpoints" / "2").mkdir(parents=True)  # a step of an earlier session (and a tmp)
    (out / "checkpoints" / "3.orbax-checkpoint-tmp-1").mkdir()
    assert cli.main([*_argv(out), "--from-step", "4"]) == 2
    assert "(steps 2); pick one of them, or --restart" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]  # no config.toml written


def test_a_setting_that_does_nothing_warns_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """model.base_width under model.param = "sp" was accepted silently, yet moved the run id.
    A warning (not an error: stored configs holding it must still load)."""
    from scaling import fileio  # noqa: PLC0415

    monkeypatch.setattr(fileio, "_warned", set())  # warned once per process: not yet
    argv = [*_argv(tmp_path / "run", "model.base_width=64"), "--from-step", "4"]
    assert cli.main(argv) == 2  # stops at once: the warning comes first, from the config
    warning, error = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith("warning: model.base_width = 64 does nothing with model.param")
    assert "changes the run id" in warning and error.startswith("error: --from-step 4")


def test_out_is_a_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "a_file"
    out.write_text("x")
    assert cli.main(_argv(out)) == 2
    assert "is a file, not a directory" in capsys.readouterr().err


def test_an_empty_out_exits_2_and_trains_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--out "$UNSET"` was read as no --out and trained into runs/<name>-<hash>."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "tiny", "--set", "train.steps=3", "--out", ""]) == 2
    assert capsys.readouterr().err.startswith("error: --out is empty; pass a run directory")
    assert not (tmp_path / "runs").exists()


def test_missing_config_file_exits_2(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["train", "/no/such/config.toml"]) == 2
    assert "not found" in capsys.readouterr().err


def test_train_command_runs_and_says_where_outputs_are(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    assert cli.main(_argv(out)) == 0
    text = capsys.readouterr().out
    assert f"outputs in {out}/" in text and "metrics.jsonl" in text and "result.json" in text
    assert f"tensorboard --logdir {out}/tensorboard" in text  # the events were not listed
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "done" and result["step"] == 6
    assert (out / "config.toml").is_file() and (out / "checkpoints").is_dir()
    # rerunning the same command is safe: it finds the finished run and trains nothing
    assert cli.main(_argv(out)) == 0
    assert json.loads((out / "result.json").read_text()) == result


def test_restart_and_from_step_retrain_a_finished_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Both used to be ignored once result.json existed: the stored result came back, exit 0."""
    out = tmp_path / "run"
    assert cli.main(_argv(out)) == 0
    first, first_steps = json.loads((out / "result.json").read_text()), _metric_steps(out)
    steps = sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    assert cli.main([*_argv(out), "--from-step", str(steps[0])]) == 0
    resumed = json.loads((out / "result.json").read_text())
    assert resumed["resumed_from_step"] == steps[0] > 0
    assert resumed["final_val_loss"] == first["final_val_loss"]  # bitwise continuation
    assert json.loads((out / "result.replaced.json").read_text()) == first
    assert cli.main([*_argv(out), "--restart"]) == 0
    again = json.loads((out / "result.json").read_text())
    assert again["resumed_from_step"] is None and again["step"] == first["step"]
    assert again["final_val_loss"] == first["final_val_loss"]
    assert any(p.name.startswith("restarted-") for p in (out / "checkpoints").iterdir())
    assert _metric_steps(out) == first_steps  # the retrained steps replace, not repeat


def _metric_steps(out: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_stored_result_missing_fields_still_summarises(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The rerun of a finished run prints its stored result.json; one written before a field
    existed (or edited by hand) used to end in a KeyError traceback."""
    out = tmp_path / "run"
    assert cli.main(_argv(out)) == 0
    capsys.readouterr()
    result = json.loads((out / "result.json").read_text())
    for key in ("mfu", "evals", "tokens_per_s", "C_exact", "N_nonembed"):
        del result[key]
    (out / "result.json").write_text(json.dumps(result))
    assert cli.main(_argv(out)) == 0
    text = capsys.readouterr().out
    assert "n/a tokens/s, MFU n/a" in text and "FLOPs n/a" in text, text
    assert f"{result['N_total']:,} total, n/a non-embedding" in text, text


def test_diverged_run_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert cli.main(_argv(out, "train.lr=1e9", "train.warmup_steps=0")) == 1
    assert "diverged" in capsys.readouterr().out


@pytest.mark.parametrize(("vocab", "warned"), [(259, False), (512, False), (50257, True)])
def test_a_vocab_far_past_the_tokenizers_ids_is_warned(
    capsys: pytest.CaptureFixture, vocab: int, warned: bool
) -> None:
    """A GPT-2 vocab (50,257) on the byte tokenizer's 259 ids trained silently: 50k embedding
    rows never used, counted in N (12.8M parameters at d_model 256 tied), the readout paying."""
    from scaling import config  # noqa: PLC0415
    from scaling.train import _check_vocab  # noqa: PLC0415

    cfg = config.load("tiny", [f"model.vocab_size={vocab}", "model.d_model=256"])
    _check_vocab(cfg)
    err = capsys.readouterr().err
    assert ("12,799,488 embedding parameters are never used" in err) is warned, err
    assert ("set model.vocab_size = 259 (or 512" in err) is warned, err
