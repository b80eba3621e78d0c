"""`scaling finetune` end to end on a tiny trained run, resuming, and its input errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scaling import config
from scaling.cli import main
from scaling.errors import UserError
from scaling.evals import tasks as T

BASE = [
    "model.preset=cpu-3xs",
    "model.seq_len=48",
    "train.batch_size=16",
    "train.steps=6",
    "data.dataset=python_source/small",
    "data.val_tokens=2048",
    "data.task_mix=0.0",
    "eval.enabled=false",
]
FT = ["--task", "upper", "--df", "8,24", "--set", "steps=3", "--set", "eval_items=32"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scaling.train import train

    out = tmp_path_factory.mktemp("ft") / "run"
    assert train(config.load("tiny", BASE), out, progress=False)["status"] == "done"
    return out


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_finetune_writes_rows_and_resumes(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ft"
    argv = ["finetune", str(run_dir), *FT, "--method", "full", "--method", "lora:r=2"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    rows = _rows(out / "results.jsonl")
    assert len(rows) == 4 and {r["d_f"] for r in rows} == {8, 24}
    # one line per finished row (stderr is no terminal here, so there is no bar either)
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("[")]
    assert [x.split("]")[0] for x in lines] == ["[1/4", "[2/4", "[3/4", "[4/4"]
    assert f"{rows[0]['run_id']} N=" in lines[0] and "full D_f=8: eval loss " in lines[0]
    assert f"(before {rows[0]['pre_eval_loss']:.4f})" in lines[0] and "3 steps in " in lines[0]
    result = json.loads((run_dir / "result.json").read_text())
    for r in rows:
        assert r["n_params"] == result["N_total"] and r["pretrain_tokens"] == result["D"]
        assert r["steps"] == 3 and r["n_eval_items"] == 32 and r["wall_time_s"] > 0
        assert r["eval_loss"] > 0 and 0 <= r["exact_match"] <= 1
        assert (out / "rows" / r["row_id"] / "checkpoints").is_dir()
    full = [r for r in rows if r["method"] == "full"]
    lo = [r for r in rows if r["method"] == "lora:r=2"]
    assert all(r["trainable_params"] == result["N_total"] for r in full)
    d, f, layers = 16, 64, 1  # cpu-3xs: q, k, v, o are d x d, gate/up d x f, down f x d
    assert all(r["trainable_params"] == layers * 2 * (4 * 2 * d + 3 * (d + f)) for r in lo)
    assert all(r["eval_loss"] < r["pre_eval_loss"] for r in full)  # fine-tuning helps
    capsys.readouterr()
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0  # rerun: nothing to do
    assert "4 row(s) done, 0 to do" in capsys.readouterr().err
    assert _rows(out / "results.jsonl") == rows


def _no_ckpt_run(run_dir: Path, tmp_path: Path) -> Path:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("result.json", "config.toml"):
        shutil.copy(run_dir / name, bare / name)
    return bare


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "lora:r=4,targets=q+query"], "unknown projection 'query'"),
        (["--method", "lora:r=0"], "rank r = 0"),
        (["--method", "lora:r=-2"], "rank r = -2"),
        (["--method", "full", "--df", "0"], "--df '0'"),
        (["--method", "full", "--df", "8,100000000"], "--df 100000000: task 'upper' yields"),
        (["--method", "full", "--task", "nope"], "unknown eval task 'nope'"),
        (["--method", "full", "--task", "evalonly"], "has no training pool"),
        (["--method", "full", "NOCKPT"], "has no checkpoint"),
        (["--method", "full", "--set", "lra=1"], "--set 'lra=1'"),
        (["--method", "full", "--set", "lora.lr=1"], "no --method lora is given"),
        # non-finite or out-of-range settings: a NaN lr trained a row whose eval loss was null
        # and recorded it as done; seed=-1 was a numpy traceback; 2.5 was truncated to 2
        (["--method", "full", "--set", "lr=nan"], "lr must be a finite number, e.g. lr=3e-3"),
        (["--method", "full", "--set", "steps=inf"], "steps must be a finite number"),
        (["--method", "full", "--set", "seed=-1"], "seed = -1: must be >= 0"),
        (["--method", "full", "--set", "batch_size=2.5"], "batch_size expects a whole number"),
        (["--method", "full", "--set", "min_lr_ratio=2"], "min_lr_ratio = 2.0: must be in [0, 1]"),
        (["--method", "full", "--set", "grad_clip=0"], "grad_clip = 0.0: must be > 0"),
        (["--method", "lora:r=2,alpha=nan"], "LoRA alpha = nan: must be a finite number"),
        (["--method", "lora:r=2,alpha=inf"], "LoRA alpha = inf"),
        (["--method", "full", "--set", "eval_items=40000"], "--set eval_items=40000: task 'upper'"),
    ],
)
def test_bad_input_exits_2_with_one_line_before_compute(
    run_dir: Path, tmp_path: Path, capsys, monkeypatch, extra: list[str], message: str
) -> None:
    monkeypatch.setitem(
        T.HELD_OUT_TASKS,
        "evalonly",
        T.Task("evalonly", "Copy:", T.LETTERS, T.TASKS["copy"].sample, trainable=False),
    )
    target = str(_no_ckpt_run(run_dir, tmp_path)) if "NOCKPT" in extra else str(run_dir)
    extra = [x for x in extra if x != "NOCKPT"]
    out = tmp_path / "ft"
    argv = ["finetune", target, "--task", "upper", "--df", "8", *extra, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()  # nothing was trained or written


def test_sizes_pick_one_run_per_size_whatever_the_finish_order() -> None:
    """--sizes picks the longest-trained run of each size; between seeds of equal D, the lowest
    seed, so two launches whose runs finished in different orders fine-tune the same runs."""
    from sweeps.finetune import select_runs

    def run(rid: str, n: int, d: int, seed: int) -> dict:
        cfg = {"train": {"seed": seed}}  # as in result.json: the seed is in the config
        return {"run_id": rid, "dir": Path(rid), "result": {"N_total": n, "D": d, "config": cfg}}

    runs = [run("a1", 10, 100, 1), run("c0", 10, 100, 0), run("b0", 20, 50, 0), run("b", 20, 80, 1)]
    runs.append(run("a2", 10, 100, 2))
    for order in (runs, runs[::-1]):  # the seed decides, not the run id or the finish order
        assert [r["run_id"] for r in select_runs(order, "", 2)] == ["c0", "b"]


# SIGINT right after a row's checkpoint save started (Orbax commits it in a background thread)
_SIGINT_MID_SAVE = """
import os, signal, sys
from scaling import checkpoint, cli
real = checkpoint.Checkpointer._save
def save(self, *a, **k):
    real(self, *a, **k)
    os.kill(os.getpid(), signal.SIGINT)
checkpoint.Checkpointer._save = save
sys.argv = ["scaling", *sys.argv[1:]]
cli.entry()
"""


def test_sigint_during_a_row_checkpoint_save_exits_130_with_one_line(
    run_dir: Path, tmp_path: Path
) -> None:
    """The signal raised inside the save, the Checkpointer was never closed, and its commit
    thread, still running at interpreter exit, printed Orbax tracebacks after the one line,
    and sometimes hung the process (a plausible cause of the exit 139 once seen after Ctrl-C).
    Now the save finishes, Orbax's threads stop, and the command exits 130 with one line."""
    import sys

    from conftest import finish, spawn

    out = tmp_path / "ft"
    argv = ["finetune", str(run_dir), *FT, "--method", "full", "--out", str(out), "--no-progress"]
    rc, log = finish(spawn([sys.executable, "-c", _SIGINT_MID_SAVE, *argv]), timeout=90)
    assert rc == 130, log
    assert log.strip().splitlines()[-1] == "interrupted by SIGINT: rerun the same command to resume"
    assert "Traceback" not in log and "ERROR" not in log
    assert not (out / "results.jsonl").exists()  # the row is trained again on the rerun
    assert main([*argv]) == 0 and len(_rows(out / "results.jsonl")) == 2


def test_a_diverged_fine_tune_is_one_line_naming_the_lr(run_dir: Path, tmp_path: Path, capsys):
    """A non-finite fine-tuning loss ended `scaling finetune` in a FloatingPointError traceback."""
    argv = ["finetune", str(run_dir), "--task", "upper", "--df", "8", "--method", "full"]
    argv += ["--set", "steps=3", "--set", "lr=1e30", "--out", str(tmp_path / "ft")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: fine-tuning full at D_f=8 diverged (loss not finite at step ")
    assert "lr = 1e+30); lower it, e.g. --set full.lr=1e+29" in err


def test_a_damaged_result_json_is_one_line_not_a_traceback(tmp_path: Path, capsys) -> None:
    """find_runs parsed result.json with json.loads: a damaged one (a run dir, or a sweep's run)
    ended `scaling finetune` in a JSONDecodeError traceback before any check."""
    from sweeps.finetune import find_runs

    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text('{"run_id": "abc", "sta')
    with pytest.raises(UserError, match=r"result.json is damaged \(not valid JSON.*rerun the "):
        find_runs(run)
    (run / "result.json").write_text("[1]")
    with pytest.raises(UserError, match=r"result.json is not a run's result; rerun the "):
        find_runs(run)
    sweep = tmp_path / "sweep"
    row = {"run_id": "abc", "status": "done", "N_total": 10, "D": 20}
    (sweep / "runs" / "abc").mkdir(parents=True)
    (sweep / "results.jsonl").write_text(json.dumps(row) + "\n")
    (sweep / "runs" / "abc" / "result.json").write_text('{"run_id": "abc", "sta')
    (found,) = find_runs(sweep)  # the sweep's own row stands in, with one warning
    assert found["result"] == row and "result.json is damaged" in capsys.readouterr().err


def test_each_row_pre_score_uses_its_own_eval_items(run_dir: Path, tmp_path: Path) -> None:
    """The base model was scored once per run, on the first method's eval_items: a lora row
    with `--set lora.eval_items=24` got a pre_eval_loss over 8 items next to an eval_loss over
    24. Each row's pre score is now over its own items: the same as a run of that method alone."""
    common = ["finetune", str(run_dir), "--task", "upper", "--df", "8", "--no-progress"]
    common += ["--set", "steps=1", "--set", "save=false", "--set", "eval_items=8"]
    both, alone = tmp_path / "both", tmp_path / "alone"
    lora_items = ["--set", "lora.eval_items=24"]
    argv = [*common, "--method", "full", "--method", "lora:r=2", *lora_items, "--out", str(both)]
    assert main(argv) == 0
    assert main([*common, "--method", "lora:r=2", *lora_items, "--out", str(alone)]) == 0
    rows = {r["method"]: r for r in _rows(both / "results.jsonl")}
    (single,) = _rows(alone / "results.jsonl")
    assert rows["full"]["n_eval_items"] == 8 and rows["lora:r=2"]["n_eval_items"] == 24
    assert rows["lora:r=2"]["pre_eval_loss"] == single["pre_eval_loss"]
    assert rows["full"]["pre_eval_loss"] != rows["lora:r=2"]["pre_eval_loss"]


def test_a_run_mesh_this_host_lacks_falls_back_to_data_parallel(run_dir, tmp_path, capsys):
    """A run trained on more devices than are visible (here 8 x 2 on 8) was refused with
    'set one size to -1 or match the device count', a setting finetune has no flag for; it now
    fine-tunes data-parallel over the visible devices, with one warning, as ablate does."""
    moved = tmp_path / "run"
    shutil.copytree(run_dir, moved, ignore=shutil.ignore_patterns("finetune"))
    head, mesh = (moved / "config.toml").read_text().split("[mesh]\n")
    mesh = mesh.replace("data = -1\n", "data = 8\n", 1).replace("tensor = 1\n", "tensor = 2\n", 1)
    (moved / "config.toml").write_text(f"{head}[mesh]\n{mesh}")
    out = tmp_path / "ft"
    argv = ["finetune", str(moved), "--task", "upper", "--df", "8", "--method", "full"]
    argv += ["--set", "steps=1", "--set", "eval_items=8", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "the run's mesh (data=8, fsdp=1, tensor=2) does not fit the 8 visible" in err
    assert len(_rows(out / "results.jsonl")) == 1


def test_a_batch_the_mesh_cannot_split_is_one_line_not_a_traceback(run_dir, tmp_path, capsys):
    """--set batch_size=3 on 8 data-parallel devices was a JAX IndivisibleError traceback from
    the first step; now one line naming the batch and a multiple that splits, before training."""
    out = tmp_path / "ft"
    argv = ["finetune", str(run_dir), "--task", "upper", "--df", "8", "--method", "full"]
    argv += ["--set", "batch_size=3", "--set", "eval_items=8", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: fine-tuning batch_size = 3 does not split over data x fsdp = 8")
    assert "--set batch_size=8" in err and not (out / "results.jsonl").exists()


def test_examples_longer_than_the_context_are_one_line_before_compute(run_dir, tmp_path, capsys):
    """An example longer than model.seq_len + 1 was refused by encode_examples, after the
    checkpoint restore and the base's pre-score, with the output directory already made."""
    short = tmp_path / "run"
    shutil.copytree(run_dir, short, ignore=shutil.ignore_patterns("finetune"))
    toml = (short / "config.toml").read_text()
    assert "seq_len = 48\n" in toml
    (short / "config.toml").write_text(toml.replace("seq_len = 48\n", "seq_len = 24\n", 1))
    out = tmp_path / "ft"
    argv = ["finetune", str(short), "--task", "upper", "--df", "8", "--method", "full"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "more than model.seq_len + 1 = 25; fine-tune runs with a" in err[0]
    assert not out.exists()


def test_full_rows_of_a_mup_run_hash_the_lr_multiplier() -> None:
    """Rows fully fine-tuned from a muP run before its hidden 1/m lr was kept would keep their
    id, and a rerun would mix old- and new-optimiser rows: their id now hashes `mup_lr`."""
    import dataclasses

    from scaling import config as C
    from scaling.evals.finetune_spec import parse_method, resolve_settings
    from sweeps.finetune import _hashed

    sp = C.load("tiny")
    mup = dataclasses.replace(sp, model=dataclasses.replace(sp.model, param="mup", base_width=8))
    for label, moved in (("full", True), ("lora:r=2", False)):
        m = parse_method(label)
        settings = {m.label: resolve_settings(m.kind, [])}
        assert ("mup_lr" in _hashed(m, settings, mup)) is moved
        assert "mup_lr" not in _hashed(m, settings, sp)  # SP rows keep their ids


def test_a_warmup_past_a_rows_steps_is_warned(capsys) -> None:
    """warmup_steps >= a row's steps fell back to steps // 10 without a word."""
    from scaling.evals.finetune_spec import resolve_settings, train_config

    s = resolve_settings("full", ["warmup_steps=50", "batch_size=4", "epochs=1"])
    assert train_config(s, 400).warmup_steps == 50 and not capsys.readouterr().err  # 100 steps
    assert train_config(s, 40).warmup_steps == -1  # 10 steps: steps // 10
    assert "warmup_steps = 50 is not below a row's 10 steps (D_f = 40)" in capsys.readouterr().err
