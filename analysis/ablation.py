"""Does the removable fraction of heads and MLP blocks grow with scale? (issue 14; numpy and
matplotlib only: reads the table `scaling ablate DIR` writes, DIR/ablation.jsonl).

- `trend`: removable fraction (suite level, one metric) against log10 N or log10 C, a straight
  line fitted by least squares; its CI resamples the runs AND, inside each run, draws the
  removable fraction from that run's item-resampling distribution (`suite_draws`), so the
  interval carries both the spread across sizes and the eval noise of each point.
- `overlap`: Jaccard similarity of the top-k heads (k = 20% of heads by default) between the
  (task, K) groups of one run: across tasks at the same K, across K for the same task.
- `induction_correlation`: Spearman rank correlation of head importance (aggregated over the
  suite) with the prefix-matching and copying scores of the same heads.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from scaling.errors import UserError
from scaling.fileio import atomic_write
from scaling.fmt import with_ci
from scaling.results import C_6ND, N_TOTAL, read_records, upgrade_result

KINDS = ("heads", "ffn", "both")
METRICS = ("exact_match", "token_acc", "logprob", "all")  # all: every eligible metric at once
MIN_TREND_DECADES = 0.3  # a removable-fraction trend needs runs spanning at least 2x in N or C


def load_table(path: str | Path) -> list[dict]:
    """Records of DIR/ablation.jsonl (or the file itself), smallest model first, in today's names
    (a table written before the record schema was unified is upgraded on read)."""
    p = Path(path)
    if p.is_dir():
        p = p / "ablation.jsonl"
    if not p.is_file():
        raise UserError(f"no ablation table at {p}; run `scaling ablate DIR` first")
    # a damaged line is reported once and skipped (the table is rebuilt by `scaling ablate`)
    recs = [upgrade_result(r) for r in read_records(p)]
    return sorted(recs, key=lambda r: (r.get(N_TOTAL) or 0, r["run_id"]))


def _rank(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (for Spearman)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for v in np.unique(x):
        tie = x == v
        ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(a, b) -> float | None:
    a, b = np.ravel(np.asarray(a, float)), np.ravel(np.asarray(b, float))
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(np.corrcoef(_rank(a), _rank(b))[0, 1])


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def overlap(rec: dict, top_frac: float = 0.2) -> dict:
    """Mean Jaccard of top-k head sets between (task, K) groups: across tasks (same K), across
    shot counts (same task), and over all pairs; k = max(1, round(top_frac * heads))."""
    heads = {g: np.ravel(v) for g, v in rec["importance"]["heads"].items()}
    k = max(1, round(top_frac * rec["n_layers"] * rec["n_heads"]))
    top = {g: set(np.argsort(-v, kind="stable")[:k].tolist()) for g, v in heads.items()}
    tasks_pairs, shots_pairs, all_pairs = [], [], []
    for g1, g2 in itertools.combinations(sorted(top), 2):
        (t1, k1), (t2, k2) = g1.split("/"), g2.split("/")
        j = jaccard(top[g1], top[g2])
        all_pairs.append(j)
        if k1 == k2:
            tasks_pairs.append(j)
        if t1 == t2:
            shots_pairs.append(j)
    mean = lambda xs: float(np.mean(xs)) if xs else None  # noqa: E731
    # chance level: expected Jaccard of two random k-subsets of H heads
    H = rec["n_layers"] * rec["n_heads"]
    rand = np.mean([jaccard(set(np.random.default_rng(i).permutation(H)[:k]),
                            set(np.random.default_rng(i + 999).permutation(H)[:k]))
                    for i in range(200)])  # fmt: skip
    return {"k": k, "across_tasks": mean(tasks_pairs), "across_shots": mean(shots_pairs),
            "all": mean(all_pairs), "random": float(rand)}  # fmt: skip


def induction_correlation(rec: dict) -> dict:
    imp = rec["importance"]["heads_aggregate"]
    ind = rec["importance"]["induction"]
    return {"prefix": spearman(imp, ind["prefix"]), "copying": spearman(imp, ind["copying"])}


def _x(rec: dict, axis: str) -> float | None:
    return rec.get(N_TOTAL) if axis == "N" else rec.get(C_6ND)


def suite(rec: dict, kind: str, metric: str) -> dict | None:
    s = rec["removable"].get(kind, {}).get(metric)
    if not s or s["suite"].get("estimate") is None:
        return None
    return {**s["suite"], "draws": np.asarray(s.get("suite_draws") or [s["suite"]["estimate"]])}


def trend(recs: list[dict], kind: str, metric: str, axis: str = "N", *, resamples: int = 2000,
          level: float = 0.9, seed: int = 0) -> dict | None:  # fmt: skip
    """Least-squares line removable = a + b log10(x) over runs with an eligible suite value;
    None with fewer than 3 runs, or when they span less than MIN_TREND_DECADES of x (runs of one
    compute budget differ in C by a few percent: a slope per decade over that is noise)."""
    pts = [(np.log10(_x(r, axis)), suite(r, kind, metric)) for r in recs if _x(r, axis)]
    pts = [(x, s) for x, s in pts if s is not None]
    if len(pts) < 3 or np.ptp([x for x, _ in pts]) < MIN_TREND_DECADES:
        return None
    x = np.array([p[0] for p in pts])
    y = np.array([p[1]["estimate"] for p in pts])
    b, a = np.polyfit(x, y, 1)
    rng = np.random.default_rng(seed)
    slopes = []
    for _ in range(resamples):
        i = rng.integers(0, len(pts), len(pts))
        if np.ptp(x[i]) == 0:
            continue
        yy = np.array([rng.choice(pts[j][1]["draws"]) for j in i])
        slopes.append(np.polyfit(x[i], yy, 1)[0])
    q = (1 - level) / 2
    lo, hi = np.quantile(slopes, [q, 1 - q]) if slopes else (np.nan, np.nan)
    return {"kind": kind, "metric": metric, "axis": axis, "n_runs": len(pts), "slope": float(b),
            "intercept": float(a), "slope_lo": float(lo), "slope_hi": float(hi), "level": level,
            "x": x.tolist(), "y": y.tolist()}  # fmt: skip


def first_step(rec: dict, kind: str) -> float | None:
    """The smallest fraction of `kind` a pruning step actually removed (one head of 8: 0.125;
    one MLP block of 2: 0.5): a removable fraction of 0 means less than this, not nothing."""
    actual = [a for a in rec.get("curves", {}).get(kind, {}).get("actual", []) if a > 0]
    return min(actual) if actual else None


def summarize(recs: list[dict], *, top_frac: float = 0.2, level: float = 0.9) -> dict:
    rows = []
    for r in recs:
        row = {"run_id": r["run_id"], "N": r.get(N_TOTAL), "C": r.get(C_6ND),
               "heads": r["n_layers"] * r["n_heads"], "ffn": r["n_layers"],
               "overlap": overlap(r, top_frac), "induction_corr": induction_correlation(r),
               "removable": {}}  # fmt: skip
        for kind in r["removable"]:
            first = first_step(r, kind)
            for metric in METRICS:
                s = suite(r, kind, metric)
                row["removable"][f"{kind}/{metric}"] = (
                    None
                    if s is None
                    else {**{k: s[k] for k in ("estimate", "lo", "hi")}, "first_step": first}
                )
        rows.append(row)
    trends = [t for kind in KINDS for metric in METRICS for axis in ("N", "C")
              if (t := trend(recs, kind, metric, axis, level=level)) is not None]  # fmt: skip
    for t in trends:  # every point is '< f', counted as 0: the slope 0 [0, 0] measures nothing
        t["all_censored"] = censored(rows, f"{t['kind']}/{t['metric']}") >= t["n_runs"]
    return {"runs": rows, "trends": trends, "tol": recs[0]["spec"]["tol"] if recs else None}


def _fmt(rm: dict, key: str) -> str:
    """A removable fraction with its CI; "not run" when the record lacks that kind (e.g. `--kinds
    heads`), "at chance" when it ran but no group was eligible, "< f" when even the first step
    (removing f of them) dropped more than the tolerance (the CI only if some resample differs)."""
    if key not in rm:
        return "not run"
    v = rm[key]
    if v is None:
        return "at chance"
    first = v.get("first_step")
    if v["estimate"] == 0 and first:  # the first step already dropped more than tol
        ci = f" [{v['lo']:.2f}, {v['hi']:.2f}]" if v["hi"] > 0 else ""
        return f"< {first:.2f}{ci}"
    return with_ci(v, ".2f")


def censored(rows: list[dict], key: str) -> int:
    """Runs whose removable fraction under `key` ("kind/metric") is 0 below a first step (`< f`)."""
    vals = [r["removable"].get(key) for r in rows]
    return sum(1 for v in vals if v and v["estimate"] == 0 and v.get("first_step"))


def _opt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def narrow_axes(rows: list[dict]) -> list[str]:
    """One report line per axis (N, C) whose runs span too little for a trend to be fitted."""
    lines = []
    for axis in ("N", "C"):
        xs = [np.log10(r[axis]) for r in rows if r.get(axis)]
        if len(xs) >= 3 and np.ptp(xs) < MIN_TREND_DECADES:
            lines.append(
                f"- vs log10 {axis}: not fitted: the runs span {np.ptp(xs):.2f} decades of {axis} "
                f"(less than {MIN_TREND_DECADES}); ablate runs of several sizes and budgets"
            )
    return lines


def report_md(summary: dict, metric: str = "logprob") -> str:
    """The report section (markdown)."""
    tol = summary["tol"]
    L = [
        f"Largest fraction removable with at most a {tol:.0%} relative drop of the suite "
        f"average ({metric}; CI from resampling eval items), per run; then the overlap of the "
        "top-20% heads across tasks/shots (Jaccard; `random` = two random sets) and the rank "
        "correlation of head importance with the induction scores. Full output: "
        "`ablation.json`; per task and shot: `ablation.jsonl` in the sweep directory. "
        "`< f`: the first pruning step (f of them, the least important first: one head, one "
        "MLP block, or the smallest --fractions step) already dropped more, so less than f is "
        "removable; only finer steps (or more components) can tell how much.",
        "",
        "| run | N | heads | FFN | heads removable | FFN removable | both | exact-match heads "
        "| Jaccard tasks / shots / random | rho prefix / copying |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["runs"]:
        rm, ov, ic = r["removable"], r["overlap"], r["induction_corr"]
        L.append(
            f"| {r['run_id']} | {r['N']:.3g} | {r['heads']} | {r['ffn']} "
            f"| {_fmt(rm, f'heads/{metric}')} | {_fmt(rm, f'ffn/{metric}')} "
            f"| {_fmt(rm, f'both/{metric}')} | {_fmt(rm, 'heads/exact_match')} "
            f"| {_opt(ov['across_tasks'])} / {_opt(ov['across_shots'])} / {ov['random']:.2f} "
            f"| {_opt(ic['prefix'])} / {_opt(ic['copying'])} |"
        )
    L += ["", "Trend of the removable fraction (slope per decade, with CI):", ""]
    shown = [t for t in summary["trends"] if t["metric"] == metric or t["metric"] == "exact_match"]
    for t in shown:
        cut = censored(summary["runs"], f"{t['kind']}/{t['metric']}")
        if t.get("all_censored"):
            L.append(
                f"- {t['kind']} ({t['metric']}) vs log10 {t['axis']}: not measured: at all "
                f"{t['n_runs']} runs the first pruning step already dropped more than the "
                "tolerance (`< f`); only finer steps (or more components) can tell how much"
            )
            continue
        L.append(
            f"- {t['kind']} ({t['metric']}) vs log10 {t['axis']}: slope {t['slope']:+.3f} "
            f"[{t['slope_lo']:+.3f}, {t['slope_hi']:+.3f}] over {t['n_runs']} runs"
            + (f" ({cut} of them at `< f`, counted as 0)" if cut else "")
        )
    narrow = narrow_axes(summary["runs"])
    n_runs = len(summary["runs"])
    if n_runs < 3:
        L.append(f"- not fitted: {n_runs} run(s) ablated; a trend needs at least 3 "
                 "(ablate more runs: `scaling ablate DIR --sizes 3`)")  # fmt: skip
    elif not shown and not narrow:
        L.append(f"- not fitted: fewer than 3 runs with a {metric} or exact-match suite value "
                 "(exact match counts only above chance) and a known N and C")  # fmt: skip
    return "\n".join(L + narrow)


def analyze(table: str | Path, out_dir: str | Path) -> dict:
    """ablation.json and the markdown section for the table at `table`; returns
    {"runs": records, "summary", "md"} (figures: `analysis.ablation_plots.all_figures`)."""
    recs = load_table(table)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(recs)
    atomic_write(out / "ablation.json", json.dumps(summary, indent=2) + "\n")
    if not recs:  # an empty table (or only damaged lines): say so, not a TypeError on tol
        md = f"{table} holds no readable ablation record; rerun `scaling ablate DIR`."
        return {"runs": recs, "summary": summary, "md": md}
    return {"runs": recs, "summary": summary, "md": report_md(summary)}
