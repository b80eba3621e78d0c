"""What the analysis reads: results.jsonl records and --at points files, and the one-line errors
their bad values give (the value as written, and the fix)."""

import json

import pytest

from analysis.tables import load_results
from scaling.errors import UserError


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _rec(i, **kw):
    base = dict(run_id=f"r{i}", status="done", N_total=1e6 * (i + 1), D=2e7, final_val_loss=3.0)
    return {**base, **kw}


def test_a_nan_loss_is_named_as_nan_and_a_missing_field_says_the_fix(tmp_path):
    f = _write(tmp_path / "results.jsonl", [_rec(0), _rec(1, final_val_loss=float("nan"))])
    with pytest.raises(UserError) as e:
        load_results(f)
    msg = str(e.value)
    assert "got nan for run 'r1'" in msg and "np.float64" not in msg and "fix or drop" in msg
    rec = _rec(1)
    del rec["final_val_loss"]
    _write(f, [_rec(0), rec])
    with pytest.raises(UserError, match=r"run r1 lacks field\(s\) \['final_val_loss'\]; fix or"):
        load_results(f)


def test_points_with_d_and_c_columns_use_each_rows_d_else_its_c(tmp_path):
    """An --at file with N, D and C columns was refused when the unused C cell was blank; a row
    with D blank and C given now gets D = C / (6 N), as a file without a D column does."""
    from analysis.laws.points import read_points

    f = tmp_path / "at.csv"
    f.write_text("name,N,D,C\na,1e9,2e10,\nb,1e9,,1.2e21\n")
    pts = read_points(f)
    assert pts.kind == "nd" and pts.names == ["a", "b"]
    assert pts.D.tolist() == pytest.approx([2e10, 2e11]) and pts.C[0] == pytest.approx(1.2e20)
    f.write_text("name,N,D,C\na,1e9,2e10,\nc,1e9,,\n")
    with pytest.raises(UserError, match=r"at.csv:3: no 'D' or 'C' value"):
        read_points(f)
