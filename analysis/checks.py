"""Sanity checks of a finished study, read from its fits.json: can its figures be trusted?

`python -m analysis.checks runs/demo/report/fits.json [--max-backtest-error 0.03]` prints one
line per check and exits 1 if any fails; `make demo` runs it last. The checks:
- the frontier falls with compute: the lowest loss of each IsoFLOP budget drops budget by budget
  (a rise under 0.2% between neighbours is the minima's noise, not a rise);
- every IsoFLOP minimum is inside its budget's N range (the grid is centred on the optimum);
- the fitted frontier exponent L(C) ~ C^-alpha is finite and positive, CI included;
- the back-test error on the held-out largest budget is below a threshold (3% by default);
- the predictive intervals are not over-confident: the held-out runs of the back-test, and each
  rolling-origin back-test against intervals calibrated on the other origins, fall inside their
  nominal intervals about as often as promised (FAIL when the coverage is more than 10 points
  below nominal AND a binomial test rejects the nominal level at 1%).
A check the study's design cannot answer (analysis.design: the IsoFLOP checks on a size ladder,
an N x D grid or one budget, the allocation on a ladder or one budget), or one whose analysis did
not run (Approach 2 skipped, e.g. only one of several budgets with an IsoFLOP minimum; the
frontier L(C) not fitted, with fewer than 3 envelope points; no back-test, `--holdout none`; no
rolling-origin back-test), is printed [n/a] with the reason, never [ok] and never left out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from scaling.errors import UserError
from scaling.fmt import with_ci


def coverage_check(name: str, inside: int, n: int, level: float) -> tuple[str, bool, str]:
    """FAIL when k of n inside is far below the nominal level (10 points and binomial p < 1%)."""
    p = sum(math.comb(n, k) * level**k * (1 - level) ** (n - k) for k in range(inside + 1))
    ok = not (inside / n < level - 0.10 and p < 0.01)
    detail = f"{inside}/{n} inside their {level:.0%} intervals ({inside / n:.0%}; P <= {p:.2g})"
    return name, ok, detail


def study_checks(fits: dict, max_backtest_error: float = 0.03) -> list[tuple[str, bool, str]]:
    """(name, passed, detail) for each check that the fits can answer; passed is None (printed
    [n/a]) for a check the study's design cannot answer (e.g. IsoFLOP minima of an N x D grid)."""
    return [
        *_not_applicable(fits),
        *_isoflop_checks((fits.get("approach2") or {}).get("minima") or []),
        # a check whose analysis did not run is [n/a] with the reason (it was left out silently)
        *(_frontier_check((fits.get("frontier_ci") or {}).get("alpha")) or _frontier_na(fits)),
        *(
            _backtest_checks(fits.get("backtest"), max_backtest_error)
            or _backtest_na(fits, max_backtest_error)
        ),
        *(
            _rolling_check((fits.get("predictive") or {}).get("cross_coverage"))
            or _rolling_na(fits)
        ),
    ]


def _frontier_na(fits: dict) -> list[tuple[str, None, str]]:
    """[n/a] when the frontier L(C) was not fitted (this line was left out silently)."""
    why = next((n for n in fits.get("notes") or [] if n.startswith("frontier L(C) not fitted")), "")
    return [("frontier exponent finite and positive", None, f"not answered: {why}")] if why else []


def _backtest_na(fits: dict, max_error: float) -> list[tuple[str, None, str]]:
    """[n/a] for a study without a back-test (skipped, or `analyze --holdout none`)."""
    if not fits.get("design"):
        return []
    notes = fits.get("notes") or []
    why = next((n for n in notes if n.startswith("back-test skipped")), None)
    why = why or "no back-test was run (analyze --holdout none)"
    return [(f"back-test error below {_pct(max_error)}", None, f"not answered: {why}")]


def _rolling_na(fits: dict) -> list[tuple[str, None, str]]:
    """[n/a] when the predictive intervals had no rolling-origin back-test to check."""
    if not fits.get("predictive"):
        return []
    why = (
        "not answered: no rolling-origin back-test ran (too few compute levels, or too few runs "
        "below the larger ones to fit from)"
    )
    return [("rolling back-tests inside their predictive intervals", None, why)]


def _pct_apart(x: float, threshold: float) -> str:
    """x as a percentage with 2 decimals, or more where that rounds it onto the threshold
    ('[ok] back-test error below 3%: 3.00%' for 2.996%)."""
    for d in range(2, 7):
        if f"{x:.{d}%}" != f"{threshold:.{d}%}" or x == threshold:
            break
    return f"{x:.{d}%}"


def _pct(x: float) -> str:
    """A threshold as a percentage that keeps its digits (0.025 is 2.5%, not '2%')."""
    return f"{x * 100:.4g}%"


def _not_applicable(fits: dict) -> list[tuple[str, None, str]]:
    design, out = fits.get("design") or {}, []
    skipped = [n for n in fits.get("notes") or [] if n.startswith("Approach 2 skipped")]
    if design.get("kind") == "one_budget":  # one minimum: nothing to fall, no grid of budgets
        na = f"not applicable: {design['description']}: no second budget to compare with"
    elif design and "approach2" not in design.get("approaches", ["approach2"]):
        desc = design["description"]  # "scattered runs: ..., no IsoFLOP budgets or grid"
        na = f"not applicable: {desc}" + ("" if "IsoFLOP" in desc else " has no IsoFLOP budgets")
    elif skipped and not (fits.get("approach2") or {}).get("minima"):
        na = f"not answered: {skipped[0]}"  # e.g. one budget: no line through the minima
    else:
        na = None
    if na:
        out += [
            ("frontier falls with compute", None, na),
            ("IsoFLOP minima inside the grid", None, na),
        ]
    no_alloc = "allocation" not in design.get("approaches", ["allocation"])
    if design and (no_alloc or fits.get("no_allocation")):  # or a lost N or D term
        why = fits.get("no_allocation") or design.get("no_allocation") or "N and D move together"
        na = f"not applicable: {design['description']} ({why})"
        out.append(("allocation exponents identified", None, na))
    return out


def _chain(best: list[float]) -> str:
    """'3.055 > 3.007 ~ 3.008 < ...': each neighbour's sign, '~' within FALL_TOL."""
    out = f"{best[0]:.3f}"
    for a, b in zip(best, best[1:], strict=False):
        sign = ">" if b < a else ("~" if b < a * (1 + FALL_TOL) else "<")
        out += f" {sign} {b:.3f}"
    return out


FALL_TOL = 0.002  # relative: neighbouring IsoFLOP minima this close count as level, not rising


def _isoflop_checks(minima: list[dict]) -> list[tuple[str, bool, str]]:
    if not minima:
        return []
    best = [m["loss_min"] for m in sorted(minima, key=lambda m: m["budget"])]
    # a rise of under FALL_TOL between neighbouring budgets is the minima's noise, not a rise
    falls = all(b < a * (1 + FALL_TOL) for a, b in zip(best, best[1:], strict=False))
    outside = [f"{m['budget']:.3g}" for m in minima if not m.get("inside_range", True)]
    return [
        (
            "frontier falls with compute",
            falls,
            "IsoFLOP minima " + _chain(best),
        ),
        (
            "IsoFLOP minima inside the grid",
            not outside,
            "all interior" if not outside else "at the edge for budgets " + ", ".join(outside),
        ),
    ]


def _frontier_check(ci: dict | None) -> list[tuple[str, bool, str]]:
    if not ci:
        return []
    vals = (ci["estimate"], ci["lo"], ci["hi"])
    ok = all(math.isfinite(v) and v > 0 for v in vals)
    level = int(round(100 * ci.get("level", 0.9)))
    return [("frontier exponent finite and positive", ok, f"alpha = {with_ci(ci)} ({level}% CI)")]


def _backtest_checks(bt: dict | None, max_error: float) -> list[tuple[str, bool, str]]:
    if not bt:
        return []
    err = bt["mean_abs_rel_error"]["estimate"]
    out = [
        (
            f"back-test error below {_pct(max_error)}",
            err < max_error,
            f"{_pct_apart(err, max_error)} on {bt['description']}",
        )
    ]
    cv = bt.get("coverage", {})
    if cv.get("n"):
        name = "held-out runs inside their predictive intervals"
        name, ok, detail = coverage_check(name, cv["inside"], cv["n"], cv["level"])
        out.append((name, ok, detail + backtest_prior_note(bt)))
    return out


def backtest_prior_note(bt: dict) -> str:
    """Said of a back-test whose own fit had too few rolling origins to calibrate on: its
    intervals were the published-sweep prior's alone."""
    cal = (bt.get("predictor") or {}).get("calibration") or {}
    if cal.get("weight_user") != 0.0:
        return ""
    k = cal.get("n_origins", 0)
    return (
        f"; the back-test's fit had {k} rolling origin{'s' if k != 1 else ''}, too few to "
        "calibrate on, so these intervals were the published-sweep prior's alone"
    )


def _rolling_check(cc: dict | None) -> list[tuple[str, bool, str]]:
    if not cc or not cc.get("n"):
        return []
    name = "rolling back-tests inside their predictive intervals"
    name, ok, detail = coverage_check(name, cc["inside"], cc["n"], cc["level"])
    return [(name, ok, detail + prior_only_note(cc))]


def prior_only_note(cc: dict) -> str:
    """What a leave-one-origin-out coverage really tested when some of its intervals had no
    other origins' back-tests to calibrate on (``prior_only``, analysis.laws.predictive)."""
    k = int(cc.get("prior_only") or 0)
    if not k:
        return ""
    who = "all" if k == cc["n"] else f"{k} of them"
    return (
        f"; {who} against the published-sweep prior alone (leaving one origin out leaves too "
        "few back-tests to calibrate on), so this checks the prior, not this study's own "
        "calibration"
    )


def loo_coverage_text(cc: dict, lvl: int) -> str:
    """report.md's sentence on the rolling back-tests' leave-one-origin-out coverage (it read
    '0/0 inside their 90% intervals' when no rolling back-test ran)."""
    if not cc.get("n"):
        return "No rolling-origin back-test ran, so there is no coverage of them to check."
    return (
        f"Leave-one-origin-out coverage of the back-tests: {cc['inside']}/{cc['n']} inside "
        f"their {lvl}% intervals{prior_only_note(cc)} (`analysis.checks` fails when this is "
        f"far below {lvl}%)."
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m analysis.checks", description=__doc__.split("\n")[0]
    )
    p.add_argument("fits", help="a fits.json written by `scaling analyze`")
    p.add_argument(
        "--max-backtest-error",
        type=float,
        default=0.03,
        help="the back-test check fails above this mean |relative error| (default 0.03)",
    )
    args = p.parse_args(argv)
    m = args.max_backtest_error
    if not (math.isfinite(m) and m > 0):  # nan failed every back-test, -1 read "below -100%"
        raise UserError(f"--max-backtest-error {m:g}: give a positive fraction, e.g. 0.03 for 3%")
    path = Path(args.fits)
    try:
        fits = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(
            f"{path}: cannot read fits.json ({e}); run `scaling analyze DIR` first"
        ) from e
    if not isinstance(fits, dict):
        raise UserError(
            f"{path}: not a fits.json written by `scaling analyze` (a JSON "
            f"{type(fits).__name__}, not an object); pass DIR/report/fits.json"
        )
    results = study_checks(fits, args.max_backtest_error)
    if not results:
        raise UserError(f"{path}: nothing to check (no IsoFLOP minima, frontier or back-test)")
    for name, ok, detail in results:
        print(f"  [{'n/a' if ok is None else 'ok' if ok else 'FAIL'}] {name}: {detail}")
    return 0 if all(ok is not False for _, ok, _ in results) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
