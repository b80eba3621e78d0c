"""A user's table file: columns named N, loss and D (or C) need no --map."""

import numpy as np
import pytest

from analysis.table_file import load_table
from scaling.cli import main
from scaling.errors import UserError


def _csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


ROWS = [(1e6, 2e7, 4.1), (2e6, 4e7, 3.8), (4e6, 8e7, 3.55)]


def test_columns_named_n_d_loss_are_used_without_a_map(tmp_path):
    t = load_table(_csv(tmp_path / "t.csv", ["N", "D", "loss"], ROWS), {})
    assert np.allclose(t.N, [1e6, 2e6, 4e6]) and np.allclose(t.C, [6 * n * d for n, d, _ in ROWS])
    assert any("N, loss, D used by name" in n for n in t.notes)


def test_a_c_column_is_used_when_there_is_no_d(tmp_path):
    rows = [(n, 7 * n * d, loss) for n, d, loss in ROWS]
    t = load_table(_csv(tmp_path / "t.csv", ["N", "C", "loss"], rows), {})
    assert np.allclose(t.C, [r[1] for r in rows]) and np.allclose(
        t.D, [r[1] / (6 * r[0]) for r in rows]
    )


def test_a_map_wins_over_a_column_of_the_same_name(tmp_path):
    rows = [(n, d, loss, loss + 1) for n, d, loss in ROWS]
    path = _csv(tmp_path / "t.csv", ["N", "D", "loss", "loss2"], rows)
    t = load_table(path, {"loss": "loss2", "C": "D"})  # C mapped: no D taken by name
    assert np.allclose(t.loss, [r[3] for r in rows]) and np.allclose(t.C, [r[1] for r in rows])
    assert any("column(s) N used by name" in n for n in t.notes)
    assert not load_table(path, {"N": "N", "D": "D", "loss": "loss"}).notes


def test_a_missing_column_lists_the_columns(tmp_path):
    path = _csv(tmp_path / "t.csv", ["size", "D", "loss"], ROWS)
    with pytest.raises(
        UserError,
        match=r"no column is named N; the columns are \['size', 'D', 'loss'\]",
    ):
        load_table(path, {})
    path = _csv(tmp_path / "u.csv", ["N", "tokens", "loss"], ROWS)
    with pytest.raises(
        UserError, match=r"--map D=COLUMN \(tokens\) or --map C=COLUMN \(FLOPs\) is required"
    ):
        load_table(path, {})


def test_predict_reads_a_plainly_named_csv_and_says_so(tmp_path, capsys):
    C, rows = 1e18, []
    for n in (2e6, 4e6, 8e6, 16e6, 32e6):
        d = C / (6 * n)
        rows.append((n, d, 1.7 + 400 / n**0.34 + 410 / d**0.28))
    path = _csv(tmp_path / "one.csv", ["N", "D", "loss"], rows)
    assert main(["predict", "--table", str(path), "--params", "8e6", "--tokens", "2e10",
                 "--resamples", "50"]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    assert "predicted loss" in out and "N, loss, D used by name" in err
