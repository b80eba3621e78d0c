"""The whole demo, as `make demo` runs it: sweep, ablation, analysis, and the checks of its figures.

Several minutes on 2 CPU cores (a sweep of 40 runs, ablation, fine-tuning, analysis), so it is
marked slow (run it with `make test-all`).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from analysis.checks import main as checks_main
from scaling.cli import main

ROOT = Path(__file__).resolve().parents[2]
# the fine-tuning study `make demo` runs (read from the Makefile, so the two cannot drift)
_MK = (ROOT / "Makefile").read_text().split("DEMO_FINETUNE :=")[1].split("\ndemo:")[0]
DEMO_FINETUNE = shlex.split(_MK.replace("\\\n", " "))


def _demo_ablate_args() -> list[str]:
    """The `scaling ablate` arguments of `make demo` (DEMO_ABLATE in the Makefile)."""
    text = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    value = text.split("DEMO_ABLATE = ", 1)[1].split("\n\n", 1)[0]
    return value.replace("\\\n", " ").split()


DEMO_ABLATE = _demo_ablate_args()


@pytest.mark.slow
def test_demo_sweep_analysis_and_checks(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["sweep", "run", "demo", "--out", str(out), "--no-progress"]) == 0
    assert main(["ablate", str(out), *DEMO_ABLATE, "--no-progress"]) == 0
    assert main(["finetune", str(out), *DEMO_FINETUNE, "--no-progress"]) == 0
    assert main(["analyze", str(out), "--resamples", "1000"]) == 0
    assert checks_main([str(out / "report" / "fits.json")]) == 0
    fits = json.loads((out / "report" / "fits.json").read_text())
    assert fits["n_runs"] == 40 and fits["backtest"]["mean_abs_rel_error"]["estimate"] < 0.03
    ft = fits["finetune"]
    assert ft["n_rows"] == 18 and {g["method"] for g in ft["groups"]} == {"full", "lora:r=4"}
    assert all("N" in g["fits"] for g in ft["groups"])
    for name in ("loss_vs_compute", "isoflop", "nopt_vs_c", "residuals", "finetune_upper_methods"):
        assert (out / "report" / f"{name}.png").stat().st_size > 10_000
    # the ablation of three runs at the largest budget, and its report section
    table = [json.loads(x) for x in (out / "ablation.jsonl").read_text().splitlines()]
    assert len(table) == 3 and all("repeat" in r["spec"]["tasks"] for r in table)
    assert "## Which components" in (out / "report" / "report.md").read_text()
    for name in ("ablation_removable", "ablation_curves"):
        assert (out / "report" / f"{name}.png").stat().st_size > 10_000
    # rerunning trains nothing
    assert main(["sweep", "run", "demo", "--out", str(out), "--no-progress"]) == 0
    assert "nothing to do" in capsys.readouterr().err  # the summary line is on stderr
