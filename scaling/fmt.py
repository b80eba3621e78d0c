"""The one formatter of a value with its interval, as every report and console line shows it."""

from __future__ import annotations


def with_ci(d: dict, spec: str = ".4g", gap: str = " ") -> str:
    """`estimate [lo, hi]` of a {"estimate", "lo", "hi"} dict, each formatted with `spec`
    (`.4g`, `.2%`, `+.3f`, ...)."""
    return f"{d['estimate']:{spec}}{gap}[{d['lo']:{spec}}, {d['hi']:{spec}}]"
