"""`scaling mup-check`: under muP the activation RMS of every layer stays flat across width after
a few Adam steps (within 2x from the narrowest to the widest model); under SP it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaling import coordcheck, engine, mup
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
        (dict(widths=[64, 64]), "two distinct"),  # probed 4 runs to report 'RMS ratio 1.00x'
        (dict(lrs=[float("inf")]), "positive lrs"),
        (dict(lrs=[]), "non-empty list of positive lrs"),
        (dict(base_width=-4), "--base-width -4"),
        (
            dict(widths=[32, 44]),
            "width 44 is not a multiple of the probes' head dim 8; use 40 or 48",
        ),
        (dict(widths=[32, 64, 64]), "remove the repeated width"),  # trained d64 twice
        (dict(seeds=0), "--seeds 0: must be >= 1"),
    ],
)
def test_bad_input_is_a_user_error(kw, match) -> None:
    args = dict(widths=[32, 64], lrs=[1e-2]) | kw
    with pytest.raises(UserError, match=match):
        coordcheck.sweep(args.pop("widths"), args.pop("lrs"), **args, **PROBE)


def _synthetic_lr_records() -> list[dict]:
    """Loss = 3 + (log10 lr - log10 lr*)^2 with lr* = 1e-2 under muP at every width and
    lr* = 1e-2 * 32 / width under SP (two seeds, +-0.01 noise); one SP cell diverged (NaN)."""
    import numpy as np

    lrs = [1e-2 * 2.0**k for k in range(-5, 4)]
    out = []
    for p in ("sp", "mup"):
        for w in (32, 64, 128):
            star = 1e-2 * (32 / w if p == "sp" else 1.0)
            for lr in lrs:
                for s, noise in ((0, 0.01), (1, -0.01)):
                    loss = 3.0 + (np.log10(lr) - np.log10(star)) ** 2 + noise
                    out.append(dict(param=p, width=w, base_width=32, lr=lr, seed=s, loss=loss))
    out[-1]["loss"] = float("nan")  # muP, widest, largest lr, seed 1
    return out


def test_best_lr_by_width_and_lr_transfer_figure(tmp_path: Path) -> None:
    """The multi-lr path: per-width argmin of the seed-mean loss (a NaN seed makes its cell
    lose) and lr_transfer.png, one panel per parametrisation."""
    import matplotlib.image as mpimg

    records = _synthetic_lr_records()
    assert coordcheck.best_lr_by_width(records, "mup") == {32: 1e-2, 64: 1e-2, 128: 1e-2}
    assert coordcheck.best_lr_by_width(records, "sp") == {32: 1e-2, 64: 5e-3, 128: 2.5e-3}
    table = coordcheck.mean_loss(records, "mup")
    assert sorted(table) == [32, 64, 128] and all(len(v) == 9 for v in table.values())
    assert table[128][max(table[128])] == float("inf") and table[64][1e-2] == pytest.approx(3.0)
    for r in records:  # plot() also draws the coordinate check from each record's layer RMS
        r["rms"] = {"embed": 1.0, "logits": r["width"] / 32 if r["param"] == "sp" else 1.0}
    paths = coordcheck.plot(records, tmp_path, lr=1e-2)
    assert [p.name for p in paths] == ["coord_check.png", "lr_transfer.png"]
    h, w, _ = mpimg.imread(paths[1]).shape
    assert w > 1.8 * h  # two panels side by side: SP | muP


def test_bad_out_or_base_width_exits_2_before_any_probe(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """--out that cannot be written is said before the probes train (it was said after them);
    --base-width 0 is refused, not read as 'the narrowest width'."""

    def no_probes(*a, **k):
        raise AssertionError("probed before checking --out")

    monkeypatch.setattr(coordcheck, "sweep", no_probes)
    a_file = tmp_path / "f"
    a_file.write_text("x")
    assert main(["mup-check", "--widths", "16,32", "--out", str(a_file / "x")]) == 2
    assert "cannot write there" in capsys.readouterr().err
    monkeypatch.undo()
    with pytest.raises(UserError, match="--base-width 0: must be > 0"):
        coordcheck.sweep([16, 32], [1e-2], base_width=0)


def test_an_lr_outside_lrs_exits_2_before_any_probe(tmp_path: Path, capsys, monkeypatch) -> None:
    """--lr 3e-3 --lrs 1e-3,1e-2 ran the coordinate check at 1e-3 without a word."""

    def no_probes(*a, **k):
        raise AssertionError("probed before checking --lr")

    monkeypatch.setattr(coordcheck, "sweep", no_probes)
    argv = ["mup-check", "--widths", "16,32", "--out", str(tmp_path / "o")]
    assert main([*argv, "--lr", "3e-3", "--lrs", "1e-3,1e-2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: mup-check --lr 0.003 is not one of --lrs 0.001,0.01") and (
        err.count("\n") == 1
    )


@pytest.mark.parametrize(
    "flags,said",
    [
        (["--batch", "0"], "mup-check --batch 0: must be >= 1"),  # said train.batch_size = 0
        (["--layers", "0"], "mup-check --layers 0: must be >= 1"),  # said model.n_layers = 0
        (["--steps", "0"], "mup-check --steps 0: must be >= 1"),  # named --seeds 1 too
        (["--lr", "nan"], "mup-check --lr nan: give a positive peak lr"),  # said --lrs [nan]
        (["--lrs", ","], "argument --lrs: ',': expected numbers"),  # ran the default 1e-2
        (["--widths", "16,36"], "width 36 is not a multiple"),  # made --out first
    ],
)
def test_bad_flag_exits_2_naming_the_flag(flags, said, tmp_path: Path, capsys) -> None:
    argv = ["mup-check", "--widths", "16,32", "--out", str(tmp_path / "o"), "--no-progress"]
    try:
        rc = main([*argv, *flags])
    except SystemExit as e:  # argparse's own type errors
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and said in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()  # refused before --out is made


def _no_lr_scaling(monkeypatch) -> None:
    import optax

    monkeypatch.setattr(mup, "lr_partition", lambda cfg: optax.identity())


@pytest.mark.parametrize(
    "broken",
    [
        _no_lr_scaling,  # hidden Adam lr not x 1/m: ratio 26x at 32 -> 128
        lambda mp: mp.setattr(mup, "logit_multiplier", lambda cfg: 1.0),  # no 1/m readout
        lambda mp: mp.setattr(mup, "rescale_init", lambda model, cfg: None),  # SP init std
    ],
    ids=["lr", "readout", "init"],
)
def test_a_broken_mup_fails_the_check(broken, monkeypatch) -> None:
    """The check discriminates: muP with one of its three width rules left out grows with width
    past the 2x the correct muP stays under (at 8x width the missing init gives 5.6x, the
    slightest of the three; at 4x only 2.3x, so the check needs a wide enough width range)."""
    monkeypatch.setattr(engine, "_CACHE", {})  # no broken engine outlives the test
    broken(monkeypatch)
    records = coordcheck.sweep([32, 256], [1e-2], params=("mup",), **PROBE)
    assert coordcheck.max_ratio(records, "mup")[0] > 3.0


def test_a_width_where_every_lr_diverged_has_no_best_lr(tmp_path: Path, capsys, monkeypatch):
    """best_lr reported the grid's first lr for a width whose every probe gave NaN (and the
    figure's legend said so); it is null in mup_check.json and said in the summary line."""
    import json

    records = _synthetic_lr_records()
    for r in records:
        r["rms"] = {"embed": 1.0}
        if r["param"] == "sp" and r["width"] == 128:
            r["loss"] = float("nan")
    assert coordcheck.best_lr_by_width(records, "sp") == {32: 1e-2, 64: 5e-3, 128: None}
    monkeypatch.setattr(coordcheck, "sweep", lambda *a, **k: records)
    lrs = ",".join(f"{x!r}" for x in sorted({r["lr"] for r in records}))
    argv = ["mup-check", "--widths", "32,64,128", "--lrs", lrs, "--out", str(tmp_path)]
    assert main([*argv, "--no-progress"]) == 0
    assert "d64: 0.005, d128: none (every lr diverged)" in capsys.readouterr().out
    summary = json.loads((tmp_path / "mup_check.json").read_text())
    assert summary["sp"]["best_lr"] == {"32": 0.01, "64": 0.005, "128": None}
    assert summary["mup"]["best_lr"]["128"] == 0.01  # one NaN seed of one lr: the rest count
    assert (tmp_path / "lr_transfer.png").stat().st_size > 10_000
