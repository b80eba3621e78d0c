"""`scaling sweep plan`: the time estimate says where it comes from, and `--out DIR` calibrates
it on DIR's finished runs (measured on this machine) instead of the built-in model of another
one (the demo, before the model was refitted to the current code: 27.9 min estimated, ~10 min
measured)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaling.cli import main
from sweeps import estimate
from sweeps.calibrate import calibrate
from sweeps.estimate import contention, detect_device, estimate_parts, fmt_seconds, wall_seconds
from sweeps.grid import load_grid, plan_grid

CPU = ("cpu", 1)


@pytest.fixture(autouse=True)
def _cpu(monkeypatch):
    detect_device.cache_clear()
    monkeypatch.setenv("SCALING_DEVICE_KIND", "cpu")
    monkeypatch.delenv("SCALING_FLOPS_PER_S", raising=False)
    yield
    detect_device.cache_clear()


def _finished(
    root: Path, cells, parts, a: float, b: float, kind: str = "cpu", launchers: int | None = None
) -> None:
    """results.jsonl of runs that took a x the model's fixed part + b x its work part (alone;
    with `launchers`, recorded, they took that much longer: `estimate.contention`)."""
    root.mkdir(parents=True, exist_ok=True)
    slow = contention(launchers or 1, (kind, 1))
    counted = {} if launchers is None else {"launchers": launchers}
    lines = [
        json.dumps(
            dict(
                run_id=c.run_id,
                status="done",
                device_kind=kind,
                wall_time_s=(a * f + b * w) * slow,
                **counted,
            )
        )
        for c, (f, w) in zip(cells, parts, strict=True)
    ]
    (root / "results.jsonl").write_text("".join(x + "\n" for x in lines))


def _tail(capsys) -> tuple[str, str]:
    out = capsys.readouterr().out.strip().splitlines()
    return out[-2], out[-1]


def test_uncalibrated_estimate_says_it_is_not_measured(capsys) -> None:
    assert main(["sweep", "plan", "demo"]) == 0
    foot, source = _tail(capsys)
    assert "estimated wall time on cpu x1: " in foot
    assert source.startswith("time estimate: not measured on this machine: the built-in CPU")
    assert "GFLOP/s at these sizes" in source and "add --out DIR" in source


def test_finished_runs_calibrate_the_estimate_and_what_is_left(tmp_path: Path, capsys) -> None:
    cells = plan_grid(load_grid("demo")).cells
    parts = estimate_parts(cells, CPU)
    root = tmp_path / "sweep"
    _finished(root, cells[:10], parts[:10], 0.1, 0.5)  # a machine unlike the model's
    calib = calibrate(cells, parts, json_lines(root), CPU, str(root))
    assert calib.n_runs == 10
    assert calib.fixed == pytest.approx(0.1) and calib.work == pytest.approx(0.5)
    truth = sum(0.1 * f + 0.5 * w for f, w in parts)
    left = sum(0.1 * f + 0.5 * w for f, w in parts[10:])
    assert main(["sweep", "plan", "demo", "--out", str(root)]) == 0
    foot, source = _tail(capsys)
    assert f"estimated wall time on cpu x1: {fmt_seconds(truth)} (sequential" in foot
    assert f"left to train in {root}: 30 of 40 runs, {fmt_seconds(left)}" in foot
    assert source.startswith(f"time estimate: calibrated on 10 finished run(s) in {root}")
    assert "fixed costs a run 0.10x, per-step and FLOP costs 0.50x" in source


def test_few_runs_scale_the_model_by_one_factor(tmp_path: Path) -> None:
    cells = plan_grid(load_grid("demo")).cells
    parts = estimate_parts(cells, CPU)
    _finished(tmp_path, cells[:2], parts[:2], 0.4, 0.4)
    calib = calibrate(cells, parts, json_lines(tmp_path), CPU, "d")
    assert calib.fixed == calib.work == pytest.approx(0.4)


def test_runs_of_another_device_or_no_runs_are_named_not_used(tmp_path: Path, capsys) -> None:
    cells = plan_grid(load_grid("demo")).cells
    root = tmp_path / "sweep"
    _finished(root, cells[:5], estimate_parts(cells, CPU)[:5], 1, 1, kind="TPU v5 lite")
    assert main(["sweep", "plan", "demo", "--out", str(root)]) == 0
    source = _tail(capsys)[1]
    assert source.startswith("time estimate: not measured on this machine (the finished runs")
    assert "ran on TPU v5 lite, not on cpu" in source
    (tmp_path / "empty").mkdir()
    assert main(["sweep", "plan", "demo", "--out", str(tmp_path / "empty")]) == 0
    assert "not measured on this machine (no finished runs in " in _tail(capsys)[1]
    assert main(["sweep", "plan", "demo", "--out", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("error: --out ")
    assert main(["sweep", "plan", "demo", "--out", str(root), "--json"]) == 2  # not ignored
    assert "--json prints no estimate" in capsys.readouterr().err


def json_lines(root: Path) -> list[dict]:
    return [json.loads(x) for x in (root / "results.jsonl").read_text().splitlines()]


def test_status_time_left_uses_the_calibrated_model(tmp_path: Path) -> None:
    """The finished runs' FLOP rate made the demo's time left 16 min after its first 10 runs
    (8.9 min measured): small cells carry more fixed cost per FLOP than the rest."""
    from sweeps import registry as R
    from sweeps.status import collect, format_status

    plan = plan_grid(load_grid("demo"))
    parts = estimate_parts(plan.cells, CPU)
    R.write_plan(tmp_path, plan)
    _finished(tmp_path, plan.cells[:10], parts[:10], 0.1, 0.5)
    info = collect(tmp_path)
    assert info["eta_runs"] == 10
    assert info["eta_s"] == pytest.approx(sum(0.1 * f + 0.5 * w for f, w in parts[10:]))
    assert "left by the time model calibrated on the 10 finished run(s), one run" in (
        format_status(info)
    )


def test_accelerator_and_forced_rates_are_named(monkeypatch, capsys) -> None:
    monkeypatch.setenv("SCALING_DEVICE_KIND", "NVIDIA H100 80GB HBM3")
    monkeypatch.setenv("SCALING_DEVICE_COUNT", "8")
    detect_device.cache_clear()
    assert main(["sweep", "plan", "h100-isoflop"]) == 0
    source = _tail(capsys)[1]
    assert "not measured on this machine: 30% MFU of NVIDIA H100 80GB HBM3's bf16 peak x8" in source
    assert "TFLOP/s" in source
    monkeypatch.setenv("SCALING_DEVICE_KIND", "cpu")
    monkeypatch.delenv("SCALING_DEVICE_COUNT")
    monkeypatch.setenv("SCALING_FLOPS_PER_S", "4e10")
    detect_device.cache_clear()
    assert main(["sweep", "plan", "demo"]) == 0
    assert "SCALING_FLOPS_PER_S = 40 GFLOP/s plus" in _tail(capsys)[1]


def test_runs_beside_other_launchers_calibrate_at_one_launchers_pace(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """Runs of `sweep run --workers 2` shared the cores, and the `--workers 2` estimate charges
    that contention again: calibrated on them, the demo's said 7.0 min where 5.4 were measured.
    Each run now records its launchers, and its wall time is divided by the contention the
    estimate charges for that many before the fit; a run recorded without the count (before the
    field existed) is taken as measured, as before, and the line under the plan says so."""
    monkeypatch.setattr(estimate, "_usable_cores", lambda: 2)  # the 2-core machine
    slow = contention(2, CPU)
    assert slow > 1.2
    cells = plan_grid(load_grid("demo")).cells
    parts = estimate_parts(cells, CPU)
    alone = [0.1 * f + 0.5 * w for f, w in parts]
    root = tmp_path / "sweep"
    _finished(root, cells[:20], parts[:20], 0.1, 0.5, launchers=2)
    calib = calibrate(cells, parts, json_lines(root), CPU, str(root))
    assert calib.fixed == pytest.approx(0.1) and calib.work == pytest.approx(0.5)
    assert (calib.n_runs, calib.n_shared, calib.n_uncounted) == (20, 20, 0)
    assert main(["sweep", "plan", "demo", "--workers", "2", "--out", str(root)]) == 0
    foot, source = _tail(capsys)
    both = f"{fmt_seconds(wall_seconds(alone, 2, CPU))} with --workers 2, "
    assert f"{both}{fmt_seconds(sum(alone))} sequential" in foot
    assert f"(measured {fmt_seconds(sum(alone[:20]))} at one launcher's pace, " in source
    assert "err long" not in source

    _finished(root, cells[:20], parts[:20], 0.1 * slow, 0.5 * slow)  # the same, not counted
    calib = calibrate(cells, parts, json_lines(root), CPU, str(root))
    assert calib.fixed == pytest.approx(0.1 * slow) and calib.work == pytest.approx(0.5 * slow)
    assert (calib.n_shared, calib.n_uncounted) == (0, 20)
    assert main(["sweep", "plan", "demo", "--out", str(root)]) == 0
    source = _tail(capsys)[1]
    assert "20 of them recorded no launcher count (recorded before it was)" in source
    assert "shared the cores (--workers) make it err long" in source
    assert "one launcher's pace" not in source


def test_status_time_left_of_runs_in_flight_carries_their_contention(
    tmp_path: Path, monkeypatch
) -> None:
    """The calibrated model trains at one launcher's pace (the runs' recorded launchers divide
    their contention out); two runs in flight on 2 cores each go that much slower, so dividing
    the time left by two alone said too little."""
    from sweeps import registry as R
    from sweeps.lease import Lease
    from sweeps.status import collect

    monkeypatch.setattr(estimate, "_usable_cores", lambda: 2)
    slow = contention(2, CPU)
    plan = plan_grid(load_grid("demo"))
    parts = estimate_parts(plan.cells, CPU)
    R.write_plan(tmp_path, plan)
    _finished(tmp_path, plan.cells[:10], parts[:10], 0.1, 0.5, launchers=2)
    alone = sum(0.1 * f + 0.5 * w for f, w in parts[10:])
    assert collect(tmp_path)["eta_s"] == pytest.approx(alone)  # nothing in flight: one at a time
    leases = [Lease(tmp_path / "leases", c.run_id, c.run_id, 120.0) for c in plan.cells[10:12]]
    try:
        assert all(lease.acquire() for lease in leases)  # two runs in flight
        info = collect(tmp_path)
    finally:
        for lease in leases:
            lease.release()
    assert info["eta_at_once"] == 2
    assert info["eta_s"] == pytest.approx(alone * slow / 2)


def test_status_flop_rate_fallback_carries_the_same_contention(tmp_path: Path, monkeypatch) -> None:
    """Where the time model cannot be used (a plan this version cannot rebuild), the time left
    comes from the finished runs' FLOP rate: it too is taken at one launcher's pace and the runs
    in flight are slowed by their contention; it divided by the runs in flight alone, so the
    two paths gave different answers for one sweep."""
    from sweeps import calibrate
    from sweeps import registry as R
    from sweeps.lease import Lease
    from sweeps.status import collect

    monkeypatch.setattr(estimate, "_usable_cores", lambda: 2)
    monkeypatch.setattr(calibrate, "plan_cells", lambda plan: None)
    slow = contention(2, CPU)
    plan = plan_grid(load_grid("demo"))
    R.write_plan(tmp_path, plan)
    done = plan.cells[:10]
    rows = [
        dict(run_id=c.run_id, status="done", device_kind="cpu", launchers=2, C_exact=c.c_exact,
             wall_time_s=c.c_exact / 1e9 * slow)  # 1 GFLOP/s alone, recorded beside another
        for c in done
    ]  # fmt: skip
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    alone = sum(c.c_exact for c in plan.cells[10:]) / 1e9
    assert collect(tmp_path)["eta_s"] == pytest.approx(alone)
    leases = [Lease(tmp_path / "leases", c.run_id, c.run_id, 120.0) for c in plan.cells[10:12]]
    try:
        assert all(lease.acquire() for lease in leases)
        info = collect(tmp_path)
    finally:
        for lease in leases:
            lease.release()
    assert info["eta_s"] == pytest.approx(alone * slow / 2)


def test_plan_json_with_workers_exits_2(capsys) -> None:
    """--workers only changes the printed time estimate, which --json leaves out: the two
    together are refused, not silently ignored (as --out with --json)."""
    assert main(["sweep", "plan", "cpu-small", "--json", "--workers", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --workers 3 ")
    assert main(["sweep", "plan", "cpu-small", "--json", "--workers", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["sweep"] == "cpu-small"
