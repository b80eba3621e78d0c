"""Writing the emergence report: emergence.json (+ a figure per flagged curve), and the
sweep entry point `analyze_results` used by `scaling analyze` and `scaling emergence`.

The verdict logic lives in analysis.emergence.flagger; this module only serialises it.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

from analysis.emergence.curves import (
    ALPHA,
    FLAGGED,
    JUMP_MARGIN,
    LFO_POINTS,
    MARGIN,
    MIN_PRE,
    Z_DROP,
)
from analysis.emergence.flagger import analyze_curves, onset_phrase
from scaling.fileio import atomic_write
from scaling.results import clean_json


def settings() -> dict:
    return {
        "margin": MARGIN,
        "jump_margin": JUMP_MARGIN,
        "alpha": ALPHA,
        "lfo_points": LFO_POINTS,
        "min_pre_onset_points": MIN_PRE,
        "z_drop": Z_DROP,
    }


def write_report(
    results: list[dict], out_dir: str | Path, *, scale: str, source: str, figures: bool = True
) -> dict:
    """Write emergence.json (+ one PNG per flagged curve) atomically; return the report dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if figures:
        from analysis.emergence.plots import plot_curve

        by_key = {(r["task"], r["shots"], r["family"], r["metric"]): r for r in results}
        taken: set[str] = set()
        for r in results:
            if r["verdict"] in FLAGGED:
                comps = [
                    by_key.get((r["task"], r["shots"], r["family"], m)) for m in r["companions"]
                ]
                comps = [c for c in comps if c]
                r["figure"] = str(plot_curve(r, comps, out, scale=scale, taken=taken))
    report = {
        "source": source,
        "scale": scale,
        "settings": settings(),
        "n_curves": len(results),
        "n_tested": sum(r["testable"] for r in results),
        "summary": [
            {
                k: r.get(k)
                for k in ("task", "metric", "shots", "family", "verdict", "warnings", "reason")
            }
            for r in results
        ],
        "mirage_pairs": [
            {
                "task": r["task"],
                "shots": r["shots"],
                "family": r["family"],
                "primary": r["metric"],
                "primary_verdict": r["verdict"],
                "companion_verdicts": r["mirage"]["companion_verdicts"],
                "checked_at_onset": r["mirage"]["checked"],
                "onset": onset_phrase(r),
                "any_companion_jumps": r["mirage"]["any_companion_jumps"],
                "not_checked": r["mirage"].get("not_checked", {}),
            }
            for r in results
            if r.get("mirage")
        ],
        "curves": results,
    }
    report = clean_json(report, drop_private=True)  # NaN/inf -> null
    atomic_write(out / "emergence.json", json.dumps(report, indent=1))
    return report


def analyze_results(
    results_path: str | Path,
    out_dir: str | Path,
    *,
    scale: str = "compute",
    figures: bool = True,
    run_ids: Collection[str] | None = None,
) -> dict | None:
    """Flag emergence in a sweep's results.jsonl (only the runs in `run_ids` when given). None
    when no record carries an evals block."""
    from analysis.emergence.sources import curves_from_results

    curves = curves_from_results(results_path, scale=scale, run_ids=run_ids)
    if not curves:
        return None
    results = analyze_curves(curves)
    return write_report(results, out_dir, scale=scale, source=str(results_path), figures=figures)
