"""Checks of a resolved run config: `validate` (static, no devices needed: one function per
section) and `validate_mesh` (against the visible device count). Each problem raises `UserError`
naming the field and the fix. Re-exported by scaling.config. Never imports JAX.
"""

from __future__ import annotations

import math
import re

from scaling.errors import UserError
from scaling.fileio import warn
from scaling.runconfig import (
    CHOICES,
    DataConfig,
    EvalConfig,
    MeshConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)


def validate(cfg: RunConfig) -> None:
    """Static checks (no devices needed). `validate_mesh` checks against the device count."""
    _check_model(cfg.model)
    _check_train(cfg.train)
    _check_data(cfg.data, cfg.model, cfg.eval)
    _check_eval_and_mesh(cfg.eval, cfg.mesh, cfg.model)
    _check_batch_split(cfg.mesh, cfg.train)


def ignored_settings(cfg: RunConfig) -> list[str]:
    """Settings that pass `validate` but do nothing, one line each. Not errors: a stored
    config holding one (a finished run's config.toml, a sweep's plan) must still load."""
    m, out = cfg.model, []
    if m.param == "sp" and m.base_width:
        out.append(
            f'model.base_width = {m.base_width} does nothing with model.param = "sp" (only muP '
            f'reads it) but changes the run id; drop it, or set model.param = "mup"'
        )
    if cfg.eval.every and not cfg.eval.enabled:
        out.append(
            f"eval.every = {cfg.eval.every} does nothing with eval.enabled = false (no few-shot "
            f"evals run) but changes the run id; drop it, or set eval.enabled = true"
        )
    return out


def warn_ignored(cfg: RunConfig) -> None:
    """`ignored_settings` as `warning:` lines on stderr, where a config is loaded for a new run
    (`scaling train`, the benchmark, a sweep's planning)."""
    for line in ignored_settings(cfg):
        warn(line)


def _check_model(m: ModelConfig) -> None:
    for name in ("d_model", "n_layers", "n_heads", "vocab_size", "seq_len"):
        if getattr(m, name) <= 0:
            raise UserError(f"model.{name} = {getattr(m, name)}: must be a positive integer")
    for name in ("d_ff", "n_kv_heads"):
        if getattr(m, name) < 0:
            raise UserError(
                f"model.{name} = {getattr(m, name)}: must be >= 0 (0 means the default)"
            )
    if m.d_model % m.n_heads:
        raise UserError(
            f"model.n_heads = {m.n_heads} does not divide model.d_model = {m.d_model}; "
            f"pick n_heads from the divisors of d_model"
        )
    if m.head_dim % 2 and m.pos == "rope":
        raise UserError(
            f"model.d_model / model.n_heads = {m.head_dim} is odd; RoPE needs an even head dim: "
            f'choose n_heads so that d_model / n_heads is even, or set model.pos = "learned"'
        )
    if m.n_heads % m.kv_heads:
        raise UserError(
            f"model.n_kv_heads = {m.n_kv_heads} does not divide model.n_heads = {m.n_heads}"
        )
    for name, choices in CHOICES.items():
        if getattr(m, name) not in choices:
            raise UserError(f"model.{name} = {getattr(m, name)!r}: choose one of {choices}")
    if m.init_std <= 0:
        raise UserError(f"model.init_std = {m.init_std}: must be > 0")
    if m.base_width < 0 or (m.param == "mup" and m.base_width == 0):
        raise UserError(
            f"model.base_width = {m.base_width}: muP needs the positive d_model at which the "
            f"hyperparameters were tuned, e.g. model.base_width = 64"
        )
    if not m.rope_theta > 0:
        raise UserError(f"model.rope_theta = {m.rope_theta}: must be > 0")


def _check_train(t: TrainConfig) -> None:
    if not t.grad_clip > 0:
        raise UserError(f"train.grad_clip = {t.grad_clip}: must be > 0 (the global-norm cap)")
    if t.weight_decay < 0:
        raise UserError(f"train.weight_decay = {t.weight_decay}: must be >= 0")
    for name in ("b1", "b2"):
        if not 0 <= getattr(t, name) < 1:
            raise UserError(f"train.{name} = {getattr(t, name)}: must be in [0, 1)")
    if not t.eps > 0:
        raise UserError(f"train.eps = {t.eps}: must be > 0")
    if not 0 <= t.seed < 2**63:  # jax.random.key takes a signed 64-bit integer
        raise UserError(f"train.seed = {t.seed}: must be an integer >= 0 and < 2^63")
    if t.steps <= 0:
        raise UserError(f"train.steps = {t.steps}: must be a positive integer")
    if t.batch_size <= 0:
        raise UserError(f"train.batch_size = {t.batch_size}: must be a positive integer")
    if not t.lr > 0:
        raise UserError(f"train.lr = {t.lr}: must be > 0")
    if not 0 <= t.min_lr_ratio <= 1:
        raise UserError(f"train.min_lr_ratio = {t.min_lr_ratio}: must be in [0, 1]")
    if t.warmup_steps < -1:  # -5 ran as -1 (automatic) under another run id
        raise UserError(
            f"train.warmup_steps = {t.warmup_steps}: give a step count >= 0, or -1 for "
            f"automatic (min(steps // 10, 1000))"
        )
    if t.warmup_steps > max(t.steps - 2, 0):  # the last update must be past the warmup
        raise UserError(
            f"train.warmup_steps = {t.warmup_steps} must be <= train.steps - 2 = "
            f"{max(t.steps - 2, 0)}, so that the cosine reaches min_lr_ratio at the last step "
            f"(or -1 for automatic)"
        )
    for name in ("eval_every", "checkpoint_every"):
        if getattr(t, name) < 0:
            raise UserError(f"train.{name} = {getattr(t, name)}: must be >= 0 (0: automatic)")
    if t.validations < 1:
        raise UserError(
            f"train.validations = {t.validations}: must be >= 1 (validations per run when "
            f"eval_every = 0; the last step always validates)"
        )
    if t.log_every < 1:
        raise UserError(f"train.log_every = {t.log_every}: must be >= 1 (steps per metrics line)")
    if t.keep_checkpoints < 1:
        raise UserError(f"train.keep_checkpoints = {t.keep_checkpoints}: must be >= 1")
    if t.steps_per_dispatch < 0:
        raise UserError(
            f"train.steps_per_dispatch = {t.steps_per_dispatch}: must be >= 0 "
            f"(0: automatic, n: n updates per compiled call)"
        )


def _check_data(d: DataConfig, m: ModelConfig, e: EvalConfig) -> None:
    if not 0 <= d.task_mix < 1:
        raise UserError(f"data.task_mix = {d.task_mix}: must be in [0, 1)")
    if d.val_tokens <= m.seq_len:
        raise UserError(f"data.val_tokens = {d.val_tokens}: must exceed model.seq_len")
    if not d.dataset:
        raise UserError("data.dataset is empty: use python_source or a TFDS dataset name")
    if d.dataset == "text_files" and not d.paths:
        raise UserError('data.dataset = "text_files" needs data.paths, e.g. ["corpus/**/*.txt"]')
    if d.paths and d.dataset != "text_files":
        raise UserError(
            f'data.paths is read only with data.dataset = "text_files" (now {d.dataset!r}); '
            f"set the dataset or drop data.paths"
        )
    if d.tokenizer and e.enabled:
        raise UserError(
            f"data.tokenizer = {d.tokenizer!r}: the few-shot evals still encode with the byte "
            f"tokenizer; set eval.enabled = false for a SentencePiece run"
        )
    if any(not isinstance(p, str) or not p for p in d.paths):
        raise UserError(f"data.paths = {list(d.paths)!r}: give non-empty glob strings")
    check_disjoint_splits(d.train_split, d.val_split)


def _check_eval(e: EvalConfig) -> None:
    """Each eval field names its bad value and the fix (a negative eval.seed was a numpy
    traceback from the item sampler; a negative eval.every was accepted and meant 0)."""
    if bad := [k for k in e.shots if k < 0]:
        raise UserError(f"eval.shots = {list(e.shots)}: shot counts must be >= 0, not {bad[0]}")
    if e.enabled and not e.shots:  # evals ran and scored nothing: an empty `evals` block
        raise UserError(
            "eval.shots = []: no few-shot eval would run; give shot counts, e.g. eval.shots = "
            "[0, 1, 4], or set eval.enabled = false"
        )
    for name, items in (("shots", e.shots), ("tasks", e.tasks)):
        if dup := sorted({x for x in items if items.count(x) > 1}):
            raise UserError(  # each repeat was scored again and moved the run id
                f"eval.{name} = {list(items)!r}: {dup[0]!r} is listed twice; list each once, "
                f"e.g. eval.{name} = {list(dict.fromkeys(items))!r}"
            )
    if e.n_items <= 0:
        raise UserError(f"eval.n_items = {e.n_items}: give the number of test items, >= 1")
    if e.seed < 0:  # numpy seeds the item draws with non-negative integers only
        raise UserError(f"eval.seed = {e.seed}: must be an integer >= 0")
    if e.every < 0:
        raise UserError(
            f"eval.every = {e.every}: give a step interval >= 1, or 0 for no evals "
            "during training (the final evaluation always runs)"
        )


def _check_eval_and_mesh(e: EvalConfig, mesh: MeshConfig, m: ModelConfig) -> None:
    _check_eval(e)
    sizes = [mesh.data, mesh.fsdp, mesh.tensor]
    if sum(s == -1 for s in sizes) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise UserError(
            f"mesh = (data={sizes[0]}, fsdp={sizes[1]}, tensor={sizes[2]}): sizes must be "
            f"positive, with at most one -1 (fill with the remaining devices)"
        )
    if mesh.tensor > 0 and (m.n_heads % mesh.tensor or m.kv_heads % mesh.tensor):
        raise UserError(
            f"mesh.tensor = {mesh.tensor} must divide model.n_heads = {m.n_heads} "
            f"and the kv heads = {m.kv_heads}"
        )


def _check_batch_split(mesh: MeshConfig, t: TrainConfig) -> None:
    """The batch is split over data x fsdp; the sizes of those that are fixed (not -1) are known
    without devices and must divide it: checked here, so that `scaling sweep plan` refuses a
    grid whose runs would all stop at startup (`validate_mesh` checks the resolved sizes)."""
    fixed = {name: size for name, size in (("data", mesh.data), ("fsdp", mesh.fsdp)) if size > 0}
    n = math.prod(fixed.values())
    if t.batch_size % n:
        sizes = " x ".join(f"mesh.{name}" for name in fixed)
        raise UserError(
            f"train.batch_size = {t.batch_size} is not divisible by {sizes} = "
            f"{' x '.join(map(str, fixed.values()))}"
            + (f" = {n}" if len(fixed) > 1 else "")
            + f" (the batch is split over data x fsdp); use a multiple of {n}"
        )


def resolve_mesh(mesh: MeshConfig, n_devices: int) -> tuple[int, int, int]:
    """Concrete (data, fsdp, tensor) for `n_devices`, or UserError saying what does not fit."""
    sizes = [mesh.data, mesh.fsdp, mesh.tensor]
    fixed = 1
    for s in sizes:
        if s != -1:
            fixed *= s
    if -1 in sizes:
        if n_devices % fixed:
            raise UserError(
                f"mesh (data={mesh.data}, fsdp={mesh.fsdp}, tensor={mesh.tensor}) needs a "
                f"multiple of {fixed} devices, but {n_devices} are visible; change the mesh sizes"
            )
        sizes[sizes.index(-1)] = n_devices // fixed
    elif fixed != n_devices:
        raise UserError(
            f"mesh (data={mesh.data}, fsdp={mesh.fsdp}, tensor={mesh.tensor}) uses {fixed} "
            f"devices, but {n_devices} are visible; set one size to -1 or match the device count"
        )
    return sizes[0], sizes[1], sizes[2]


def validate_mesh(cfg: RunConfig, n_devices: int) -> tuple[int, int, int]:
    """Mesh sizes for this run, checking the batch divides the data-parallel size."""
    data, fsdp, tensor = resolve_mesh(cfg.mesh, n_devices)
    if cfg.train.batch_size % (data * fsdp):
        raise UserError(
            f"train.batch_size = {cfg.train.batch_size} is not divisible by the data-parallel "
            f"size data x fsdp = {data * fsdp}; use a multiple of {data * fsdp}"
        )
    if cfg.mesh.tensor == -1 and (cfg.model.n_heads % tensor or cfg.model.kv_heads % tensor):
        raise UserError(
            f"mesh.tensor = -1 resolves to {tensor} ({n_devices} devices / data {data} x fsdp "
            f"{fsdp}), which does not divide model.n_heads = {cfg.model.n_heads} and the kv heads "
            f"= {cfg.model.kv_heads}; set mesh.tensor to a divisor of both and data or fsdp to -1"
        )
    return data, fsdp, tensor


_SLICE = re.compile(r"^([^\[\]+]+)(?:\[(-?\d*\.?\d*)(%?):(-?\d*\.?\d*)(%?)\])?$")


def check_disjoint_splits(train: str, val: str) -> None:
    """UserError unless validation is held out from training: different splits, or disjoint
    slices of one (`train[:99%]` and `train[99%:]`), part by part for a union (`a+b`). A slice
    of the split trained on whole (or overlapping slices) would validate on trained tokens."""
    for t in train.split("+"):
        for v in val.split("+"):
            why, base = _overlap(t.strip(), v.strip())
            if why:
                raise UserError(
                    f"data.train_split = {train!r} and data.val_split = {val!r} {why}; pick a "
                    f"held-out split, or disjoint slices of one, e.g. data.train_split = "
                    f"'{base}[:99%]' and data.val_split = '{base}[99%:]'"
                )


def _overlap(train: str, val: str) -> tuple[str, str]:
    """(why they may overlap, the split's name), or ("", "") when they cannot."""
    mt, mv = _SLICE.match(train), _SLICE.match(val)
    if not (mt and mv) or mt.group(1).strip() != mv.group(1).strip():
        return "", ""  # different splits (or an expression this check does not read)
    base, rt, rv = mt.group(1).strip(), _range(mt), _range(mv)
    if _apart_in_examples(mt, mv):  # e.g. `train[:-1000]` and `train[-1000:]`
        return "", ""
    if rt is None or rv is None or ("*" not in (rt[0], rv[0]) and rt[0] != rv[0]):
        return (
            "slice one split in different units (or with negative indices), so their overlap "
            "cannot be checked",
            base,
        )
    if max(rt[1], rv[1]) < min(rt[2], rv[2]):
        return "overlap: validation tokens would be trained on", base
    return "", ""


def _range(m: re.Match) -> tuple[str, float, float] | None:
    """(unit, lo, hi) of a slice: in percent ("%", 100 = the whole split) or in examples ("",
    open-ended above); the whole split is ("*", 0, inf), which overlaps anything. None for
    negative example indices, whose position needs the split's size."""
    lo, lo_pct, hi, hi_pct = m.group(2), m.group(3), m.group(4), m.group(5)
    if lo is None and hi is None:
        return ("*", 0.0, math.inf)
    units = {u for v, u in ((lo, lo_pct), (hi, hi_pct)) if v}
    if len(units) > 1:
        return None
    unit = units.pop() if units else "%"
    a, b = float(lo) if lo else 0.0, float(hi) if hi else (100.0 if unit else math.inf)
    if unit == "%":
        a, b = (a + 100.0 if a < 0 else a), (b + 100.0 if b < 0 else b)
    elif a < 0 or b < 0:
        return None
    return (unit, a, b)


def _apart_in_examples(mt: re.Match, mv: re.Match) -> bool:
    """Whether two example slices are disjoint whatever the split's size: each bound is a
    position from the start (>= 0) or from the end (< 0), and one bound is known to lie at or
    before another when both count from the same end (or one is the split's start or end)."""
    if mt.group(3) or mt.group(5) or mv.group(3) or mv.group(5) or None in (mt[2], mv[2]):
        return False  # a percent bound, or a whole split (which overlaps anything)

    def bounds(m: re.Match) -> tuple[tuple[int, float], tuple[int, float]]:
        def pos(v: str, open_at: tuple[int, float]) -> tuple[int, float]:
            return open_at if not v else (1, float(v)) if float(v) < 0 else (0, float(v))

        return pos(m.group(2), (0, 0.0)), pos(m.group(4), (1, 0.0))

    def at_or_before(a: tuple[int, float], b: tuple[int, float]) -> bool:
        return a == (0, 0.0) or b == (1, 0.0) or (a[0] == b[0] and a[1] <= b[1])

    (lt, ht), (lv, hv) = bounds(mt), bounds(mv)
    return at_or_before(ht, lv) or at_or_before(hv, lt)
