"""Emergence on published-style tables: alignment of paired metrics, resolution, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.emergence.curves import Curve
from analysis.emergence.flagger import analyze_curves
from analysis.emergence.sources import curves_from_table, parse_metric_flag

EM = [0.0, 0.0005, 0.001, 0.0005, 0.001, 0.0015, 0.4, 0.45, 0.5, 0.55]
TOK = [0.3, 0.31, 0.3, 0.32, 0.31, 0.32, 0.8, 0.82, 0.84, 0.86]


def _csv(tmp_path, rows, header="Model,Family,C,em,tok", name="t.csv"):
    p = tmp_path / name
    p.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return str(p)


def _rows(em=EM, tok=TOK):
    return [
        (f"m{i}", "F", 10 ** (20 + i / 3), e, t)
        for i, (e, t) in enumerate(zip(em, tok, strict=True))
    ]


def _spec(*metrics):
    spec = {"model": "Model", "family": "Family", "compute": "C", "metrics": {}}
    for text in metrics:
        col, opts = parse_metric_flag(text)
        spec["metrics"][col] = opts
    return spec


def _run(path, *metrics):
    res = analyze_curves(curves_from_table([path], _spec(*metrics)))
    return {r["metric"]: r for r in res}


def test_gap_in_the_paired_metric_makes_the_check_na(tmp_path):
    full = _run(_csv(tmp_path, _rows()), "em:chance=0:n=2000:pair=tok", "tok")
    assert full["em"]["verdict"] == "emergent"
    assert full["em"]["mirage"]["any_companion_jumps"]
    tok = [*TOK]
    tok[1] = ""  # the companion lacks m1: its points shift against the exact match's
    gap = _run(_csv(tmp_path, _rows(tok=tok)), "em:chance=0:n=2000:pair=tok", "tok")
    assert gap["em"]["verdict"] == "emergent"  # not emergent_metric_induced
    assert not gap["em"]["mirage"]["checked"]
    assert "20.333" in gap["em"]["mirage"]["not_checked"]["tok"]


def test_a_gap_after_the_tested_points_still_checks(tmp_path):
    tok = [*TOK]
    tok[9] = ""
    res = _run(_csv(tmp_path, _rows(tok=tok)), "em:chance=0:n=2000:pair=tok", "tok")
    assert res["em"]["mirage"]["checked"] and res["em"]["mirage"]["any_companion_jumps"]


@pytest.mark.parametrize("onset", [1, 2])
def test_onset_with_fewer_than_3_earlier_points_is_insufficient_resolution(onset):
    y = np.array([0.0, 0.0, 0.0, 0.5, 0.55, 0.6, 0.65])
    y = np.concatenate([y[3 - onset :], [0.7] * (3 - onset)])
    c = Curve("t", "em", "F", 10 ** np.arange(20.0, 27.0), y, n_items=np.full(7, 2000), chance=0)
    (r,) = analyze_curves([c])
    assert r["onset_index"] == onset
    assert r["verdict"] == "insufficient_resolution", r["reason"]
    assert "fewer than 3 earlier points" in r["reason"]
