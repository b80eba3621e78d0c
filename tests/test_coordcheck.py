"""`scaling mup-check`: under muP the activation RMS of every layer stays flat across width after
a few Adam steps (within 2x from the narrowest to the widest model); under SP it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaling import coordcheck
from scaling.cli import main
from scaling.errors import UserError

PROBE = dict(steps=3, batch=8, n_layers=1, seq_len=32, dataset="python_source/small")


def _ratios(widths: list[int], **kw) -> dict[str, float]:
    records = coordcheck.sweep(widths, [1e-2], **{**PROBE, **kw})
    return {p: coordcheck.max_ratio(records, p)[0] for p in ("sp", "mup")}


def test_coordinate_check_small_widths() -> None:
    r = _ratios([32, 128])
    assert r["mup"] < 2.0 < r["sp"]


@pytest.mark.slow
def test_coordinate_check_32_to_512(tmp_path: Path, capsys) -> None:
    args = ["mup-check", "--widths", "32,64,128,256,512", "--steps", "5", "--batch", "8",
            "--dataset", "python_source/small", "--out", str(tmp_path),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "coord_check.png").stat().st_size > 10_000
    import json

    summary = json.loads((tmp_path / "mup_check.json").read_text())
    assert summary["mup"]["max_rms_ratio"] < 2.0 < summary["sp"]["max_rms_ratio"], out


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(widths=[32]), "at least two"),
        (dict(lrs=[]), "non-empty list of positive lrs"),
        (dict(base_width=-4), "--base-width -4"),
        (dict(widths=[32, 44]), "multiple of head_dim"),
    ],
)
def test_bad_input_is_a_user_error(kw, match) -> None:
    args = dict(widths=[32, 64], lrs=[1e-2]) | kw
    with pytest.raises(UserError, match=match):
        coordcheck.sweep(args.pop("widths"), args.pop("lrs"), **args, **PROBE)
