"""What `scaling analyze | plot | predict` fit from a sweep directory whose results.jsonl does not
match its plan: repeated lines are fitted once (with a note), and runs plan.json does not list
(left by `sweep run --replan`, or lines copied from another sweep) are kept, with a note that
counts them and says how to leave them out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import GRID6, tiny_grid

from analysis.laws.select import where
from analysis.tables import load_results
from scaling.cli import main
from sweeps import registry as R

FAKE = "sweeps.fake:fake_train"


def _sweep(tmp_path: Path, name: str = "six", toml: str = GRID6, *sets: str) -> Path:
    grid, root = tmp_path / f"{name}.toml", tmp_path / name
    grid.write_text(toml)
    args = ["sweep", "run", str(grid), "--out", str(root), "--train-fn", FAKE, "--no-progress"]
    for s in sets:
        args += ["--set", s]
    assert main([*args, "--replan"] if sets else args) == 0
    return root


def _same_rows(a, b) -> None:
    assert a.run_id == b.run_id
    for k in ("N", "D", "C", "loss", "budget"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


def test_results_jsonl_concatenated_twice_is_fitted_once(tmp_path: Path, capsys) -> None:
    root = _sweep(tmp_path)
    clean = load_results(root)
    path = root / R.RESULTS
    path.write_bytes(path.read_bytes() * 2)  # `cat results.jsonl results.jsonl > ...`
    table = load_results(root)
    _same_rows(table, clean)
    dup = [n for n in table.notes if "duplicate" in n]
    assert dup == [
        "results.jsonl repeats 6 run id(s): dropped 6 duplicate record(s), kept the "
        "last line of each"
    ], table.notes
    capsys.readouterr()
    assert main(["analyze", str(root), "--resamples", "20"]) == 0
    out = capsys.readouterr()
    assert "Scaling law from 6 runs" in out.out
    assert [x for x in out.err.splitlines() if "duplicate" in x] == [f"  note: {dup[0]}"]
    fits = json.loads((root / "report" / "fits.json").read_text())
    assert dup[0] in fits["notes"]
    assert dup[0] in (root / "report" / "report.md").read_text()


def test_predict_and_plot_print_the_notes_of_the_table(tmp_path: Path, capsys) -> None:
    root = _sweep(tmp_path)
    path = root / R.RESULTS
    path.write_bytes(path.read_bytes() * 2)
    capsys.readouterr()
    assert main(["predict", str(root), "--flops", "1e12", "--resamples", "20", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["n_runs"] == 6
    assert sum("dropped 6 duplicate record(s)" in x for x in out.err.splitlines()) == 1, out.err
    assert main(["plot", str(root), "--out", str(tmp_path / "figs")]) == 0
    err = capsys.readouterr().err
    assert sum("dropped 6 duplicate record(s)" in x for x in err.splitlines()) == 1, err


def test_runs_left_by_a_replan_are_kept_and_named(tmp_path: Path) -> None:
    root = _sweep(tmp_path)
    first = {r["run_id"] for r in R.read_records(root)}
    _sweep(tmp_path, "six", GRID6, "seeds=[1]")  # new run ids; the first six stay recorded
    planned = {c["run_id"] for c in R.read_plan(root)["cells"]}
    assert len(first) == 6 and first.isdisjoint(planned)
    table = load_results(root)
    assert len(table) == 12  # kept: a researcher may want them
    note = [n for n in table.notes if "plan.json" in n]
    assert len(note) == 1 and "6 of the 12 records" in note[0], table.notes
    assert "--replan" in note[0] and "--where 'in_plan == 1'" in note[0]
    kept = where(table, "in_plan == 1")
    assert set(kept.run_id) == planned


def test_lines_copied_from_another_sweep_are_kept_and_named(tmp_path: Path) -> None:
    root = _sweep(tmp_path)
    own = {r["run_id"] for r in R.read_records(root)}
    other = _sweep(tmp_path, "other", tiny_grid("other", tokens="[3e4, 6e4]"))
    with open(root / R.RESULTS, "ab") as f:
        f.write((other / R.RESULTS).read_bytes())
    table = load_results(root)
    assert len(table) == 12
    note = [n for n in table.notes if "plan.json" in n]
    assert len(note) == 1 and "6 of the 12 records" in note[0], table.notes
    assert "copied from sweep 'other'" in note[0] and "--replan" not in note[0]
    assert set(where(table, "in_plan == 1").run_id) == own
    assert set(where(table, 'sweep == "six"').run_id) == own
    # A results.jsonl that matches its plan, or has none beside it, gets no such note.
    assert not [n for n in load_results(other).notes if "plan.json" in n]
    (other / R.PLAN).unlink()
    plain = load_results(other)
    assert not [n for n in plain.notes if "plan.json" in n] and "in_plan" not in plain.extra
