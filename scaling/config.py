"""Typed, frozen run configuration: TOML in, validated dataclasses out.

A run is a pure function of its resolved `RunConfig`; `config_hash` names it. Loading goes
TOML file -> dotted `--set` overrides -> model preset expansion -> dataclasses -> validation.
Every problem raises `UserError` naming the field and the fix. This module never imports JAX.

The concerns live in their own modules and every name is importable from here
(`from scaling import config as C; C.load(...)`): the dataclasses and presets in
scaling.runconfig, the checks in scaling.validation, the one `--set` parser in scaling.overrides;
this module reads TOML, applies overrides, builds the dataclasses and names runs.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import json
import math
import re
import tomllib
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from scaling import overrides as _overrides
from scaling.errors import UserError
from scaling.overrides import parse_value
from scaling.runconfig import (
    BYTE_VOCAB,
    CHOICES,
    PRESETS,
    SECTIONS,
    DataConfig,
    EvalConfig,
    MeshConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from scaling.validation import (
    ignored_settings,
    resolve_mesh,
    validate,
    validate_mesh,
    warn_ignored,
)

__all__ = [
    "BYTE_VOCAB",
    "CHOICES",
    "CONFIG_DIR",
    "PRESETS",
    "SECTIONS",
    "DataConfig",
    "EvalConfig",
    "MeshConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "check_section",
    "config_hash",
    "from_dict",
    "ignored_settings",
    "load",
    "parse_value",
    "read_toml",
    "resolve_config_path",
    "resolve_mesh",
    "resolve_toml",
    "slug",
    "to_toml",
    "validate",
    "validate_mesh",
    "warn_ignored",
]

CONFIG_DIR = Path(__file__).parent / "configs"


# ----------------------------------------------------------------------------- loading


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `section.key=value` strings to a nested dict (returns a new dict)."""
    out = copy.deepcopy(raw)  # not a JSON round trip: a TOML date (`name = 2024-01-01`) is no JSON
    _overrides.apply(
        out, overrides, "section.key=value", "model.d_model=128", "the config", _check_key
    )
    return out


def _check_key(item: str, parts: list[str]) -> None:
    """A run config's `--set` key is `name` or `section.field` of a known section."""
    if parts != ["name"] and (len(parts) != 2 or parts[0] not in SECTIONS):
        raise UserError(
            f"--set {item!r}: unknown key {'.'.join(parts)!r}; use one of "
            f"{', '.join(s + '.<field>' for s in SECTIONS)} or name"
        )


def _build(cls: type, section: str, values: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserError(
            f"[{section}] unknown field {unknown[0]!r}; valid fields: {', '.join(sorted(known))}"
        )
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        default, name = getattr(cls(), key), f"{section}.{key}"
        if isinstance(default, tuple):
            kwargs[key] = _coerce_list(name, value, typing.get_args(hints[key])[0])
        else:
            kwargs[key] = _coerce(name, value, default)
    return cls(**kwargs)


def _coerce_list(name: str, value: Any, kind: type) -> tuple[Any, ...]:
    """A list field as a tuple whose every item is of the field's item type (`eval.shots =
    ["a"]` was a TypeError traceback, `[1.5]` a fractional shot count). A `--set` list of
    unquoted strings (`[corpus/*.txt]`, not TOML) is told to quote them."""
    example = "[0, 1, 4]" if kind is int else '["a.txt", "b.jsonl"]'
    if isinstance(value, str) and value.strip().startswith("["):
        items = [i.strip().strip("\"'") for i in value.strip().strip("[]").split(",")]
        quoted = ", ".join(f'"{i}"' for i in items if i)
        raise UserError(
            f"{name} = {value!r} is not a TOML list: quote each string, e.g. "
            f"--set '{name}=[{quoted}]'"
        )
    if not isinstance(value, list | tuple):
        if isinstance(value, str if kind is str else int) and not isinstance(value, bool):
            example = f'["{value}"]' if kind is str else f"[{value}]"  # the one item, as a list
        raise UserError(f"{name} = {value!r}: expected a list, e.g. {example}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, kind):
            raise UserError(
                f"{name} = {list(value)!r}: {item!r} is not valid; give a list of "
                f"{'integers' if kind is int else 'strings'}, e.g. {example}"
            )
    return tuple(value)


def _shown(value: Any) -> str:
    """A value as the message shows it: a TOML date or time as written (`2024-01-01`), not as
    `datetime.date(2024, 1, 1)`; anything else as its repr."""
    if isinstance(value, datetime.date | datetime.time):
        return f"{value.isoformat()} (a TOML date/time)"
    return repr(value)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Check a TOML value against the type of the field's default (ints widen to floats)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserError(f"{name} = {_shown(value)}: expected true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{name} = {_shown(value)}: expected an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{name} = {_shown(value)}: expected a number")
        if not math.isfinite(value):
            raise UserError(f"{name} = {_shown(value)}: expected a finite number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise UserError(f'{name} = {_shown(value)}: expected a string, quoted: "{value}"')
        return value
    return value


def check_section(section: str, values: dict[str, Any]) -> Any:
    """One section's dataclass from its fields (`preset` left out), or UserError for an unknown
    field or a wrong type. No cross-field checks: a grid's [base.model] is completed by each
    shape before it is validated."""
    if section not in SECTIONS:
        raise UserError(f"unknown config section [{section}]; valid: {', '.join(SECTIONS)}")
    return _build(SECTIONS[section], section, {k: v for k, v in values.items() if k != "preset"})


def from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig from a nested dict (TOML layout)."""
    for section in SECTIONS:
        if not isinstance(raw.get(section, {}), dict):
            raise UserError(f"[{section}] = {raw[section]!r}: expected a table of fields")
    unknown = sorted(set(raw) - set(SECTIONS) - {"name"})
    if unknown:
        key = unknown[0]
        if not isinstance(raw[key], dict):  # a top-level key (`nmae = "x"`), not a table
            raise UserError(
                f"unknown top-level key {key!r}; above the tables a config holds only `name` "
                f'(e.g. name = "my-run"); put fields under [{"], [".join(SECTIONS)}]'
            )
        grid = " (a sweep grid's table: run a grid with `scaling sweep plan`/`sweep run`)"
        raise UserError(
            f"unknown config section [{key}]; valid sections: {', '.join(SECTIONS)}"
            + (grid if key == "base" else "")
        )
    model_raw = dict(raw.get("model", {}))
    preset = model_raw.get("preset", "")
    if preset:
        if preset not in PRESETS:
            raise UserError(
                f"model.preset = {preset!r} is not a known preset; choose one of "
                f"{', '.join(PRESETS)}"
            )
        base = dict(PRESETS[preset])
        if (
            "d_model" in model_raw
            and "d_ff" not in model_raw
            and base.get("d_ff") == 4 * base.get("d_model", 0)
        ):  # the preset's MLP is 4x its width: keep it 4x of a width you set (d_ff 0 = 4x)
            base["d_ff"] = 0
        model_raw = {**base, **model_raw}
    sections = {
        name: _build(cls, name, model_raw if name == "model" else dict(raw.get(name, {})))
        for name, cls in SECTIONS.items()
    }
    name = raw.get("name", "run")
    if not isinstance(name, str) or not name.strip():
        raise UserError(
            f'name = {_shown(name)}: expected a non-empty string, quoted, e.g. name = "my-run"'
        )
    cfg = RunConfig(name=name, **sections)
    validate(cfg)
    return cfg


def resolve_toml(path_or_name: str | Path, builtin_dir: Path, what: str) -> Path:
    """A TOML path, or the name of a built-in file in `builtin_dir` (e.g. `tiny`, `demo`)."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    builtin = builtin_dir / f"{path_or_name}.toml"
    if builtin.is_file():
        return builtin
    names = ", ".join(sorted(p.stem for p in builtin_dir.glob("*.toml")))
    if path.is_dir():  # e.g. a sweep directory where the grid goes
        raise UserError(
            f"{what} {str(path_or_name)!r} is a directory, not a TOML file: give a TOML path or "
            f"one of: {names}"
        )
    raise UserError(f"{what} {str(path_or_name)!r} not found: give a TOML path or one of: {names}")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error becomes a UserError naming the file and line."""
    from scaling.fileio import read_text  # noqa: PLC0415

    text = read_text(path, f"save {path.name} as UTF-8 text")
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be a config; fix the file") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML ({e}); fix the syntax at that line") from e


def resolve_config_path(path_or_name: str | Path) -> Path:
    """A TOML path, or the name of a built-in config in scaling/configs (e.g. `tiny`)."""
    return resolve_toml(path_or_name, CONFIG_DIR, "config")


def load(path_or_name: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    raw = read_toml(resolve_config_path(path_or_name))
    return from_dict(apply_overrides(raw, overrides))


# Fields added after run ids were first published: left out of the hash while they hold their
# default, so the ids of existing configs (and finished sweeps) do not move.
_HASH_OMIT_AT_DEFAULT = {"data": ("paths", "tokenizer"), "model": ("param", "base_width")}
# Fields that never change a run's results (how it is executed, not what it computes; how many
# validations a run makes changes its loss curve's resolution, not the model or its final loss).
_HASH_OMIT_ALWAYS = {"train": ("steps_per_dispatch", "validations")}


def config_hash(cfg: RunConfig, length: int = 12) -> str:
    """Stable id of a resolved config: sha256 of its canonical JSON, hex-truncated."""
    raw = cfg.to_dict()
    for section, keys in _HASH_OMIT_AT_DEFAULT.items():
        default = SECTIONS[section]()
        for key in keys:
            if raw[section][key] == dataclasses.asdict(default)[key]:
                del raw[section][key]
    for section, keys in _HASH_OMIT_ALWAYS.items():
        for key in keys:
            raw[section].pop(key, None)
    blob = json.dumps(raw, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def to_toml(cfg: RunConfig) -> str:
    """Serialise a config back to TOML (each run's resolved config.toml), with a real TOML writer:
    any name or string round-trips, quotes and backslashes included."""
    import tomli_w  # noqa: PLC0415 - only where a run directory is written

    return tomli_w.dumps({"name": cfg.name, **{s: cfg.to_dict()[s] for s in SECTIONS}})


def slug(name: str, max_len: int = 64) -> str:
    """A safe directory name for a run name: letters, digits, `.`, `_`, `-` only; no leading
    dot, no path separators, never empty (`../../x"q` -> `x-q`)."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-_")
    return out[:max_len].rstrip(".-_") or "run"
