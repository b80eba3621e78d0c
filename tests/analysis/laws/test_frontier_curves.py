"""Approach 1 reads each run's validation curve from its metrics.jsonl: a damaged file (a torn
line, bytes that are not UTF-8, a line that is not an object) costs those lines, not the analysis
(it raised UnicodeDecodeError / AttributeError)."""

import numpy as np

from analysis.laws.frontier import read_curve


def test_a_damaged_metrics_file_keeps_its_intact_points(tmp_path, capsys):
    f = tmp_path / "metrics.jsonl"
    f.write_bytes(
        b'{"step": 10, "tokens": 1000, "loss": 3.0}\n'  # a training record: no val_loss
        b'{"step": 20, "tokens": 2000, "val_loss": 2.5}\n'
        b"\xff\xfe\n"
        b"[1, 2]\n"
        b'{"step": 40, "tokens": 4000, "val_loss": 2.1}\n'
        b'{"step": 50, "tokens": 5000, "val_lo'  # torn by a kill
    )
    C, L = read_curve(str(f), N=100.0)
    np.testing.assert_allclose(C, [6.0 * 100 * 2000, 6.0 * 100 * 4000])
    np.testing.assert_allclose(L, [2.5, 2.1])
    assert "damaged line(s) skipped" in capsys.readouterr().err
    assert read_curve(str(tmp_path / "absent.jsonl"), N=100.0) is None
