"""The malformed-input table of issue 12: grids, configs, CLI flags and tables.

Every case must end with exit code 2, exactly one `error:` line, no traceback, before any
compute, and without writing a single file. `CASES` is used by tests/cli/test_fuzz_inputs.py (in
`make test`, in-process) and by scripts/faults.py (which prints the counts).

A case is (id, argv, files): `{d}` in argv and file names is the case's own empty directory.
"""

from __future__ import annotations

ISO = """name = "iso"
kind = "isoflop"
[isoflop]
budgets = [3e10, 1e11]
center_tokens_per_param = 20
window = 4
[shapes]
rule = "aspect"
aspect = 1000
min_layers = 2
head_dim = 4
count = 3
[hparams]
batch_size = 16
min_steps = 1
[base.model]
seq_len = 32
[base.eval]
enabled = false
"""
NXD = """name = "nxd"
kind = "nxd"
[nxd]
tokens = [2e4, 4e4]
[shapes]
n_min = 3e3
n_max = 9e3
count = 2
[hparams]
batch_size = 8
min_steps = 1
[base.model]
seq_len = 32
"""
LADDER = """name = "lad"
kind = "ladder"
[ladder]
tokens_per_param = 2
[shapes]
n_min = 3e3
n_max = 9e3
count = 2
[hparams]
batch_size = 8
min_steps = 1
[base.model]
seq_len = 32
"""
CFG = """name = "c"
[model]
d_model = 16
n_layers = 1
n_heads = 2
seq_len = 32
[train]
steps = 10
batch_size = 8
[data]
dataset = "python_source/small"
val_tokens = 2048
[eval]
enabled = false
"""
CSV_OK = "N,D,loss\n" + "".join(
    f"{n:g},{20 * n:g},{1.7 + 400 / n**0.34 + 400 / (20 * n) ** 0.28:.5f}\n"
    for n in (1e6, 2e6, 4e6, 8e6, 16e6, 32e6)
)
MAP = ["--map", "N=N", "--map", "D=D", "--map", "loss=loss"]
FAST = ["--resamples", "10", "--holdout", "none", "--no-approach2"]


def _rec(**kw) -> str:
    import json

    base = dict(run_id="a", status="done", N_total=1e6, D=2e7, final_val_loss=3.0)
    return json.dumps({**base, **kw}) + "\n"


def _grid_sets() -> list[tuple[str, str, str, str]]:
    """(grid name, grid text, key, bad value) for `sweep plan GRID --set key=value`."""
    out = []
    iso = {
        "isoflop.budgets": ["[inf]", "[nan]", "[]", "[-1e11]", "[0]", '["a"]', "[true]", "5"],
        "isoflop.window": ["0", "-1", "0.5", "1", "inf", "nan", '"x"'],
        "isoflop.center_tokens_per_param": ["-1", "inf", "nan", '"x"'],
        "isoflop.tolerance": ["-0.1", "inf", "nan"],
        "isoflop": ["5", '"x"', "[1]"],
        "shapes.count": ["0", "-1", "1e9", "1.5", "inf", "nan", '"x"', "true"],
        "shapes.aspect": ["0", "-1", "inf", "nan"],
        "shapes.head_dim": ["0", "-4", "1e9"],
        "shapes.multiple": ["-8", "5"],
        "shapes.min_layers": ["0", "-1", "1e9"],
        "shapes.ff_mult": ["0", "-1", "inf", "nan"],
        "shapes.count_by": ['"foo"', "5"],
        "shapes.rule": ['"foo"', "5"],
        "shapes.list": ['"x"'],
        "shapes": ["5", '"x"'],
        "hparams.lr": ["0", "-1", "inf", "nan", '"x"'],
        "hparams.lr_width": ["0", "-1", "inf"],
        "hparams.lr_exp": ["inf", "nan"],
        "hparams.lr_max": ["-1", "nan", "inf"],
        "hparams.batch_size": ["0", "-1", "1.5", "inf"],
        "hparams.min_batch_size": ["-1"],
        "hparams.batch_multiple": ["0", "-1"],
        "hparams.min_steps": ["-1", "1e15"],
        "hparams.batch_per": ['"foo"', "5"],
        "hparams.warmup": ['"foo"', "-1", "nan", "true", "1.0", "2.5"],  # a list is an axis (valid)
        "hparams.warmup_max_frac": ["-1", "2", "nan"],
        "hparams": ["5"],
        "seeds": ["[-1]", '"x"', "[1.5]", "[]", "5"],
        "kind": ['"foo"', "5"],
        "base": ["3"],
        "base.model": ["1"],
        "base.model.seq_len": ["0", "-5", '"x"'],
        "base.train.lr": ["inf", "-1", "nan"],
        "base.foo.x": ["1"],
        "overrides": ["5", "[1]", "[{where = 1, set = {}}]", "[{where = {}, set = 1}]"],
        "nope": ["1"],
    }
    for key, values in iso.items():
        out += [("iso", ISO, key, v) for v in values]
    nxd = {
        "nxd.tokens": ["[inf]", "[0]", "[]", '"x"', "[-5]", "[1e300]"],
        "shapes.n_min": ["-1", "0", "inf", "nan", "1e9"],
        "shapes.n_max": ["-1", "inf", "nan", "1e3"],
        "hparams.batch_size": ["1e12"],
    }
    for key, values in nxd.items():
        out += [("nxd", NXD, key, v) for v in values]
    for v in ["0", "-1", "inf", "nan", '"x"', "1e300"]:
        out.append(("lad", LADDER, "ladder.tokens_per_param", v))
    return out


def _config_sets() -> list[tuple[str, str]]:
    return [
        (k, v)
        for k, vs in {
            "model.d_model": ["0", "-1", '"x"', "inf", "1.5"],
            "model.n_layers": ["0", "-2"],
            "model.n_heads": ["0", "3"],
            "model.n_kv_heads": ["-1", "3"],
            "model.vocab_size": ["0"],
            "model.seq_len": ["0", "-1"],
            "model.norm": ['"foo"'],
            "model.init_std": ["0", "inf", "nan"],
            "model.rope_theta": ["0", "inf", "nan", "-1"],
            "model.preset": ['"nope"'],
            "train.lr": ["0", "-1", "inf", "nan"],
            "train.steps": ["0", "-1", "1e30"],
            "train.batch_size": ["0", "-8"],
            "train.min_lr_ratio": ["2", "nan"],
            "train.warmup_steps": ["10", "1e9"],
            "train.grad_clip": ["-1", "nan", "inf"],
            "train.weight_decay": ["nan", "-1"],
            "train.b1": ["1", "-0.1", "nan"],
            "train.b2": ["2", "nan"],
            "train.eps": ["0", "nan", "-1"],
            "train.log_every": ["0"],
            "train.keep_checkpoints": ["0"],
            "train.seed": ["-1", "9223372036854775808"],
            "data.task_mix": ["1", "-1", "nan"],
            "data.val_tokens": ["0", "16"],
            "data.dataset": ['""'],
            "eval.n_items": ["0"],
            "eval.shots": ["[-1]", '"x"'],
            "mesh.data": ["0", "-2"],
            "mesh.tensor": ["3"],
            "nosuch.key": ["1"],
            "model.nosuch": ["1"],
        }.items()
        for v in vs
    ]


def cases() -> list[tuple[str, list[str], dict[str, bytes | str]]]:
    out: list[tuple[str, list[str], dict[str, bytes | str]]] = []
    for name, text, key, value in _grid_sets():
        argv = ["sweep", "plan", "{d}/g.toml", "--set", f"{key}={value}"]
        out.append((f"grid-{name}-{key}={value}", argv, {"g.toml": text}))
    files_grid = {
        "grid-non-utf8": b'name = "\xff\xfe"\nkind = "nxd"\n',
        "grid-bad-toml": "kind = [\n",
        "grid-empty": "",
        "grid-deep-nesting": "x = " + "[" * 5000 + "]" * 5000 + "\n",
        "grid-override-planned-key": NXD + '[[overrides]]\nset = {"train.steps" = 5}\n',
        "grid-override-model-key": NXD + '[[overrides]]\nset = {"model.d_model" = 5}\n',
        "grid-list-empty": NXD.replace("n_min = 3e3", 'rule = "list"\nlist = []'),
        "grid-list-bad-shape": NXD.replace(
            "n_min = 3e3", 'rule = "list"\nlist = [{d_model = 16, n_layers = 1, n_heads = 3}]'
        ),
        "grid-list-not-tables": NXD.replace("n_min = 3e3", 'rule = "list"\nlist = [1, 2]'),
        "grid-gpt3-bad-size": ISO.replace('rule = "aspect"', 'rule = "gpt3"\nsizes = ["gpt9"]'),
        "grid-gpt3-scale-0": ISO.replace('rule = "aspect"', 'rule = "gpt3"\nscale = 0'),
    }
    for cid, text in files_grid.items():
        out.append((cid, ["sweep", "plan", "{d}/g.toml"], {"g.toml": text}))
    out.append(("grid-missing", ["sweep", "plan", "{d}/nope.toml"], {}))
    out.append(("grid-is-directory", ["sweep", "plan", "{d}"], {}))
    out.append(
        ("grid-set-no-equals", ["sweep", "plan", "{d}/g.toml", "--set", "x"], {"g.toml": NXD})
    )

    for key, value in _config_sets():
        argv = ["train", "{d}/c.toml", "--set", f"{key}={value}", "--out", "{d}/run"]
        out.append((f"config-{key}={value}", argv, {"c.toml": CFG}))
    files_cfg = {
        "config-non-utf8": b"name = 'x'\n[model]\nd_model = 16 # \xff\n",
        "config-bad-toml": "[model\n",
        "config-unknown-section": CFG + "[nope]\nx = 1\n",
        "config-section-not-table": "model = 5\n",
        "config-name-not-string": CFG.replace('name = "c"', "name = [1, 2]"),
    }
    for cid, text in files_cfg.items():
        out.append((cid, ["train", "{d}/c.toml", "--out", "{d}/run"], {"c.toml": text}))
    out.append(("config-missing", ["train", "{d}/nope.toml"], {}))
    out.append(("config-set-no-equals", ["train", "{d}/c.toml", "--set", "x"], {"c.toml": CFG}))
    out.append(
        ("train-out-is-file", ["train", "{d}/c.toml", "--out", "{d}/c.toml"], {"c.toml": CFG})
    )
    out.append(
        ("train-from-step-negative", ["train", "{d}/c.toml", "--from-step", "-1"], {"c.toml": CFG})
    )
    out.append(
        (
            "train-restart-and-from-step",
            ["train", "{d}/c.toml", "--restart", "--from-step", "3"],
            {"c.toml": CFG},
        )
    )

    run = ["sweep", "run", "{d}/g.toml", "--out", "{d}/sw", "--train-fn", "sweeps.fake:fake_train"]
    for flag, value in [
        ("--lease-ttl", "0"),
        ("--lease-ttl", "-5"),
        ("--lease-ttl", "nan"),
        ("--lease-ttl", "inf"),
        ("--lease-ttl", "1e12"),
        ("--lease-ttl", "abc"),
        ("--max-runs", "-1"),
        ("--max-runs", "abc"),
        ("--max-runs", "1.5"),
        ("--backend", "cloud"),
        ("--nodes", "x"),
        ("--slurm-arg", "novalue"),
    ]:
        out.append((f"flag-sweep-run{flag}={value}", [*run, flag, value], {"g.toml": NXD}))
    out.append(("flag-sweep-run-out-is-file", [*run[:4], "{d}/g.toml", *run[5:]], {"g.toml": NXD}))
    out.append(("flag-sweep-status-missing", ["sweep", "status", "{d}/nope"], {}))
    out.append(("flag-sweep-status-not-sweep", ["sweep", "status", "{d}"], {}))
    out.append(("flag-unknown-command", ["frobnicate"], {}))
    out.append(("flag-unknown-option", ["sweep", "plan", "demo", "--frob"], {}))

    an = ["analyze", "--csv", "{d}/t.csv", *MAP, *FAST]
    for flag, value in [
        ("--level", "2"),
        ("--level", "0"),
        ("--level", "nan"),
        ("--resamples", "0"),
        ("--resamples", "-5"),
        ("--drop-highest", "-1"),
        ("--drop-highest", "6"),
        ("--method", "magic"),
        ("--n-kind", "x"),
        ("--seed", "x"),
        ("--holdout", "sometimes"),
        ("--holdout", "nan"),
        ("--holdout", "-1"),
    ]:
        out.append((f"flag-analyze{flag}={value}", [*an, flag, value], {"t.csv": CSV_OK}))
    out.append(("flag-analyze-out-is-file", [*an, "--out", "{d}/t.csv"], {"t.csv": CSV_OK}))
    out.append(
        ("flag-analyze-map-bad", ["analyze", "--csv", "{d}/t.csv", "--map", "N"], {"t.csv": CSV_OK})
    )
    out.append(
        (
            "flag-analyze-map-no-n",  # no --map N= and no column named N
            ["analyze", "--csv", "{d}/t.csv", "--map", "Q=size"],
            {"t.csv": CSV_OK.replace("N,D,loss", "size,D,loss", 1)},
        )
    )
    out.append(("flag-analyze-nothing", ["analyze"], {}))
    out.append(("flag-analyze-dir-missing", ["analyze", "{d}/nope"], {}))
    pr = ["predict", "--csv", "{d}/t.csv", *MAP, "--resamples", "10"]
    for flags in (
        ["--flops", "-1"],
        ["--flops", "nan"],
        ["--flops", "inf"],
        ["--flops", "0"],
        ["--params", "1e9"],
        ["--params", "-1", "--tokens", "1e9"],
        ["--params", "1e9", "--tokens", "nan"],
        ["--flops", "1e20", "--params", "1"],
        [],
    ):
        out.append(
            (f"flag-predict{'='.join(flags) or '-nothing'}", [*pr, *flags], {"t.csv": CSV_OK})
        )
    em = ["emergence", "--csv", "{d}/t.csv", "--map", "model=N", "--map", "compute=D"]
    for metric in (
        "x:chance=abc",
        "x:n=abc",
        "x:n=0",
        "x:n=1.5",
        "x:scale=0",
        "x:scale=-100",
        "x:chance=inf",
        "x:frob=1",
        ":chance=0.1",
    ):
        out.append(
            (f"flag-emergence-metric-{metric}", [*em, "--metric", metric], {"t.csv": CSV_OK})
        )

    big = "N,D,loss\n" + "1e6,2e7,3.0\n" * 1_000_000
    tables = {
        "table-non-utf8": b"N,D,loss\n1e6,2e7,3.\xff\n",
        "table-duplicate-column": "N,D,loss,loss\n"
        + "".join(f"{n:g},{20 * n:g},3.0,2.9\n" for n in (1e6, 2e6, 4e6, 8e6, 16e6, 32e6)),
        "table-missing-column": "N,loss\n1e6,3\n",
        "table-text-value": CSV_OK + "1e6,abc,3.0\n",
        "table-negative-N": CSV_OK + "-1e6,2e7,3.0\n",
        "table-zero-N": CSV_OK + "0,2e7,3.0\n",
        "table-zero-loss": CSV_OK + "1e6,2e7,0\n",
        "table-nan-loss": CSV_OK + "1e6,2e7,nan\n",
        "table-inf-D": CSV_OK + "1e6,inf,3.0\n",
        "table-empty": "",
        "table-header-only": "N,D,loss\n",
        "table-short-row": CSV_OK + "1e6\n",
        "table-1e6-rows": big,
        "table-too-few-rows": "N,D,loss\n1e6,2e7,3.0\n2e6,4e7,2.9\n",
    }
    for cid, text in tables.items():
        out.append((cid, ["analyze", "--csv", "{d}/t.csv", *MAP, *FAST], {"t.csv": text}))
    results = {
        "results-all-diverged": _rec(status="diverged", final_val_loss=None),
        "results-non-utf8-only": b"\xff\xfe\n",
        "results-string-N": _rec(N_total="big"),
        "results-missing-loss": _rec(final_val_loss=None),
        "results-negative-loss": "".join(
            _rec(run_id=str(i), final_val_loss=-1.0) for i in range(6)
        ),
        "results-not-objects": "[1, 2]\n3\n",
        "results-empty": "",
    }
    for cid, text in results.items():
        out.append((cid, ["analyze", "{d}", *FAST], {"results.jsonl": text}))
    out.append(("emergence-table-non-utf8", [*em, "--metric", "x"], {"t.csv": b"\xff,x\n1,2\n"}))
    return out


CASES = cases()
