"""Sweep planning: every grid kind's FLOPs accounting, shape families, and impossible grids."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from scaling.cli import main
from scaling.config import PRESETS
from scaling.flops import flops_per_token, param_counts
from sweeps.grid import load_grid, plan_grid

BASE = """
[base.model]
seq_len = 32
[base.eval]
enabled = false
"""


def _grid(tmp_path: Path, body: str, name: str = "g") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n' + body + BASE)
    return path


def _check_accounting(cell) -> None:
    m = cell.config.model
    assert cell.n_total == param_counts(m).total
    assert cell.n_nonembed == param_counts(m).nonembedding
    assert cell.tokens == cell.steps * cell.batch * m.seq_len
    assert cell.c_exact == pytest.approx(flops_per_token(m) * cell.tokens)
    assert cell.c_6nd == pytest.approx(6 * cell.n_total * cell.tokens)
    assert cell.config.train.steps == cell.steps and cell.config.train.batch_size == cell.batch
    assert 0 <= cell.config.train.warmup_steps < cell.steps


@pytest.mark.parametrize("name", ["demo", "cpu-small", "h100-isoflop"])
def test_builtin_isoflop_grids_hit_every_budget_within_1pct(name: str) -> None:
    plan = plan_grid(load_grid(name))
    assert plan.kind == "isoflop"
    budgets = sorted({c.cell["budget"] for c in plan.cells})
    assert len(budgets) >= 2
    for c in plan.cells:
        _check_accounting(c)
        assert abs(c.c_exact / c.cell["budget"] - 1) < 0.01, c.label
        assert c.steps >= 50, c.label
    for b in budgets:  # several sizes per budget, spread over N
        ns = [c.n_total for c in plan.cells if c.cell["budget"] == b]
        assert len(set(ns)) >= 2 and max(ns) / min(ns) > 2


def test_demo_grid_shape_and_range() -> None:
    spec = load_grid("demo")
    plan = plan_grid(spec)
    budgets = {c.cell["budget"] for c in plan.cells}
    shapes = {c.cell["shape"] for c in plan.cells}
    assert len(budgets) >= 3 and len(shapes) >= 5
    assert all(c.config.data.dataset == "python_source" for c in plan.cells)
    assert all(c.config.model.vocab_size == 259 for c in plan.cells)
    assert all(c.steps >= 100 for c in plan.cells)
    tpp = spec.study.center_tokens_per_param
    for b in sorted(budgets):  # each budget's window brackets its N_opt
        ns = [c.n_total for c in plan.cells if c.cell["budget"] == b]
        assert min(ns) < math.sqrt(b / (6 * tpp)) < max(ns)
    # one batch for the whole grid (never confounded with compute), so shapes repeated across
    # budgets reuse their compiled step
    assert len({c.batch for c in plan.cells}) == 1


def test_cpu_small_snapshot() -> None:
    plan = plan_grid(load_grid("cpu-small"))
    got = [(c.label, c.n_total, c.steps, c.batch, c.config.eval.enabled) for c in plan.cells]
    assert got == [
        ("C=1e+09/d8-l1-h1/seed0", 3120, 194, 8, False),
        ("C=1e+09/d16-l1-h2/seed0", 8288, 74, 8, False),
        ("C=2e+09/d8-l1-h1/seed0", 3120, 388, 8, False),
        ("C=2e+09/d16-l1-h2/seed0", 8288, 149, 8, False),
    ]
    assert len({c.run_id for c in plan.cells}) == 4


def test_isoflop_centred_window_and_seeds(tmp_path: Path) -> None:
    body = """kind = "isoflop"
seeds = [0, 1]
[isoflop]
budgets = [1e11, 1e12]
center_tokens_per_param = 20
window = 6
[shapes]
aspect = 16
head_dim = 8
count = 3
[hparams]
batch_size = 16
"""
    plan = plan_grid(load_grid(_grid(tmp_path, body)))
    assert len(plan.cells) == 2 * 3 * 2
    for c in plan.cells:
        _check_accounting(c)
        assert abs(c.c_exact / c.cell["budget"] - 1) < 0.01
        assert c.config.train.seed == c.cell["seed"]
    for b in (1e11, 1e12):  # shapes bracket N_opt = sqrt(C / 120)
        ns = [c.n_total for c in plan.cells if c.cell["budget"] == b]
        n_opt = math.sqrt(b / 120)
        assert min(ns) < n_opt < max(ns)


def test_nxd_factorial(tmp_path: Path) -> None:
    body = """kind = "nxd"
[nxd]
tokens = [1e5, 3e5, 1e6]
[shapes]
n_min = 5e3
n_max = 4e4
count = 3
[hparams]
batch_size = 8
min_steps = 50
"""
    plan = plan_grid(load_grid(_grid(tmp_path, body)))
    assert len(plan.cells) == 9
    assert len({c.cell["shape"] for c in plan.cells}) == 3
    for c in plan.cells:
        _check_accounting(c)
        assert abs(c.tokens / c.cell["tokens"] - 1) < 0.01


def test_size_ladder_fixed_tokens_per_param(tmp_path: Path) -> None:
    body = """kind = "ladder"
[ladder]
tokens_per_param = 20
[shapes]
n_min = 5e3
n_max = 2e5
count = 5
[hparams]
batch_size = 16
min_steps = 20
"""
    plan = plan_grid(load_grid(_grid(tmp_path, body)))
    assert len(plan.cells) == 5
    for c in plan.cells:
        _check_accounting(c)
        assert abs(c.tokens / (20 * c.n_total) - 1) < 0.01
    ns = [c.n_total for c in plan.cells]
    assert ns == sorted(ns) and ns[0] <= 1e4 and ns[-1] >= 1e5


def test_gpt3_ladder_scale_knob() -> None:
    full = plan_grid(load_grid("gpt3-ladder"))
    assert [c.cell["size"] for c in full.cells][0] == "gpt3-small" and len(full.cells) == 8
    half = plan_grid(load_grid("gpt3-ladder", ["shapes.scale=0.015625"]))
    for a, b in zip(full.cells, half.cells, strict=True):
        preset = PRESETS[a.cell["size"]]
        for scale, c in ((1 / 32, a), (1 / 64, b)):  # width x scale, up to head-dim rounding
            m = c.config.model
            assert abs(m.d_model - preset["d_model"] * scale) <= m.head_dim, c.label
            assert m.n_layers == preset["n_layers"] and m.head_dim >= 8
        assert b.n_nonembed < a.n_nonembed
        assert b.config.model.norm == "layernorm" and b.config.model.pos == "learned"
        assert abs(b.tokens / (20 * b.n_total) - 1) < 0.01


def test_hparam_rules(tmp_path: Path) -> None:
    # the demo uses a width-independent lr; exercise the 1/width rule on its shapes
    rule = ["hparams.lr=3e-3", "hparams.lr_exp=1.0", "hparams.lr_max=1.5e-2"]
    plan = plan_grid(load_grid("demo", rule))
    by_width = sorted({(c.config.model.d_model, c.lr) for c in plan.cells})
    lrs = [lr for _, lr in by_width]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < lrs[0]  # wider -> smaller lr
    for c in plan.cells:  # warmup: N_total tokens (Porian et al.), at most 10% of the steps
        assert c.warmup == min(math.ceil(c.n_total / (c.batch * 64)), int(0.1 * c.steps))


def test_mup_grid_does_not_scale_lr_by_width_twice(capsys) -> None:
    """Under muP the model scales hidden-layer lr by base_width / d_model itself: the grid keeps
    one lr for every width (lr_exp 0 by default there) and refuses an explicit width rule."""
    mup = ['base.model.param="mup"', "base.model.base_width=8", "hparams.lr_max=1"]
    cells = plan_grid(load_grid("cpu-small", mup)).cells
    assert {c.lr for c in cells} == {3e-3} and len({c.config.model.d_model for c in cells}) > 1
    sp = plan_grid(load_grid("cpu-small", ["hparams.lr_max=1"])).cells
    assert len({c.lr for c in sp}) > 1  # SP keeps the width rule
    assert main(["sweep", "plan", "cpu-small", *(f"--set={o}" for o in mup),
                 "--set=hparams.lr_exp=1"]) == 2  # fmt: skip
    assert "lr_exp = 1.0 with model.param" in capsys.readouterr().err


def test_a_width_independent_lr_above_lr_max_exits_2(capsys) -> None:
    """With lr_exp = 0 (the muP default) lr_max capped every cell's lr without a word: demo
    (lr_max 1.5e-2) with hparams.lr = 0.03 planned 40 runs at 0.015; muP cpu-small at 0.01."""
    mup = ['--set=base.model.param="mup"', "--set=base.model.base_width=8"]
    for grid, extra, cap in (("demo", [], "0.015"), ("cpu-small", mup, "0.01")):
        assert main(["sweep", "plan", grid, "--set=hparams.lr=0.03", *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: grid '{grid}': [hparams] lr = 0.03 is above lr_max = {cap}")
        assert "set lr_max >= 0.03" in err and err.count("\n") == 1
    # an lr axis has no cap, and a cap at or above lr is fine
    assert {c.lr for c in plan_grid(load_grid("demo", ["hparams.lr=[0.03]"])).cells} == {0.03}
    assert {c.lr for c in plan_grid(load_grid("demo", ["hparams.lr=0.015"])).cells} == {0.015}


def test_plan_cli_prints_table(capsys) -> None:
    assert main(["sweep", "plan", "cpu-small"]) == 0
    out = capsys.readouterr().out
    assert "run_id" in out and "C_exact" in out and "est_time" in out
    assert "total 5.994e+09 FLOPs" in out


def test_workers_estimate_list_schedules_with_core_contention(capsys) -> None:
    from sweeps.estimate import CPU_LAUNCHER_CORES, wall_seconds

    cpu, gpu = ("cpu", 1), ("NVIDIA H100 80GB HBM3", 1)
    assert wall_seconds([3.0, 1.0, 2.0], 1, cpu, cores=2) == 6.0
    # 2 launchers on 2 cores: plan order [3, 1, 2] -> launcher A takes 3, B takes 1 then 2
    slow = 2 * CPU_LAUNCHER_CORES / 2
    assert wall_seconds([3.0, 1.0, 2.0], 2, cpu, cores=2) == pytest.approx(3.0 * slow)
    assert wall_seconds([3.0, 1.0, 2.0], 2, cpu, cores=16) == 3.0  # no contention
    assert wall_seconds([3.0, 1.0, 2.0], 2, gpu) == pytest.approx(6.0)  # one GPU, shared

    assert main(["sweep", "plan", "demo", "--workers", "2"]) == 0
    foot = capsys.readouterr().out.strip().splitlines()[-2]  # the last: its source
    assert "with --workers 2, " in foot and " sequential (local backend" in foot
    assert main(["sweep", "plan", "demo", "--workers", "0"]) == 2
    assert "--workers 0: must be >= 1" in capsys.readouterr().err


def test_unknown_device_footer_keeps_the_workers(capsys, monkeypatch) -> None:
    """No estimate ("?") on an unknown device: the footer still names --workers N, not
    "sequential"."""
    from sweeps.estimate import detect_device

    detect_device.cache_clear()
    monkeypatch.setenv("SCALING_DEVICE_KIND", "unknown-accelerator")
    try:
        assert main(["sweep", "plan", "cpu-small", "--workers", "2"]) == 0
    finally:
        detect_device.cache_clear()
    foot = capsys.readouterr().out.strip().splitlines()[-2]  # the last: its source
    assert "unknown-accelerator x1: ? (--workers 2, local backend" in foot, foot


def test_estimate_charges_the_few_shot_evals_only_when_they_run() -> None:
    from sweeps.estimate import CPU_EVAL_S, estimate_seconds

    cpu = ("cpu", 1)
    on = estimate_seconds(plan_grid(load_grid("demo")).cells, cpu)
    off = estimate_seconds(plan_grid(load_grid("demo", ["base.eval.enabled=false"])).cells, cpu)
    assert CPU_EVAL_S > 0
    assert [a - b for a, b in zip(on, off, strict=True)] == pytest.approx([CPU_EVAL_S] * len(on))


IMPOSSIBLE = {
    "below-one-step": (
        'kind = "isoflop"\n[isoflop]\nbudgets = [1e6]\n[shapes]\nn_min = 3e3\nn_max = 9e3\n'
        "count = 2\n[hparams]\nbatch_size = 8\n",
        "budget 1e+06 FLOPs is below one training step of the smallest model d8-l1-h1",
    ),
    "steps-lt-1": (
        'kind = "nxd"\n[nxd]\ntokens = [100]\n[shapes]\nn_min = 3e3\nn_max = 9e3\ncount = 2\n'
        "[hparams]\nbatch_size = 8\n",
        "cell D=100/d8-l1-h1/seed0: steps < 1",
    ),
    "rounding": (
        'kind = "isoflop"\n[isoflop]\nbudgets = [1.3e8]\n[shapes]\nn_min = 3e3\nn_max = 9e3\n'
        "count = 2\n[hparams]\nbatch_size = 8\nmin_batch_size = 8\n",
        "misses the target by 3.4% (> 1%); lower hparams.batch_size (more, finer steps), raise "
        "[isoflop] tolerance",
    ),
    "duplicate-seed": (
        'kind = "ladder"\nseeds = [0, 0]\n[shapes]\nn_min = 3e3\nn_max = 9e3\ncount = 2\n'
        "[hparams]\nbatch_size = 8\n",
        "duplicate cell d8-l1-h1/seed0",
    ),
    "duplicate-budget": (
        'kind = "isoflop"\n[isoflop]\nbudgets = [1e9, 1e9]\n[shapes]\nn_min = 3e3\n'
        "n_max = 9e3\ncount = 2\n[hparams]\nbatch_size = 8\n",
        "duplicate cell C=1e+09/d8-l1-h1/seed0",
    ),
    "heads-dont-divide": (
        'kind = "ladder"\n[shapes]\nrule = "list"\nlist = [{d_model = 30, n_layers = 1, '
        "n_heads = 4}]\n",
        "shape d30-l1-h4 is invalid: model.n_heads = 4 does not divide model.d_model = 30",
    ),
    "multiple-vs-head-dim": (
        'kind = "ladder"\n[shapes]\nhead_dim = 8\nmultiple = 12\nn_min = 3e3\nn_max = 9e3\n',
        "multiple = 12 must be a positive multiple of head_dim = 8",
    ),
    "too-narrow-range": (
        'kind = "ladder"\n[shapes]\nn_min = 3e3\nn_max = 3.5e3\ncount = 4\n',
        "cannot place 4 distinct shapes",
    ),
    "unknown-kind": ('kind = "grid"\n', "kind = 'grid'; choose one of isoflop, nxd, ladder"),
    "unknown-key": (
        'kind = "ladder"\n[hparams]\nlearning_rate = 1.0\n',
        "grid [hparams]: unknown key 'learning_rate'",
    ),
    "empty-budgets": ('kind = "isoflop"\n', "grid [isoflop] budgets is empty"),
    "batch-not-a-multiple": (
        'kind = "ladder"\n[shapes]\nn_min = 3e3\nn_max = 9e3\n[hparams]\nbatch_size = 8\n'
        "batch_multiple = 16\n",
        "batch_size = 8 is not a multiple of batch_multiple = 16",
    ),
    "key-of-another-shape-rule": (
        'kind = "ladder"\n[shapes]\nscale = 0.125\nn_min = 3e3\nn_max = 9e3\n',
        "grid [shapes] scale = 0.125: rule = 'aspect' does not read it (only rule = gpt3",
    ),
    "list-shape-not-an-integer": (
        'kind = "ladder"\n[shapes]\nrule = "list"\nlist = [{d_model = 16.5, n_layers = 1, '
        "n_heads = 2}]\n",
        "grid [shapes] list[0] = {'d_model': 16.5, 'n_layers': 1, 'n_heads': 2}: each shape",
    ),
    "override-where-typo": (
        'kind = "ladder"\n[shapes]\nn_min = 3e3\nn_max = 9e3\ncount = 2\n[hparams]\n'
        'batch_size = 8\n[[overrides]]\nwhere = {shap = "d8-l1-h1"}\nset = {"train.lr" = 1.0}\n',
        "overrides[0] where = {'shap': 'd8-l1-h1'}: matches no cell; 'shap' is not a cell",
    ),
    "override-where-no-such-value": (
        'kind = "ladder"\n[shapes]\nn_min = 3e3\nn_max = 9e3\ncount = 2\n[hparams]\n'
        'batch_size = 8\n[[overrides]]\nwhere = {shape = "d8-l2-h1"}\nset = {"train.lr" = 1.0}\n',
        "matches no cell; shape is one of 'd16-l1-h2', 'd8-l1-h1'",
    ),
    "other-kinds-table": (
        'kind = "ladder"\n[isoflop]\nbudgets = [1e9]\n[shapes]\nn_min = 3e3\nn_max = 9e3\n',
        "kind = 'ladder' but the grid has a [isoflop] table",
    ),
    "count-not-a-number": (
        'kind = "ladder"\n[shapes]\nn_min = 3e3\nn_max = 9e3\ncount = "abc"\n',
        "grid [shapes] count = 'abc': expected a number",
    ),
    "count-not-an-integer": (
        'kind = "ladder"\n[shapes]\nn_min = 3e3\nn_max = 9e3\ncount = 2.5\n',
        "grid [shapes] count = 2.5: expected an integer",
    ),
    "tolerance-not-a-number": (
        'kind = "ladder"\n[ladder]\ntolerance = "1%"\n[shapes]\nn_min = 3e3\nn_max = 9e3\n',
        "grid [ladder] tolerance = '1%': expected a number",
    ),
    "negative-seed": (
        'kind = "ladder"\nseeds = [-1]\n[shapes]\nn_min = 3e3\nn_max = 9e3\ncount = 2\n',
        "seeds = [-1]; give a non-empty list of integers >= 0",
    ),
    "batch-per-budget-without-budgets": (
        'kind = "ladder"\n[shapes]\nn_min = 3e3\nn_max = 9e3\n[hparams]\nbatch_per = "budget"\n',
        '[hparams] batch_per = "budget" shares one batch per compute budget, which only',
    ),
    "window-without-centring": (
        'kind = "isoflop"\n[isoflop]\nbudgets = [1e9]\nwindow = 4\n[shapes]\nn_min = 3e3\n'
        "n_max = 9e3\n",
        "[isoflop] window = 4 is read only with center_tokens_per_param > 0",
    ),
    "centring-fixed-shapes": (
        'kind = "isoflop"\n[isoflop]\nbudgets = [1e9]\ncenter_tokens_per_param = 20\n'
        '[shapes]\nrule = "list"\nlist = [{d_model = 16, n_layers = 1, n_heads = 2}]\n',
        "rule = 'list' has fixed shapes: remove center_tokens_per_param",
    ),
    "seed-too-large": (
        'kind = "ladder"\nseeds = [9223372036854775808]\n[shapes]\nn_min = 3e3\nn_max = 9e3\n',
        "seeds = [9223372036854775808]; give a non-empty list of integers >= 0 (and < 2^63",
    ),
    "override-batch": (
        'kind = "ladder"\n[shapes]\nn_min = 3e3\nn_max = 9e3\ncount = 2\n[hparams]\n'
        'batch_size = 8\n[[overrides]]\nset = {"train.batch_size" = 16}\n',
        "grid overrides[0] set 'train.batch_size': the plan derives it",
    ),
}


@pytest.mark.parametrize("case", sorted(IMPOSSIBLE))
def test_impossible_grids_exit_2_with_precise_message(tmp_path: Path, capsys, case: str) -> None:
    body, message = IMPOSSIBLE[case]
    assert main(["sweep", "plan", str(_grid(tmp_path, body, case))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err


def test_sweeps_import_no_jax() -> None:
    code = (
        "import sys, sweeps.cli, sweeps.grid, sweeps.runner, sweeps.slurm, sweeps.status, "
        "sweeps.fake\nfrom sweeps.grid import load_grid, plan_grid\nplan_grid(load_grid('demo'))\n"
        "bad = [m for m in ('jax', 'flax', 'optax', 'orbax') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "env, bad",
    [
        (
            {"SCALING_DEVICE_KIND": "H100", "SCALING_DEVICE_COUNT": "abc"},
            "SCALING_DEVICE_COUNT='abc'",
        ),
        ({"SCALING_DEVICE_KIND": "H100", "SCALING_DEVICE_COUNT": "0"}, "SCALING_DEVICE_COUNT='0'"),
        (
            {"SCALING_DEVICE_KIND": "H100", "SCALING_DEVICE_COUNT": "-2"},
            "SCALING_DEVICE_COUNT='-2'",
        ),
        ({"SCALING_DEVICE_COUNT": "abc"}, "SCALING_DEVICE_COUNT='abc'"),  # no kind: still read
        ({"SCALING_FLOPS_PER_S": "abc"}, "SCALING_FLOPS_PER_S='abc'"),
        ({"SCALING_FLOPS_PER_S": "-1"}, "SCALING_FLOPS_PER_S='-1'"),
        ({"SCALING_FLOPS_PER_S": "0"}, "SCALING_FLOPS_PER_S='0'"),
        ({"SCALING_FLOPS_PER_S": "inf"}, "SCALING_FLOPS_PER_S='inf'"),
    ],
)
def test_plan_with_a_bad_estimate_env_var_exits_2(env, bad, monkeypatch, capsys) -> None:
    """A device count or throughput that is not a positive number names the variable, its value
    and the valid range, instead of a traceback or a negative wall time."""
    from sweeps.estimate import detect_device

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    detect_device.cache_clear()
    try:
        assert main(["sweep", "plan", "cpu-small"]) == 2
    finally:
        detect_device.cache_clear()
    out = capsys.readouterr()
    err = out.err.strip()
    assert len(err.splitlines()) == 1 and bad in err and "> 0" in err, err
    assert "estimated" not in out.out


def test_plan_with_good_estimate_env_vars_scales_the_wall_time(monkeypatch, capsys) -> None:
    from sweeps.estimate import detect_device, estimate_seconds

    cells = plan_grid(load_grid("cpu-small")).cells
    monkeypatch.setenv("SCALING_DEVICE_KIND", "H100")
    for count in ("1", "4"):
        monkeypatch.setenv("SCALING_DEVICE_COUNT", count)
        detect_device.cache_clear()
        assert detect_device() == ("H100", int(count))
    detect_device.cache_clear()
    one, four = (estimate_seconds(cells, ("H100", n)) for n in (1, 4))
    assert all(a > b > 0 for a, b in zip(one, four, strict=True))
    monkeypatch.setenv("SCALING_FLOPS_PER_S", "1e9")
    slow = estimate_seconds(cells, ("cpu", 1))
    monkeypatch.setenv("SCALING_FLOPS_PER_S", "2e9")
    fast = estimate_seconds(cells, ("cpu", 1))
    assert all(a > b > 0 for a, b in zip(slow, fast, strict=True))


def test_mup_grid_with_a_fixed_d_ff_exits_2(tmp_path, capsys) -> None:
    """muP scales the MLP by one m = d_model / base_width: a [shapes] list whose d_ff stays put
    while d_model grows mis-scaled the down-projection (its output shrank 6.8x from d32 to d256
    at d_ff 128) without a word."""
    grid = tmp_path / "g.toml"
    lst = "[{d_model=16,n_layers=2,n_heads=2,d_ff=64},{d_model=32,n_layers=2,n_heads=4,d_ff=64}]"
    text = (Path(__file__).parents[2] / "sweeps/grids/cpu-small.toml").read_text()
    text = text.replace(
        'rule = "aspect"\naspect = 16\nhead_dim = 8\nn_min = 4e3\nn_max = 9e3\ncount = 2',
        f'rule = "list"\nlist = {lst}',
    )
    assert "list = [" in text
    grid.write_text(text)
    mup = ['--set=base.model.param="mup"', "--set=base.model.base_width=16"]
    assert main(["sweep", "plan", str(grid), *mup]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: grid 'cpu-small': model.param = \"mup\" needs one d_ff / d_model")
    assert "d16-l2-h2: 4, d32-l2-h4: 2" in err and err.count("\n") == 1
    assert main(["sweep", "plan", str(grid)]) == 0  # SP: any d_ff
    grid.write_text(text.replace("d_ff=64}]", "d_ff=128}]"))  # 4 x d_model at both widths
    assert main(["sweep", "plan", str(grid), *mup]) == 0
