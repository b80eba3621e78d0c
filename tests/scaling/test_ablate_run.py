"""`scaling ablate` end to end on a tiny trained run: the record, resumption after a kill, the
sweep table, and the analysis section that reads it."""

from __future__ import annotations

import dataclasses
import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis.ablation import analyze, load_table
from analysis.ablation_plots import all_figures
from scaling import config
from scaling.cli import main
from scaling.evals.ablate import AblateSpec, ablate_run
from scaling.train import train

TINY = [
    "model.preset=cpu-2xs",  # d 24, 2 layers, 2 heads
    "model.seq_len=64",
    "train.batch_size=16",
    "train.steps=20",
    "data.dataset=python_source/small",
    "data.val_tokens=2048",
    "eval.tasks=['copy', 'kv_recall']",
    "eval.shots=[0, 1]",
    "eval.n_items=12",
]
SPEC = AblateSpec(fractions=(0.25, 0.5, 0.75), resamples=100, induction_seqs=4)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "runs" / "tinyrun"
    res = train(config.load("tiny", TINY), out, progress=False)
    assert res["status"] == "done" and (out / "checkpoints").is_dir()
    return out


def test_record_and_resume_after_a_kill(run_dir, tmp_path):
    fresh = tmp_path / "fresh"
    shutil.copytree(run_dir, fresh)
    assert ablate_run(fresh, SPEC, stop_after=2) is None  # killed after two pruning steps
    out = fresh / "ablation" / SPEC.check().key()
    assert len(list((out / "steps").glob("*.json"))) == 2 and not (out / "result.json").exists()
    first = {p.name: p.read_text() for p in (out / "steps").glob("*.json")}
    resumed = ablate_run(fresh, SPEC)
    assert {
        p.name: p.read_text() for p in (out / "steps").glob("*.json") if p.name in first
    } == first
    whole = ablate_run(run_dir, SPEC)  # never interrupted
    for key in ("curves", "removable", "importance"):
        assert resumed[key] == whole[key], key
    assert ablate_run(fresh, SPEC) == resumed  # done: read back, nothing recomputed

    L, N = whole["n_layers"], whole["n_heads"]
    imp = whole["importance"]
    assert sorted(imp["head_order"]) == list(range(L * N))
    assert sorted(imp["ffn_order"]) == list(range(L)) and imp["ffn_order_method"] == "greedy"
    assert set(imp["heads"]) == {"copy/0", "copy/1", "kv_recall/0", "kv_recall/1"}
    assert all(np.all(np.asarray(v) >= 0) for v in imp["heads"].values())
    assert np.asarray(imp["induction"]["prefix"]).shape == (L, N)
    agg = np.ravel(imp["heads_aggregate"])
    assert np.all(np.diff(agg[imp["head_order"]]) >= 0)  # removal order: least important first
    heads = whole["curves"]["heads"]
    assert heads["n_heads"] == [0, 1, 2, 3] and heads["actual"] == [0.0, 0.25, 0.5, 0.75]
    assert whole["curves"]["ffn"]["n_ffn"] == [0, 0, 1, 1]
    # both: (heads + FFN blocks removed) / (4 heads + 2 blocks), not the requested fraction
    assert whole["curves"]["both"]["actual"] == pytest.approx([0.0, 1 / 6, 0.5, 2 / 3])
    for kind in ("heads", "ffn", "both"):
        for metric in ("exact_match", "token_acc", "logprob"):
            for g in whole["removable"][kind][metric]["groups"].values():
                assert 0.0 <= g["lo"] <= g["hi"] <= 1.0
                assert g["retained"][0] is None or g["retained"][0] == pytest.approx(1.0)
    # the unpruned point of every curve is the run's own few-shot score
    evals = json.loads((run_dir / "result.json").read_text())["evals"]["scores"]
    got = whole["curves"]["heads"]["groups"]["copy/1"]["logprob"][0]
    assert got == pytest.approx(evals["copy"]["1"]["logprob"], rel=1e-5)


def test_an_older_summary_is_recomputed_from_its_recorded_steps(run_dir, tmp_path):
    """A result.json summarised before `both` credited what was removed (no summary_version,
    `both` curve at the requested fractions) is recomputed from the step files, without the
    model: the checkpoints are gone here, so loading it would fail."""
    whole = ablate_run(run_dir, SPEC)
    stale = tmp_path / "stale"
    shutil.copytree(run_dir, stale)
    shutil.rmtree(stale / "checkpoints")
    path = stale / "ablation" / SPEC.check().key() / "result.json"
    old = json.loads(path.read_text())
    del old["summary_version"]
    old["curves"]["both"]["actual"] = [0.0, 0.25, 0.5, 0.75]
    old["removable"]["both"]["logprob"]["suite"]["estimate"] = 0.75
    old["chance"] = {t: {"exact_match": 0.0, "token_acc": 0.0} for t in old["chance"]}  # v2's
    path.write_text(json.dumps(old))
    got = ablate_run(stale, SPEC)
    assert got["summary_version"] == whole["summary_version"] == 3
    for key in ("curves", "removable", "importance", "chance"):
        assert got[key] == whole[key], key
    assert json.loads(path.read_text())["curves"]["both"]["actual"][1] == pytest.approx(1 / 6)


def test_sweep_command_table_and_report_section(run_dir, capsys):
    sweep = run_dir.parent.parent
    rec = {"run_id": "tinyrun", "status": "done", "cell": {"budget": 1e9}, "N_total": 1}
    (sweep / "results.jsonl").write_text(json.dumps(rec) + "\n")
    args = ["ablate", str(sweep), "--fractions", "0.25,0.5,0.75", "--resamples", "100"]
    assert main([*args, "--budget", "largest", "--no-progress"]) == 0
    assert "table:" in capsys.readouterr().err
    recs = load_table(sweep)
    assert len(recs) == 1 and recs[0]["run_dir"] == str(run_dir)
    res = analyze(sweep / "ablation.jsonl", sweep / "report")
    run_id = json.loads((run_dir / "result.json").read_text())["run_id"]
    assert f"| {run_id} |" in res["md"] and "not fitted" in res["md"]  # one run: no trend
    for paths in all_figures(res, sweep / "report").values():
        assert Path(paths[0]).stat().st_size > 10_000
    assert json.loads((sweep / "report" / "ablation.json").read_text())["runs"][0]["run_id"]
    # a full disk while drawing is the one-line DiskFullError (exit 1), not an OSError traceback
    from matplotlib.figure import Figure

    from scaling.errors import DiskFullError

    def enospc(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "savefig", enospc)
        with pytest.raises(DiskFullError, match="ablation_removable.png"):
            all_figures(res, sweep / "report")


# The names an ablation record carried before the record schema was unified (issue 18).
OLD_NAMES = {
    "N_total": "n_params_total",
    "N_nonembed": "n_params_nonembed",
    "D": "tokens",
    "C_6ND": "flops_6nd_total",
}


def test_old_format_ablation_records_still_load(run_dir, tmp_path, capsys):
    """A record in the old names (as `scaling ablate` wrote it before) gives the same record,
    table, ablation.json, report section and figures as today's, read back by every reader."""
    from sweeps.ablate import _line, collect

    new = ablate_run(run_dir, SPEC)
    assert set(OLD_NAMES) <= set(new) and not set(OLD_NAMES.values()) & set(new)
    assert new["N_total"] > 0 and new["C_6ND"] == pytest.approx(6 * new["N_total"] * new["D"])
    old = {OLD_NAMES.get(k, k): v for k, v in new.items()}
    out = {}
    for kind, rec in (("new", new), ("old", old)):
        sweep = tmp_path / kind
        run = sweep / "runs" / run_dir.name
        shutil.copytree(run_dir, run)
        rec = {**rec, "run_dir": new["run_dir"]}
        (run / "ablation" / SPEC.check().key() / "result.json").write_text(json.dumps(rec))
        (sweep / "ablation.jsonl").write_text(json.dumps(rec, sort_keys=True) + "\n")
        assert ablate_run(run, SPEC) == new  # read back, nothing recomputed
        assert collect(sweep, SPEC.check().key()) == [new]
        assert load_table(sweep) == [new]
        res = analyze(sweep / "ablation.jsonl", sweep / "report")
        figs = all_figures(res, sweep / "report")
        out[kind] = (
            res["md"],
            (sweep / "report" / "ablation.json").read_text(),
            [Path(p[0]).read_bytes() for p in figs.values()],
            _line(collect(sweep, SPEC.check().key())[0]),
        )
    assert out["old"] == out["new"]
    assert f"N={new['N_total']:.3g}" in out["old"][3]


def test_shots_that_do_not_fit_seq_len_are_reported(run_dir, tmp_path, capsys):
    """--shots 40 at seq_len 64: build_group drops demos until a prompt fits, so the "copy/40"
    curves measure a few shots; the record and the per-run line now say so (they were silent)."""
    from sweeps.ablate import _line

    fresh = tmp_path / "fresh"
    shutil.copytree(run_dir, fresh)
    spec = AblateSpec(tasks=("copy",), shots=(0, 40), fractions=(0.5,), kinds=("heads",),
                      resamples=20, induction_seqs=2)  # fmt: skip
    rec = ablate_run(fresh, spec)
    assert list(rec["truncated"]) == ["copy/40"]  # 0-shot rows fit: not listed
    assert 0 <= rec["truncated"]["copy/40"]["mean_shots"] < 5
    assert "prompts cut to fit seq_len: copy/40 used" in _line(rec)


def test_single_head_order_removes_heads_by_their_measured_effect(run_dir, tmp_path, capsys):
    """--head-order single: each head's suite loss with it alone removed orders the removal
    (least harmful first); the default (gradient) spec keeps its key, so earlier tables stay
    valid. Its L*N suite evaluations and the greedy FFN order's L(L+1)/2 advance a progress bar
    (they ran silently: minutes on a large model before the pruning steps' bar appeared)."""
    from scaling.evals.importance import single_head_order

    order, losses = single_head_order(
        2, 3, lambda m: float(np.dot(1 - m.ravel(), [5, 1, 3, 0, 2, 4]))
    )
    assert order == [3, 1, 4, 2, 5, 0] and losses == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert AblateSpec().key() == "9acc01d78b"  # the key before head_order existed
    spec = AblateSpec(fractions=(0.5,), resamples=20, induction_seqs=2, head_order="single")
    fresh = tmp_path / "single"
    shutil.copytree(run_dir, fresh)
    imp = ablate_run(fresh, spec, progress=True)["importance"]
    assert imp["head_order_method"] == "single" and sorted(imp["head_order"]) == [0, 1, 2, 3]
    err = capsys.readouterr().err
    assert "importance single: 100%" in err and "| 7/7 [" in err  # 2 x 2 heads + 3 greedy
    assert imp["head_single_losses"] == sorted(imp["head_single_losses"])


def test_more_items_than_the_test_pool_is_one_line_before_compute(run_dir, tmp_path, capsys):
    """--n-items above a task's test pool (add2 has under 1000 items) failed only inside the
    ablation, after the checkpoint restore and after the table had been moved to .bak."""
    sweep = tmp_path / "sweep"
    shutil.copytree(run_dir, sweep / "runs" / "tinyrun", ignore=shutil.ignore_patterns("ablation"))
    rec = {"run_id": "tinyrun", "status": "done", "cell": {}, "N_total": 1}
    (sweep / "results.jsonl").write_text(json.dumps(rec) + "\n")
    (sweep / "ablation.jsonl").write_text(json.dumps({"spec_key": "older"}) + "\n")
    argv = ["ablate", str(sweep), "--tasks", "add2", "--n-items", "5000", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --n-items 5000: task 'add2' yields only ")
    assert not (sweep / "runs" / "tinyrun" / "ablation").exists()
    assert (sweep / "ablation.jsonl").is_file() and not (sweep / "ablation.jsonl.bak").exists()


def test_a_training_batch_the_devices_do_not_divide_does_not_stop_it(run_dir, tmp_path):
    """Ablation restores on a data-parallel mesh over every visible device, and that mesh was
    checked against the run's pre-training batch: a run trained with batch 12 could not be
    ablated on 8 devices (nor one of 16 on 3 GPUs), with an error naming train.batch_size."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("ablation"))
    toml = (run / "config.toml").read_text()
    assert "batch_size = 16\n" in toml
    (run / "config.toml").write_text(toml.replace("batch_size = 16\n", "batch_size = 12\n", 1))
    spec = dataclasses.replace(
        SPEC, tasks=("copy",), shots=(0,), fractions=(0.5,), kinds=("heads",)
    )
    rec = ablate_run(run, spec)
    assert rec is not None and rec["removable"]["heads"]["logprob"]["suite"]["eligible"]


def test_a_metric_counts_only_above_the_answer_prior_rate(run_dir):
    """add2's token accuracy counted as above chance at 0.23-0.33 against the nominal 1/10,
    though 0.33 is what knowing that a 3-digit sum starts with 1 scores (scaling.evals.prior)."""
    from scaling import config
    from scaling.evals import prior
    from scaling.evals import tasks as T
    from scaling.evals.ablate import AblateSpec, _chance

    cfg = config.load(run_dir / "config.toml")
    level = _chance(cfg, AblateSpec(tasks=("add2", "copy"), shots=(0,), n_items=32).check())
    items = T.test_items("add2", 32, cfg.eval.seed)
    assert level["add2"]["token_acc"] == prior.majority("add2", items)["token_acc"] > 0.25
    assert level["copy"]["token_acc"] == pytest.approx(
        max(1 / 26, prior.majority("copy", T.test_items("copy", 32, cfg.eval.seed))["token_acc"])
    )
