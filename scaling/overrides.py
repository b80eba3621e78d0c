"""The one `--set KEY=VALUE` parser, shared by run configs (scaling.config) and sweep grids
(sweeps.grid): a dotted key, and a value read as TOML (else the raw string). No JAX.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from typing import Any

from scaling.errors import UserError


def parse_value(text: str) -> Any:
    """A `--set` value as TOML (`128`, `3e-4`, `true`, `[0, 1]`, `"x"`), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(item: str, form: str, example: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], parsed value), or UserError naming the expected `form`
    (e.g. "section.key=value") and an `example` when the `=` or a key part is missing."""
    key, sep, value = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise UserError(f"--set {item!r}: expected {form}, e.g. {example}")
    return parts, parse_value(value.strip())


def set_dotted(tree: dict[str, Any], item: str, parts: list[str], value: Any, what: str) -> None:
    """Put `value` at the dotted path `parts` of a nested dict, creating missing tables; a part
    that names a non-table value of `what` (e.g. "the grid") is a UserError."""
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {item!r}: {part!r} is not a table in {what}")
    node[parts[-1]] = value


def apply(
    tree: dict[str, Any],
    overrides: list[str] | tuple[str, ...],
    form: str,
    example: str,
    what: str,
    check: Callable[[str, list[str]], None] | None = None,
) -> None:
    """Apply every `--set` item to the nested dict `tree` in place, in order (later items win).
    `check(item, parts)` may reject a key (a UserError) before it is set."""
    for item in overrides:
        parts, value = parse_override(item, form, example)
        if check is not None:
            check(item, parts)
        set_dotted(tree, item, parts, value, what)
