"""The one record schema (scaling.results): the JSON cleaner, result.json written and read in
today's names, old-format result.json and results.jsonl files still read, the one "finished"
check, and the atomic append."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_grid

from analysis.tables import load_results
from scaling import results as R
from scaling.errors import UserError
from sweeps import registry
from sweeps.grid import load_grid, plan_grid
from sweeps.runner import run_cell

# A result.json as the engine wrote it before the names were unified (issue 18).
OLD_RESULT = {
    "run_id": "0123456789ab",
    "name": "old",
    "status": "done",
    "step": 12,
    "diverged_at_step": None,
    "final_val_loss": 2.5,
    "best_val_loss": 2.4,
    "n_params_total": 5000,
    "n_params_embed": 1000,
    "n_params_nonembed": 4000,
    "tokens": 6144,
    "flops_per_token": 25000.0,
    "flops_exact": 153600000.0,
    "flops_6nd_total": 184320000.0,
    "flops_6nd_nonembed": 147456000.0,
    "evals": None,
}

GRID = tiny_grid("tiny", tokens="[2e4]", n_max="3e3", count=1)


def test_clean_json_converts_numpy_paths_and_containers():
    value = {
        "a": np.float32(0.5),
        "b": np.int64(3),
        "c": np.bool_(True),
        "d": np.array([[1.0, 2.0]]),
        "e": (1, 2),
        "f": {3},
        "g": Path("x/y"),
        np.int64(7): "numpy key",
        "h": [np.float64(1.25), None, "s"],
    }
    out = R.clean_json(value)
    assert out == {
        "a": 0.5,
        "b": 3,
        "c": True,
        "d": [[1.0, 2.0]],
        "e": [1, 2],
        "f": [3],
        "g": "x/y",
        "7": "numpy key",
        "h": [1.25, None, "s"],
    }
    assert type(out["a"]) is float and type(out["b"]) is int and type(out["c"]) is bool
    assert type(out["h"][0]) is float  # a numpy float64 becomes a plain float
    json.dumps(out, allow_nan=False)  # strict JSON


def test_clean_json_nonfinite_and_private_keys():
    value = {"x": math.nan, "y": [np.float64(math.inf), -math.inf], "_cache": 1, "z": 1.5}
    assert R.clean_json(value) == {"x": None, "y": [None, None], "_cache": 1, "z": 1.5}
    kept = R.clean_json(value, keep_nonfinite=True)
    assert math.isnan(kept["x"]) and kept["y"] == [math.inf, -math.inf]
    assert json.dumps(kept) == '{"x": NaN, "y": [Infinity, -Infinity], "_cache": 1, "z": 1.5}'
    assert R.clean_json(value, drop_private=True) == {"x": None, "y": [None, None], "z": 1.5}
    assert R.clean_json({"a": {"_b": 1, "c": 2}}, drop_private=True) == {"a": {"c": 2}}


def test_write_result_keeps_nan_and_sorts_keys(tmp_path):
    R.write_result(tmp_path / "result.json", {"status": "diverged", "best_val_loss": math.nan})
    text = (tmp_path / "result.json").read_text()
    assert text == '{\n  "best_val_loss": NaN,\n  "status": "diverged"\n}\n'


def test_old_result_json_reads_in_todays_names(tmp_path):
    (tmp_path / "result.json").write_text(json.dumps(OLD_RESULT))
    res = R.finished_result(tmp_path, OLD_RESULT["run_id"])
    assert res is not None
    assert (res["N_total"], res["N_embed"], res["N_nonembed"]) == (5000, 1000, 4000)
    assert (res["D"], res["C_exact"], res["C_6ND"]) == (6144, 153600000.0, 184320000.0)
    assert res["C_6ND_nonembed"] == 147456000.0
    assert not set(R.OLD_RESULT_NAMES) & set(res)
    assert res["final_val_loss"] == 2.5 and res["flops_per_token"] == 25000.0
    # a new-format file reads unchanged
    new = R.upgrade_result(OLD_RESULT)
    assert R.upgrade_result(new) == new


def test_finished_result_is_the_one_check(tmp_path, capsys):
    rid = OLD_RESULT["run_id"]
    assert R.finished_result(tmp_path, rid) is None  # absent
    path = tmp_path / "result.json"
    for status, expect in (("done", True), ("diverged", True), ("stopped", False)):
        path.write_text(json.dumps(dict(OLD_RESULT, status=status)))
        assert (R.finished_result(tmp_path, rid) is not None) is expect
    assert R.finished_result(tmp_path, "another0run0") is None  # another run's result
    path.write_text('{"run_id": "0123')  # cut by a crash
    assert R.finished_result(tmp_path, rid) is None
    assert "resumes from its newest checkpoint" in capsys.readouterr().err
    path.write_text("[1, 2]")  # JSON, but not a result
    assert R.finished_result(tmp_path, rid) is None


def test_append_record_once_and_keeps_damaged_bytes(tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    assert R.append_record(path, {"run_id": "a", "x": np.float64(1.5), "y": math.nan})
    assert not R.append_record(path, {"run_id": "a", "x": 2.0})
    assert R.read_records(path) == [{"run_id": "a", "x": 1.5, "y": None}]
    with open(path, "ab") as f:
        f.write(b'{"run_id": "b", "x"')  # a torn line
    assert R.append_record(path, {"run_id": "c"})
    assert [r["run_id"] for r in R.read_records(path)] == ["a", "c"]
    assert (tmp_path / "results.jsonl.damaged").read_bytes() == b'{"run_id": "b", "x"\n'
    assert "damaged line" in capsys.readouterr().err


def test_sweep_records_an_old_format_result_in_todays_names(tmp_path):
    """A run that finished under the old engine (old result.json, not yet recorded) is recorded
    without training again, with every RECORD_FIELDS key, and the analysis reads it."""
    (tmp_path / "tiny.toml").write_text(GRID)
    plan = plan_grid(load_grid(tmp_path / "tiny.toml"))
    summary = plan.cells[0].summary()
    root = tmp_path / "sw"
    out = registry.run_dir(root, summary["run_id"])
    out.mkdir(parents=True)
    old = dict(OLD_RESULT, run_id=summary["run_id"], n_params_total=summary["N_total"])
    (out / "result.json").write_text(json.dumps(old))

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    assert run_cell(root, plan.name, summary, train_fn=must_not_train) == "done"
    (rec,) = registry.read_records(root)
    assert tuple(rec) == R.RECORD_FIELDS
    assert rec["N_total"] == summary["N_total"] and rec["final_val_loss"] == 2.5
    assert rec["steps_done"] == 12


def test_old_results_jsonl_rows_still_load(tmp_path):
    """results.jsonl rows keep their names; a row written before this module existed (here a
    minimal one, as early sweeps wrote them: no bpb, no tokenizer fields) still loads."""
    rows = [
        {"run_id": f"r{i}", "status": "done", "N_total": n, "N_nonembed": n - 500, "D": d,
         "C_6ND": 6.0 * n * d, "C_exact": 5.0 * n * d, "final_val_loss": 1.0 + 100 / n**0.3}
        for i, (n, d) in enumerate([(2e3, 1e5), (4e3, 2e5), (8e3, 4e5), (1.6e4, 8e5)])
    ]  # fmt: skip
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = load_results(path)
    assert list(table.N) == [2e3, 4e3, 8e3, 1.6e4]
    assert list(table.C) == [r["C_6ND"] for r in rows]
    exact = load_results(path, flops="exact", n_kind="nonembed")
    assert list(exact.C) == [r["C_exact"] for r in rows]
    assert list(exact.N) == [r["N_nonembed"] for r in rows]


@pytest.mark.parametrize("fields", [R.RESULT_FIELDS, R.RECORD_FIELDS])
def test_each_name_once(fields):
    assert len(set(fields)) == len(fields)
    assert not set(R.OLD_RESULT_NAMES) & set(fields)


def test_a_field_that_is_not_a_number_names_the_run_the_field_and_the_value(tmp_path):
    assert R.number({"D": 3}, "D", "x") == 3.0
    for bad in (True, "1e6", None):
        with pytest.raises(UserError, match=rf"^runs.jsonl: run r1: D = {bad!r} is not a number"):
            R.number({"D": bad}, "D", "runs.jsonl: run r1")
    table = tmp_path / "results.jsonl"
    row = {"run_id": "r1", "status": "done", "N_total": 10, "D": "lots", "final_val_loss": 2.0}
    table.write_text(json.dumps(row) + "\n")
    with pytest.raises(UserError, match=r"run r1: D = 'lots' is not a number"):
        load_results(table)


def test_ablation_and_finetune_tables_skip_a_damaged_line_with_a_warning(tmp_path, capsys):
    """A torn line (a crash mid-write on a filesystem without atomic rename) costs that line
    only: the other records load, and the reader says what it skipped."""
    from analysis.ablation import load_table
    from analysis.laws.finetune import load_rows

    ablation = tmp_path / "ablation.jsonl"
    old = {"run_id": "b", "n_params_total": 100, "tokens": 10}  # before the schema's names
    ablation.write_text(
        json.dumps({"run_id": "a", "N_total": 200}) + "\n{torn\n" + json.dumps(old) + "\n"
    )
    recs = load_table(tmp_path)
    assert [(r["run_id"], r["N_total"]) for r in recs] == [("b", 100), ("a", 200)]
    assert recs[0]["D"] == 10
    assert "1 damaged line(s) skipped" in capsys.readouterr().err

    rows = tmp_path / "finetune.jsonl"
    row = {"run_id": "a", "task": "t", "method": "full", "d_f": 16, "status": "done"}
    rows.write_text(
        json.dumps({**row, "eval_loss": 2.0})
        + "\n{torn\n"
        + json.dumps({**row, "eval_loss": 1.5})  # the same row again: the last one wins
        + "\n"
    )
    assert [r["eval_loss"] for r in load_rows(rows)] == [1.5]
    assert "1 damaged line(s) skipped" in capsys.readouterr().err
