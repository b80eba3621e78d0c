"""Emergence flagger: which abilities jump with scale; does the jump survive a continuous metric.

Works per curve = (task, metric, shots, family), with scale = log10 compute or log10 params.
Decisive rules (all constants below, documented in the README):

1. Score -> chance-normalised s = (y - chance) / (1 - chance) with a Wilson 95% CI from n_items
   (seeds pooled: items add up over distinct item sets, so seeds scored on the same items count
   them once; the between-seed variance is used when it exceeds the binomial).
   chance = max(nominal chance, majority-label rate); see chance_floor (two-way tasks).
2. Onset = first scale whose lower CI bound of s exceeds MARGIN. No onset -> flat_at_chance.
   Onset at the smallest scale -> "above chance from the smallest scale" (smooth: no flat phase).
3. Leave-future-out (LFO): for the onset point and the next one, fit a line in log-scale to all
   earlier points, predict the point, z = residual / predictive SD (fit + binomial + extra
   scatter; Student t, the scatter being estimated). Needs >= MIN_PRE points before the
   onset. Curve p = Bonferroni over the points tested; Holm across all curves tested in the run.
4. Emergent = Holm p < ALPHA and the excess over the trend >= JUMP_MARGIN (chance-normalised),
   the jumped point's 95% CI clears the last pre-onset point's (significant given n_items), and
   no larger scale falls back to chance (else non_monotone, never emergent).
   If onset is the last scale -> insufficient_resolution (one point cannot show the shape).
5. Mirage check: repeat the LFO on each continuous companion metric at the same points. If no
   companion jumps (p < ALPHA and excess >= JUMP_MARGIN of its normalised range), the verdict is
   emergent_metric_induced.
6. A continuous metric (no n_items or chance: logprob, BLEU) has no onset, so it is never tested
   on its own: not_tested (unless it falls back by half its range: non_monotone). It is tested
   only as a companion, step 5.
Sigmoid-vs-linear ΔBIC, BIG-bench linearity/breakthroughness and the loss-threshold hinge fit
are reported, never decisive.
"""

from __future__ import annotations

import math

import numpy as np

from analysis.emergence import stats as st
from analysis.emergence.curves import (
    ALPHA,
    JUMP_MARGIN,
    LFO_POINTS,
    MARGIN,
    MIN_PRE,
    Z_DROP,
    Curve,
    chance_floor,
)


def _prepare(c: Curve) -> dict:
    """Sort by scale; compute x, s, v, CI on the chance-normalised scale."""
    order = np.argsort(c.scale)
    x = np.log10(np.asarray(c.scale, float)[order])
    y = np.asarray(c.y, float)[order]
    if not c.higher_is_better:
        y = -y
    seeds = np.ones(len(x)) if c.n_seeds is None else np.asarray(c.n_seeds, float)[order]
    svar = np.zeros(len(x)) if c.seed_var is None else np.asarray(c.seed_var, float)[order]
    out = {"x": x, "y": y, "n_seeds": seeds, "order": order}
    if c.bounded:
        chance, out["chance_basis"], out["chance_inferred"] = chance_floor(c)
        out["chance_level"] = chance
        n = np.asarray(c.n_items, float)[order]
        scale = 1.0 - chance
        lo, hi = st.wilson(np.clip(y, 0, 1) * n, n)
        vb = st.binom_var(np.clip(y, 0, 1), n)
        wide = svar > vb  # seed scatter dominates: normal CI from it
        lo = np.where(wide, y - st.Z95 * np.sqrt(svar), lo)
        hi = np.where(wide, y + st.Z95 * np.sqrt(svar), hi)
        out.update(
            s=(y - chance) / scale,
            v=np.maximum(vb, svar) / scale**2,
            lo=(lo - chance) / scale,
            hi=(hi - chance) / scale,
            n=n,
            noise_sd=0.0,
        )
    else:
        sd = st.robust_noise_sd(x, y)
        out.update(
            s=y,
            v=svar,
            lo=y - st.Z95 * np.sqrt(svar + sd**2),
            hi=y + st.Z95 * np.sqrt(svar + sd**2),
            n=None,
            noise_sd=sd,
        )
    return out


def _lfo(x, s, v, onset: int, noise_sd: float) -> list[dict]:
    steps = []
    for j in range(onset, min(onset + LFO_POINTS, len(x))):
        r = st.lfo_step(x, s, v, j, noise_sd=noise_sd)
        if r is not None:
            steps.append(r)
    return steps


def _apart(ci: tuple | None, hi_i: int, lo_j: int) -> bool:
    """Binomial 95% CIs of points hi_i (above) and lo_j (below) do not overlap (always true
    without CIs: a continuous metric). With a handful of items the normal z overstates a change
    (1/1 then 0/1: z = 3.2, Fisher p = 1); the Wilson intervals do not."""
    return ci is None or bool(ci[0][hi_i] > ci[1][lo_j])


def _drops(s, v, noise_sd: float, ci: tuple | None = None) -> list[tuple[int, int, float]]:
    """(i, j, drop) for later points significantly and practically below an earlier one."""
    out = []
    for i in range(len(s)):
        for j in range(i + 1, len(s)):
            d = s[i] - s[j]
            z = d / math.sqrt(v[i] + v[j] + 2 * noise_sd**2 + 1e-300)
            if d >= MARGIN and z > Z_DROP and _apart(ci, i, j):
                out.append((i, j, float(d)))
    return out


def analyze_curve(c: Curve) -> dict:
    """Everything about one curve except the multiplicity-corrected verdict."""
    p = _prepare(c)
    x, s, v = p["x"], p["s"], p["v"]
    res: dict = {
        "task": c.task,
        "metric": c.metric,
        "shots": c.shots,
        "family": c.family,
        "chance": c.chance,
        "majority": c.majority,
        "chance_level": p.get("chance_level"),
        "chance_basis": p.get("chance_basis"),
        "bounded": c.bounded,
        "n_scales": len(x),
        "log10_scale": x.tolist(),
        "score": p["y"].tolist(),
        "score_norm": s.tolist(),
        "ci_lo": p["lo"].tolist(),
        "ci_hi": p["hi"].tolist(),
        "n_items": None if p["n"] is None else p["n"].tolist(),
        "n_seeds": p["n_seeds"].tolist(),
        "noise_sd": p["noise_sd"],
        "labels": None if c.labels is None else [c.labels[i] for i in p["order"]],
        "companions": list(c.companions),
        "warnings": [],
    }
    onset = None
    if c.bounded:
        above = np.nonzero(p["lo"] > MARGIN)[0]
        onset = int(above[0]) if len(above) else None
    res["onset_index"] = onset
    res["onset_log10"] = None if onset is None else float(x[onset])
    res["lfo"] = _lfo(x, s, v, onset, p["noise_sd"]) if onset is not None else []
    if c.bounded and onset:
        for r in res["lfo"]:
            j = r["index"]
            # a jump must clear the binomial noise of the last flat point ...
            r["ci_separated"] = bool(p["lo"][j] > p["hi"][onset - 1])
            # ... and stay above chance at every larger scale (else the curve fell back)
            back = np.nonzero(p["lo"][j + 1 :] <= MARGIN)[0]
            r["falls_back_at"] = int(j + 1 + back[0]) if len(back) else None
    res["testable"] = bool(onset is not None and onset >= MIN_PRE and res["lfo"])
    if res["testable"]:
        res["p_curve"] = min(1.0, min(r["p"] for r in res["lfo"]) * len(res["lfo"]))
    else:
        res["p_curve"] = None
    res["sigmoid"] = st.sigmoid_vs_linear(x, s)
    res["bigbench"] = st.bigbench_shape(s)
    if c.loss is not None:
        loss = np.asarray(c.loss, float)[p["order"]]
        res["loss"] = loss.tolist()
        res["loss_unit"] = c.loss_unit
        res["loss_threshold"] = st.hinge_fit(loss, s)
    ci = (p["lo"], p["hi"]) if c.bounded else None
    drops = _drops(s, v, p["noise_sd"], ci)
    res["drops"] = drops
    # warnings
    w = res["warnings"]
    if p.get("chance_inferred"):
        w.append("chance_level_inferred_from_a_below_chance_score")
    if np.all(p["n_seeds"] <= 1):
        w.append("single_seed")
    if len(x) < 5:
        w.append("fewer_than_5_scales")
    if drops:
        w.append("non_monotone")
    if len(s) >= 2:
        ds = np.diff(s)
        i = int(np.argmax(ds))
        sd = math.sqrt(v[i] + v[i + 1] + 2 * p["noise_sd"] ** 2 + 1e-300)
        big = ds[i] >= max(JUMP_MARGIN, 0.5 * float(np.ptp(s)))
        if big and ds[i] / sd > Z_DROP and _apart(ci, i + 1, i):
            w.append("jump_between_adjacent_scales")
            res["largest_step"] = {"from_index": i, "to_index": i + 1, "delta": float(ds[i])}
    sg = res["sigmoid"]
    if sg and sg["resolution_limited"] and sg["delta_bic"] > 2 and onset is not None:
        w.append("sigmoid_width_below_grid_spacing")
    res["_prep"] = p
    return res


def _aligned(prim_x: np.ndarray, comp_x: np.ndarray, upto: int) -> list[int] | str:
    """Companion indices of the primary's points 0..upto (matched by scale), or why not."""
    idx = []
    for i in range(upto + 1):
        hit = np.nonzero(np.isclose(comp_x, prim_x[i], rtol=0, atol=1e-9))[0]
        if len(hit) != 1:
            return f"it has no score at log10 scale {prim_x[i]:.3f} (point {i} of the test)"
        idx.append(int(hit[0]))
    return idx


def companion_jump(comp: dict, onset: int, prim_x: np.ndarray | None = None) -> dict:
    """Does a companion curve jump where the primary did? LFO at the same scale points.

    The companion is aligned to the primary by scale (each column may lack some models): when it
    lacks a point the test needs (any scale up to the last tested one), the check is n/a.
    Bounded companions are tested on their chance-normalised scale; unbounded ones on
    (y - min) / (max - min), so the excess is a fraction of the curve's own total range.
    """
    p = comp["_prep"]
    x, s, v, sd = p["x"], p["s"], p["v"], p["noise_sd"]
    if not comp["bounded"]:
        rng = float(np.ptp(s)) or 1.0
        s, v, sd = (s - s.min()) / rng, v / rng**2, sd / rng
    if prim_x is not None:
        idx = _aligned(prim_x, x, min(onset + LFO_POINTS, len(prim_x)) - 1)
        if isinstance(idx, str):
            return {"metric": comp["metric"], "jumps": None, "lfo": [], "why_na": idx}
        x, s, v = x[idx], s[idx], v[idx]
    steps = _lfo(x, s, v, onset, sd)
    if not steps:
        return {"metric": comp["metric"], "jumps": None, "lfo": []}
    p_c = min(1.0, min(r["p"] for r in steps) * len(steps))
    jumps = any(r["excess"] >= JUMP_MARGIN and r["p"] * len(steps) < ALPHA for r in steps)
    return {
        "metric": comp["metric"],
        "jumps": bool(jumps),
        "p": p_c,
        "lfo": steps,
        "verdict": comp.get("verdict"),
    }


def onset_phrase(res: dict) -> str:
    """Where the curve leaves chance, in words."""
    k = res.get("onset_index")
    if k is None:
        return "no onset (at chance throughout)"
    if k == 0:
        return "above chance from the smallest scale"
    return f"leaves chance at index {k}"


def _verdict(res: dict) -> tuple[str, str]:
    s = np.asarray(res["score_norm"])
    if res["n_scales"] < 3:
        return "insufficient_resolution", "fewer than 3 scales"
    if res["bounded"] and res["onset_index"] is None:
        return "flat_at_chance", (
            f"no scale's 95% CI lower bound exceeds the chance level {res['chance_level']:.3g} "
            f"({res['chance_basis']}) by {MARGIN} (normalised)"
        )
    if res["onset_index"] == res["n_scales"] - 1:
        lfo = "".join(f"; LFO excess {r['excess']:.3f}, z={r['z']:.1f}" for r in res["lfo"])
        return "insufficient_resolution", "leaves chance only at the largest scale" + lfo
    sig = [r for r in res["lfo"] if r["excess"] >= JUMP_MARGIN]
    noisy = [r for r in sig if not r.get("ci_separated", True)]
    sig = [r for r in sig if r.get("ci_separated", True)]
    fell = [r for r in sig if r.get("falls_back_at") is not None]
    sig = [r for r in sig if r.get("falls_back_at") is None]
    if res["testable"] and res["p_holm"] < ALPHA and fell and not sig:
        r = fell[0]
        return "non_monotone", (
            f"jumps at index {r['index']} (excess {r['excess']:.3f}) but falls back to chance "
            f"at index {r['falls_back_at']}: not a sustained jump"
        )
    if res["testable"] and res["p_holm"] < ALPHA and sig:
        r = max(sig, key=lambda t: t["z"])
        why = (
            f"jump above the earlier trend at index {r['index']}: excess {r['excess']:.3f}, "
            f"z={r['z']:.1f}, Holm p={res['p_holm']:.2g}"
        )
        mir = res.get("mirage")
        if mir and mir["checked"] and not mir["any_companion_jumps"]:
            return "emergent_metric_induced", why + "; no continuous companion jumps there"
        return "emergent", why
    if res["testable"] and res["p_holm"] < ALPHA and noisy:
        return "smooth", (
            f"the rise at index {noisy[0]['index']} is within the binomial noise of its item "
            "count (95% CIs overlap the last point at chance)"
        )
    if res["drops"] and float(np.ptp(s)) > 0:
        big = max(d for _, _, d in res["drops"])
        if big >= 0.5 * float(np.ptp(s)):
            return "non_monotone", f"falls back by {big:.3f} (>= half of its range)"
    if not res["testable"] and res["bounded"] and res["onset_index"] is not None:
        if res["onset_index"] == 0:
            return "smooth", "above chance from the smallest scale: no flat phase to jump from"
        return "insufficient_resolution", (
            f"leaves chance at index {res['onset_index']}: fewer than {MIN_PRE} earlier points "
            "to test a jump against"
        )
    if not res["bounded"]:
        return "not_tested", (
            "continuous metric: no chance level, so no onset to test a jump at (it is tested "
            "as the mirage check's companion of the bounded metrics)"
        )
    return "smooth", "no significant departure from the earlier trend"


def analyze_curves(curves: list[Curve]) -> list[dict]:
    """Analyse all curves, Holm-correct across the testable ones, run mirage checks, verdicts."""
    results = [analyze_curve(c) for c in curves]
    tested = [r for r in results if r["testable"]]
    for r, padj in zip(tested, st.holm([r["p_curve"] for r in tested]), strict=True):
        r["p_holm"] = padj
    for r in results:
        r.setdefault("p_holm", None)
    by_key = {(r["task"], r["shots"], r["family"], r["metric"]): r for r in results}
    # companion verdicts first (they are never given the mirage step themselves)
    for r in results:
        if not r["companions"]:
            r["verdict"], r["reason"] = _verdict(r)
    for r in results:
        if r["companions"]:
            comps = [by_key.get((r["task"], r["shots"], r["family"], m)) for m in r["companions"]]
            comps = [c for c in comps if c is not None]
            x = np.asarray(r["log10_scale"])
            checks = [
                companion_jump(c, r["onset_index"], x)
                for c in comps
                if r["onset_index"] is not None
            ]
            na = {c["metric"]: c["why_na"] for c in checks if "why_na" in c}
            checks = [c for c in checks if c["jumps"] is not None]
            r["mirage"] = {
                "companions": [c["metric"] for c in comps],
                "checked": bool(checks),
                "not_checked": na,
                "any_companion_jumps": any(c["jumps"] for c in checks),
                "checks": checks,
                "companion_verdicts": {c["metric"]: c.get("verdict") for c in comps},
            }
            r["verdict"], r["reason"] = _verdict(r)
    return results


# writing the report: analysis.emergence.report (write_report, analyze_results)
